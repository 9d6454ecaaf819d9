"""PPO checkpoints on disk (align/ppo/checkpoint.py): the pickle-free format round trip, the run's
marker last, rotation that keeps this run's newest checkpoint, damaged files, failed writes, and
the NaN guards of the local backend."""

from __future__ import annotations

import errno
import json

import pytest
import torch

import align.ppo.checkpoint as ckpt
from align.checkpoints import MARKER, read_marker, start_run
from align.errors import CheckpointError, NonFiniteError
from align.ppo.distributed import DataParallel
from align.ppo.models import PPOModels
from align.ppo.steps import lr_lambda, make_steps

CONFIG = {"seed": 1, "ppo": {"policy_lr": 0.1, "kl": {"init_kl_coef": 0.2}}}


def _models(seed: int) -> PPOModels:
    torch.manual_seed(seed)
    return PPOModels("full", torch.nn.Linear(3, 2), torch.nn.Linear(3, 1))


def _steps(models: PPOModels):
    return make_steps(models, DataParallel(), policy_lr=0.1, value_lr=0.2, eps=1e-5, weight_decay=0.0, max_grad_norm=1.0,
                      schedule=lr_lambda("linear", 10), micro=2, accumulation=1, precision="fp32",
                      device=torch.device("cpu"))


def _train_once(models: PPOModels, steps) -> None:
    x = torch.randn(4, 3)
    steps.backward("value", models.value(x).pow(2).mean())
    steps.backward("policy", models.policy(x).pow(2).mean())
    steps.micro_done()
    steps.minibatch_done(1)


def _run(tmp_path, resume=False, config=CONFIG):
    return start_run("ppo", config, tmp_path, ckpt.PREFIX, resume=resume)


def _save(tmp_path, models, steps, iteration, run, keep=2):
    steps.save_checkpoint(tmp_path, iteration, {"kl": {"value": 0.2}, "ptx_position": iteration}, keep, run)


def test_state_round_trips_through_json_and_safetensors_only():
    import random

    import numpy as np

    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    opt.zero_grad()
    sum(p.sum() for p in opt.param_groups[0]["params"]).backward()
    opt.step()
    state = {"opt": opt.state_dict(), "python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state(), "n": 3, "x": [1.5, None, "a"]}
    tensors: dict = {}
    data = json.loads(json.dumps(ckpt.encode(state, "s", tensors)))  # plain JSON in between
    back = ckpt.decode(data, tensors)
    assert back["python"] == state["python"] and back["n"] == 3 and back["x"] == [1.5, None, "a"]
    assert back["numpy"][0] == "MT19937" and (back["numpy"][1] == state["numpy"][1]).all()
    assert torch.equal(back["torch"], state["torch"]) and back["torch"].dtype == torch.uint8
    assert list(back["opt"]["state"]) == [0, 1] and back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    with pytest.raises(TypeError, match="cannot be stored without pickle"):
        ckpt.encode({"f": object()}, "s", {})


def test_local_checkpoint_files_marker_last_and_exact_restore(tmp_path):
    models = _models(0)
    steps = _steps(models)
    run = _run(tmp_path)
    _train_once(models, steps)
    _save(tmp_path, models, steps, 2, run)
    after_save = torch.rand(3)
    folder = tmp_path / "iter_2"
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "state.json", "tensors.safetensors"]
    marker = read_marker(folder)  # complete: every file of the marker has its size
    assert marker["run_id"] == run.run_id and set(marker["files"]) == {"state.json", "tensors.safetensors"}
    assert marker["config"]["ppo.kl.init_kl_coef"] == 0.2

    resumed = _run(tmp_path, resume=True)
    assert resumed.resumed_from == folder and resumed.run_id == run.run_id
    fresh = _models(1)
    fresh_steps = _steps(fresh)
    state = fresh_steps.load(ckpt.resume_folder(resumed, tmp_path))
    assert state["iteration"] == 2 and state["kl"] == {"value": 0.2} and state["ptx_position"] == 2
    assert torch.equal(torch.rand(3), after_save)  # RNG restored
    for a, b in ((models.policy, fresh.policy), (models.value, fresh.value)):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert fresh_steps.lr() == steps.lr() < 0.1
    for m, st in ((models, steps), (fresh, fresh_steps)):  # the restored optimizer moments give the same next step
        torch.manual_seed(5)
        _train_once(m, st)
    assert all(torch.equal(p, q) for p, q in zip(models.policy.parameters(), fresh.policy.parameters()))


def test_rotation_never_removes_this_runs_newest_checkpoint(tmp_path):
    """An earlier run's higher-numbered checkpoint (left by hand here: start_run removes them) once
    pushed the new run's own checkpoints out: keep=1 deleted iter_2 the moment it was written."""
    old = _run(tmp_path, config={**CONFIG, "seed": 2})
    models = _models(0)
    steps = _steps(models)
    _save(tmp_path, models, steps, 8, old)
    new = _run(tmp_path / "elsewhere")  # another run id, without removing iter_8
    _save(tmp_path, models, steps, 2, new, keep=1)
    _save(tmp_path, models, steps, 4, new, keep=1)
    assert (tmp_path / "iter_4").is_dir() and not (tmp_path / "iter_2").exists()
    assert read_marker(tmp_path / "iter_4")["run_id"] == new.run_id
    assert (tmp_path / "iter_8").is_dir()  # another run's: not this run's to rotate


@pytest.mark.parametrize("name", ["tensors.safetensors", "state.json"])
def test_a_truncated_file_is_skipped_on_resume_and_refused_when_read(tmp_path, name):
    models = _models(0)
    steps = _steps(models)
    run = _run(tmp_path)
    _save(tmp_path, models, steps, 2, run)
    _save(tmp_path, models, steps, 4, run)
    path = tmp_path / "iter_4" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    resumed = _run(tmp_path, resume=True)
    assert resumed.resumed_from == tmp_path / "iter_2"
    assert resumed.skipped and resumed.skipped[0][0] == "iter_4" and "truncated" in resumed.skipped[0][1]
    assert resumed.metrics()["resume/skipped_checkpoints"] == 1
    with pytest.raises(CheckpointError, match=rf"iter_4/{name}: unreadable .*damaged"):
        ckpt.read_state(tmp_path / "iter_4")


def test_a_failed_write_keeps_the_previous_checkpoint_and_says_the_disk_is_full(tmp_path, monkeypatch):
    models = _models(0)
    steps = _steps(models)
    run = _run(tmp_path)
    _save(tmp_path, models, steps, 2, run)
    real = ckpt.save_file

    def full_disk(tensors, filename, *args, **kwargs):
        real(tensors, filename)  # a partial file is on disk when the space runs out
        with open(filename, "r+b") as f:
            f.truncate(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(CheckpointError, match=r"writing checkpoint .*iter_4 failed: the disk is full \(\d+ MiB free"):
        _save(tmp_path, models, steps, 4, run, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_2"]  # no temporary folder, iter_2 kept
    read_marker(tmp_path / "iter_2")
    assert _run(tmp_path, resume=True).resumed_from == tmp_path / "iter_2"


def test_a_checkpoint_folder_that_cannot_be_made_is_a_checkpoint_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    models = _models(0)
    with pytest.raises(CheckpointError, match=r"cannot create checkpoint folder .*Check the folder is writable"):
        _save(blocker / "checkpoints", models, _steps(models), 2, _run(tmp_path))


def test_a_non_finite_gradient_norm_stops_before_the_optimizer_step(tmp_path):
    models = _models(0)
    steps = _steps(models)
    before = [p.detach().clone() for p in models.value.parameters()]
    x = torch.randn(4, 3)
    steps.backward("value", models.value(x).pow(2).mean() * float("inf"))
    steps.backward("policy", models.policy(x).pow(2).mean())
    with pytest.raises(NonFiniteError, match=r"ppo: non-finite value gradient norm \((nan|inf)\) at step 7"):
        steps.minibatch_done(7)
    assert all(torch.equal(p, q) for p, q in zip(before, models.value.parameters()))  # not stepped


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    models = _models(0)
    steps = _steps(models)
    with torch.no_grad():
        models.policy.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite policy weights of the checkpoint \(weight\) \(nan\) at step 2"):
        _save(tmp_path, models, steps, 2, _run(tmp_path))
    assert not list(tmp_path.iterdir())
