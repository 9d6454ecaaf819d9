"""A real W&B offline run folder and real TensorBoard event files."""


import pytest

from align.tracking import Tracker, resolve_wandb_mode


def test_wandb_offline_run_is_a_real_syncable_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = Tracker("wandb", tmp_path, "myrun", "sft", config={"lr": 0.1})
    assert tracker.report_to == ["wandb"]
    tracker.log({"train/loss": 1.5}, step=1)
    tracker.log_table("samples", ["prompt", "response"], [["a", "b"]])
    tracker.finish({"gold/score_mean": 0.5})
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = [p.name for p in runs[0].iterdir()]
    assert any(name.endswith(".wandb") for name in files), files  # the file `wandb sync` uploads


def test_tensorboard_writes_event_files(tmp_path):
    tracker = Tracker("tensorboard", tmp_path, "r", "sft")
    tracker.log({"train/loss": 1.0}, step=0)
    tracker.finish({"eval/loss": 0.5})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    with pytest.raises(ValueError):
        resolve_wandb_mode("sometimes")
    with pytest.raises(ValueError):
        Tracker("mlflow", tmp_path, "r", "s")
