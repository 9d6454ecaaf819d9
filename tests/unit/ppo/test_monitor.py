"""PPO's history.jsonl: the one checked reader (the PPO stage and eval both read it)."""

import json

import pytest

from align.ppo.monitor import HISTORY_FILE, read_history, truncate_history


def test_read_history_sorts_by_iteration_and_names_a_bad_line(tmp_path):
    path = tmp_path / HISTORY_FILE
    path.write_text(json.dumps({"iteration": 2, "ppo/kl_ref": 1.0}) + "\n\n" + json.dumps({"iteration": 1}) + "\n")
    assert [r["iteration"] for r in read_history(path)] == [1, 2]
    assert [r["iteration"] for r in read_history(tmp_path)] == [1, 2]  # the stage folder works too
    assert [r["iteration"] for r in read_history(tmp_path, up_to_iteration=1)] == [1]
    path.write_text('{"iteration": 1}\nnot json\n')
    with pytest.raises(ValueError, match="history.jsonl:2"):
        read_history(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="expected a JSON object"):
        read_history(path)


def test_missing_history_is_empty_and_truncate_drops_later_rows(tmp_path):
    assert read_history(tmp_path) == []
    (tmp_path / HISTORY_FILE).write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (0, 2, 4)))
    truncate_history(tmp_path, 2)
    assert [r["iteration"] for r in read_history(tmp_path)] == [0, 2]
