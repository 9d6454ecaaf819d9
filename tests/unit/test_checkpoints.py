"""Resume identity (align.checkpoints): the same run only, the newest complete checkpoint only."""

from __future__ import annotations

import json

import pytest

from align.checkpoints import MARKER, read_marker, start_run, training_config
from align.errors import CheckpointError

CONFIG = {"seed": 0, "trainer": {"learning_rate": 1e-3, "save_steps": 2}, "logger": {"backend": "none"}, "resume": False}


def _checkpoint(run, root, step, payload=b"weights", mark=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(payload * step)
    (folder / "sub").mkdir()
    (folder / "sub" / "state.json").write_text("{}")
    if mark:
        run.write_marker(folder, step, {"loss_sum": float(step)})
    return folder


def test_training_config_leaves_out_logging_paths_resume_and_checkpoint_cadence():
    flat = training_config(CONFIG)
    assert flat == {"seed": 0, "trainer.learning_rate": 1e-3}


def test_resume_takes_the_newest_complete_checkpoint_and_says_which_it_skipped(tmp_path):
    run = start_run("sft", CONFIG, tmp_path, "checkpoint-", resume=False)
    _checkpoint(run, tmp_path, 2)
    _checkpoint(run, tmp_path, 4)
    _checkpoint(run, tmp_path, 6, mark=False)  # killed while it was written: no marker
    truncated = _checkpoint(run, tmp_path, 8)
    (truncated / "model.safetensors").write_bytes(b"w")  # shorter than the marker says
    missing = _checkpoint(run, tmp_path, 10)
    (missing / "sub" / "state.json").unlink()

    resumed = start_run("sft", {**CONFIG, "resume": True}, tmp_path, "checkpoint-", resume=True)
    assert resumed.resumed_from == tmp_path / "checkpoint-4"
    assert resumed.run_id == run.run_id and resumed.step == 4 and resumed.extra == {"loss_sum": 4.0}
    reasons = dict(resumed.skipped)
    assert list(reasons) == ["checkpoint-10", "checkpoint-8", "checkpoint-6"]
    assert "state.json is missing" in reasons["checkpoint-10"]
    assert "truncated" in reasons["checkpoint-8"]
    assert MARKER in reasons["checkpoint-6"]
    assert resumed.metrics()["resume/skipped_checkpoints"] == 3


def test_another_runs_checkpoint_is_refused_with_the_keys_unless_allowed(tmp_path):
    run = start_run("sft", CONFIG, tmp_path, "checkpoint-", resume=False)
    _checkpoint(run, tmp_path, 4)
    other = {**CONFIG, "seed": 1, "trainer": {"learning_rate": 5e-4, "save_steps": 9}}
    with pytest.raises(CheckpointError, match=r"seed: 0 -> 1.*trainer\.learning_rate: 0\.001 -> 0\.0005") as e:
        start_run("sft", other, tmp_path, "checkpoint-", resume=True)
    assert "resume_allow=[seed,trainer.learning_rate]" in str(e.value)
    accepted = start_run("sft", other, tmp_path, "checkpoint-", resume=True, allow=["seed", "trainer.*"])
    assert accepted.resumed_from is not None and set(accepted.accepted) == {"seed", "trainer.learning_rate"}
    assert accepted.metrics()["resume/accepted_changes"] == "seed,trainer.learning_rate"
    accepted.write_marker(tmp_path / "checkpoint-4", 4)
    assert read_marker(tmp_path / "checkpoint-4")["accepted_changes"]["seed"] == [0, 1]


def test_a_fresh_run_removes_an_earlier_runs_checkpoints_and_gets_a_new_id(tmp_path):
    old = start_run("sft", CONFIG, tmp_path, "checkpoint-", resume=False)
    _checkpoint(old, tmp_path, 8)
    (tmp_path / ".tmp_checkpoint-9").mkdir()
    (tmp_path / "README.md").write_text("not a checkpoint")
    new = start_run("sft", CONFIG, tmp_path, "checkpoint-", resume=False)
    assert new.run_id != old.run_id and new.resumed_from is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_a_non_main_process_never_deletes(tmp_path):
    old = start_run("sft", CONFIG, tmp_path, "checkpoint-", resume=False)
    _checkpoint(old, tmp_path, 8)
    start_run("sft", CONFIG, tmp_path, "checkpoint-", resume=False, main_process=False)
    assert (tmp_path / "checkpoint-8").is_dir()


def test_resume_without_any_complete_checkpoint_starts_fresh(tmp_path):
    run = start_run("sft", CONFIG, tmp_path, "checkpoint-", resume=False)
    _checkpoint(run, tmp_path, 2, mark=False)
    fresh = start_run("sft", CONFIG, tmp_path, "checkpoint-", resume=True)
    assert fresh.resumed_from is None and fresh.step == 0 and [n for n, _ in fresh.skipped] == ["checkpoint-2"]


def test_an_unreadable_marker_is_an_incomplete_checkpoint(tmp_path):
    run = start_run("sft", CONFIG, tmp_path, "checkpoint-", resume=False)
    folder = _checkpoint(run, tmp_path, 2)
    (folder / MARKER).write_text(json.dumps({"run_id": "x"}))  # no files / config
    with pytest.raises(CheckpointError, match="unreadable marker"):
        read_marker(folder)
