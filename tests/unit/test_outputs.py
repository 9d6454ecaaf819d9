import json

import pytest

from align.outputs import read_metrics, write_metrics


def test_metrics_are_flat_sorted_and_nan_becomes_null(tmp_path):
    write_metrics(tmp_path, {"b/x": 1, "a/y": float("nan"), "c": "text"})
    text = (tmp_path / "metrics.json").read_text()
    assert list(json.loads(text)) == ["a/y", "b/x", "c"]
    assert read_metrics(tmp_path)["a/y"] is None


def test_nested_values_are_refused_and_old_file_survives(tmp_path):
    write_metrics(tmp_path, {"ok": 1})
    with pytest.raises(TypeError, match="flat"):
        write_metrics(tmp_path, {"bad": {"nested": 1}})
    assert read_metrics(tmp_path) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind
