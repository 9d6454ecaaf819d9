"""PPO's data parallelism without a launcher: batch splitting, DeepSpeed config filling, and
whitening over two real gloo processes equal to whitening the whole batch in one."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from align.masked import masked_whiten
from align.ppo.advantages import whiten_advantages
from align.ppo.distributed import DataParallel, fill_config, local_batch_sizes
from align.ppo.steps import DeepSpeedSteps

TEMPLATE = {
    "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
    "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                          "stage3_param_persistence_threshold": "auto"},
}


def test_local_batch_sizes_split_the_global_batch():
    assert local_batch_sizes(64, 32, 32, 1) == (64, 32, 32)
    assert local_batch_sizes(64, 32, 32, 2) == (32, 16, 16)  # micro-batch capped at the local minibatch
    assert local_batch_sizes(64, 32, 4, 2) == (32, 16, 4)
    with pytest.raises(ValueError, match="rollout_batch_size=6 must be a multiple of the number of processes"):
        local_batch_sizes(6, 6, 2, 4)
    with pytest.raises(ValueError, match="mini_batch_size / processes = 6 must be a multiple of ppo.micro_batch_size"):
        local_batch_sizes(24, 12, 4, 2)


def test_fill_config_resolves_every_auto_and_refuses_unknown_ones():
    cfg = fill_config(TEMPLATE, micro=4, accumulation=2, world=2, max_grad_norm=1.0, hidden_size=64, bf16=False)
    assert cfg["train_batch_size"] == 16 and cfg["gradient_accumulation_steps"] == 2
    assert cfg["bf16"]["enabled"] is False and cfg["gradient_clipping"] == 1.0
    assert cfg["zero_optimization"]["stage3_param_persistence_threshold"] == 640
    assert TEMPLATE["train_batch_size"] == "auto"  # the template is not modified
    with_opt = {**TEMPLATE, "optimizer": {"type": "AdamW", "params": {"lr": "auto", "eps": "auto"}}}
    cfg = fill_config(with_opt, micro=1, accumulation=1, world=1, max_grad_norm=1.0, hidden_size=8, bf16=False,
                      optimizer={"lr": 3e-4, "eps": 1e-5})
    assert cfg["optimizer"]["params"] == {"lr": 3e-4, "eps": 1e-5}
    with pytest.raises(ValueError, match="cannot fill 'auto' for zero_optimization.sub_group_size"):
        fill_config({**TEMPLATE, "zero_optimization": {"sub_group_size": "auto"}}, micro=1, accumulation=1,
                    world=1, max_grad_norm=1.0, hidden_size=8, bf16=False)


def test_masked_mean_over_processes_needs_the_whole_tensor():
    from align.masked import masked_mean

    x, mask = torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="reduce .over processes. needs dim=None"):
        masked_mean(x, mask, dim=1, reduce=lambda t: t)
    with pytest.raises(ValueError, match="selects no entry"):  # no real token on any process
        masked_mean(x, torch.zeros_like(mask), reduce=lambda t: t * 2)
    assert masked_mean(x * 3, mask, reduce=lambda t: t * 2).item() == 3.0  # sums and counts alike


def test_one_process_is_a_no_op():
    dp = DataParallel()
    assert dp.share([1, 2, 3]) == [1, 2, 3] and not dp.deepspeed and dp.zero == 0
    assert dp.sum_stats({"a": 1.5}) == {"a": 1.5}


def test_deepspeed_steps_refuse_a_loss_term_never_backpropagated():
    steps = DeepSpeedSteps(None, {}, DataParallel(world=2), accumulation=3)
    assert steps.scale == 6.0
    steps.backward("policy", torch.tensor(1.0, requires_grad=True), last=False)
    with pytest.raises(RuntimeError, match=r"loss terms of \['policy'\] were never backpropagated"):
        steps.micro_done()


def _whiten_worker(rank: int, init: str, x: torch.Tensor, mask: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    dp = DataParallel(world=2, rank=rank)
    mine = dp.share(list(range(x.shape[0])))
    out[rank] = whiten_advantages(x[mine], mask[mine], dp.sum)
    out[f"stats{rank}"] = dp.sum_stats({"n": float(mask[mine].sum())})
    dist.destroy_process_group()


def test_whitening_over_two_processes_equals_whitening_the_whole_batch(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(6, 5) * 3 + 1
    mask = torch.rand(6, 5) > 0.3
    mask[:, 0] = True
    out = mp.Manager().dict()
    mp.spawn(_whiten_worker, args=(f"file://{tmp_path / 'store'}", x, mask, out), nprocs=2)
    together = torch.cat([out[0], out[1]])
    torch.testing.assert_close(together, masked_whiten(x, mask), atol=1e-6, rtol=1e-5)
    assert out["stats0"]["n"] == out["stats1"]["n"] == float(mask.sum())
    # One process alone (its own statistics) would differ: the test can fail.
    assert not torch.allclose(whiten_advantages(x[:3], mask[:3]), masked_whiten(x, mask)[:3], atol=1e-3)
