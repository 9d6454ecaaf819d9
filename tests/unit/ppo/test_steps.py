"""The training backends' own parts without DeepSpeed: the local checkpoint round trip and its
file format, each backend refusing the other's checkpoint, the per-rank sampling seed, the
learning-rate schedule and the precision context."""

from __future__ import annotations

import json

import pytest
import torch

from align.errors import CheckpointError
from align.ppo.checkpoint import save_engine_checkpoint
from align.ppo.distributed import DataParallel
from align.ppo.models import PPOModels
from align.ppo.seeded_sampling import row_seed
from align.ppo.steps import DeepSpeedSteps, LocalSteps, autocast_context, lr_lambda, make_steps

# What a local checkpoint's state.json holds, in this order.
LOCAL_KEYS = ["policy", "value", "opt_policy", "opt_value", "sched_policy", "sched_value", "kl", "ptx_position",
              "backend", "iteration", "rng"]


def _models(seed: int) -> PPOModels:
    torch.manual_seed(seed)
    return PPOModels("full", torch.nn.Linear(3, 2), torch.nn.Linear(3, 1))


def _steps(models: PPOModels) -> LocalSteps:
    return make_steps(models, DataParallel(), policy_lr=0.1, value_lr=0.2, eps=1e-5, weight_decay=0.0, max_grad_norm=1.0,
                      schedule=lr_lambda("linear", 10), micro=2, accumulation=1, precision="fp32",
                      device=torch.device("cpu"))


def _train_once(models: PPOModels, steps: LocalSteps) -> None:
    x = torch.randn(4, 3)
    steps.backward("value", models.value(x).pow(2).mean())
    steps.backward("policy", models.policy(x).pow(2).mean())
    steps.micro_done()
    steps.minibatch_done()


def test_local_checkpoint_round_trip_restores_weights_optimizers_schedules_and_rng(tmp_path):
    models = _models(0)
    steps = _steps(models)
    assert isinstance(steps, LocalSteps) and steps.lr() == pytest.approx(0.1)
    _train_once(models, steps)
    steps.save_checkpoint(tmp_path, 3, {"kl": {"value": 0.2}, "ptx_position": 5}, keep=2)
    after_save = torch.rand(3)  # the global stream right after the save
    saved = json.loads((tmp_path / "iter_3" / "state.json").read_text())["state"]
    assert list(saved) == LOCAL_KEYS and not (tmp_path / "iter_3" / "state.pt").exists()

    fresh = _models(1)  # other weights, empty optimizers
    fresh_steps = _steps(fresh)
    state = fresh_steps.load(tmp_path / "iter_3")
    assert state["iteration"] == 3 and state["kl"] == {"value": 0.2} and state["ptx_position"] == 5
    assert torch.equal(torch.rand(3), after_save)  # RNG restored
    for a, b in ((models.policy, fresh.policy), (models.value, fresh.value)):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert fresh_steps.lr() == steps.lr() < 0.1  # the schedule moved on by one step, and was restored
    assert fresh_steps.state_dict()["opt_policy"]["state"][0]["step"] == 1


def test_each_backend_refuses_the_others_checkpoint(tmp_path):
    local, ds = tmp_path / "local", tmp_path / "ds"
    models = _models(0)
    _steps(models).save_checkpoint(local, 2, {"kl": {}, "ptx_position": 0}, keep=1)
    # A DeepSpeed checkpoint's state.json holds no weights (they are in the engines' folders).
    save_engine_checkpoint(ds, 2, {}, {"kl": {}, "ptx_position": 0}, 1, DataParallel())
    with pytest.raises(CheckpointError, match=r"checkpoint was written under DeepSpeed; resume it the same way"):
        _steps(_models(0)).load(ds / "iter_2")
    engines = DeepSpeedSteps(models, {}, DataParallel(config={"zero_optimization": {"stage": 2}}), accumulation=1)
    with pytest.raises(CheckpointError, match=r"checkpoint was written without DeepSpeed; resume it the same way"):
        engines.load(local / "iter_2")


def test_sampling_seed_is_per_rank_under_deepspeed_and_untouched_otherwise():
    def draw(steps) -> torch.Tensor:
        torch.manual_seed(99)
        steps.seed_sampling(7, 3, 8)
        return torch.rand(4)

    torch.manual_seed(99)
    untouched = torch.rand(4)
    assert torch.equal(draw(_steps(_models(0))), untouched)
    ranks = [DeepSpeedSteps(None, {}, DataParallel(world=2, rank=r, config={}), accumulation=1) for r in (0, 1)]
    torch.manual_seed(row_seed(7, 3, 8 + 1))  # after the batch's 8 row seeds, one per process
    expected = torch.rand(4)
    assert torch.equal(draw(ranks[1]), expected) and torch.equal(draw(ranks[1]), expected)
    assert not torch.equal(draw(ranks[0]), draw(ranks[1]))


def test_lr_schedule_and_precision_context():
    linear = lr_lambda("linear", 4)
    assert [linear(s) for s in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert lr_lambda("constant", 4)(3) == 1.0
    with pytest.raises(ValueError, match="ppo.lr_scheduler='cosine' is not one of constant, linear"):
        lr_lambda("cosine", 4)
    a, b = torch.ones(4, 4), torch.ones(4, 4)
    with autocast_context("fp32", torch.device("cpu")):
        assert (a @ b).dtype == torch.float32
    with autocast_context("bf16", torch.device("cpu")):  # CPU autocast: matmuls in bf16
        assert (a @ b).dtype == torch.bfloat16
