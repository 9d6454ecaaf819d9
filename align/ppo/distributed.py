"""PPO under DeepSpeed ZeRO: data parallelism over processes, with the models sharded.

The Trainer-based stages get DeepSpeed from the Hugging Face Trainer (:mod:`align.distributed`);
our PPO loop wires it itself, the way DeepSpeed-Chat and OpenRLHF do:

* **Data parallel.** ``ppo.rollout_batch_size`` and ``ppo.mini_batch_size`` are global: each of
  ``N`` processes generates and trains on its own contiguous ``1/N`` of every batch.
  ``ppo.micro_batch_size`` is per process (at most ``mini_batch_size / N``). Advantages are
  whitened with statistics of the whole batch, losses are token means over the whole minibatch
  (each process scales its share), and logged statistics are averaged over processes, so a run on
  ``N`` processes computes what one process computes on the same batch.
* **Trainable models** (policy, value) become ``deepspeed.initialize`` engines with our AdamW
  and learning-rate schedule (or the config's ``optimizer`` block, e.g. ZeRO-Offload's
  DeepSpeedCPUAdam): gradients are reduced, optimizer state (ZeRO-1/2/3) and parameters (ZeRO-3)
  partitioned, gradient accumulation and clipping done by the engine.
* **Frozen models** (reference, reward model) are partitioned inference engines under ZeRO-3
  (TRL's ``prepare_deepspeed``) and whole on every process under ZeRO-1/2.
* **Generation with ZeRO-3-partitioned parameters** runs in lock-step (``synced_gpus``): a
  process whose responses have all ended keeps joining the other processes' forward passes,
  which gather each layer's weights (:func:`align.ppo.rollout.generate_rollout` detects it).

CPU-only machines run over gloo (``DS_ACCELERATOR=cpu``, set by
:func:`align.distributed.deepspeed_args`).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from align.distributed import deepspeed_args, zero_stage

log = logging.getLogger(__name__)


@dataclass
class DataParallel:
    """The processes PPO's batches are split over (``world == 1``: every method is a no-op)."""

    world: int = 1
    rank: int = 0
    config: dict | None = None  # the DeepSpeed config template (None: no DeepSpeed)
    local_rank: int = 0         # the device index on this node

    @property
    def deepspeed(self) -> bool:
        return self.config is not None

    @property
    def zero(self) -> int:
        return zero_stage(self.config)

    def share(self, items: list) -> list:
        """This process's contiguous ``1/world`` of ``items`` (the length must divide)."""
        n = len(items) // self.world
        return items[self.rank * n : (self.rank + 1) * n]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over processes (a new tensor; every process gets it)."""
        if self.world == 1:
            return tensor
        out = tensor.detach().clone().double()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(tensor.dtype)

    def sum_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Each statistic summed over processes (every process gets the same numbers)."""
        if self.world == 1:
            return stats
        keys = sorted(stats)
        totals = self.sum(torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64))
        return dict(zip(keys, totals.tolist()))

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_data_parallel(ds_config: dict | None) -> DataParallel:
    """Initialize the process group for a DeepSpeed run (gloo without CUDA); plain runs get ``world=1``."""
    if not ds_config:
        return DataParallel()
    import deepspeed

    deepspeed_args(ds_config)  # DS_ACCELERATOR=cpu, SLURM ranks, a one-process world without a launcher
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return DataParallel(dist.get_world_size(), dist.get_rank(), dict(ds_config), local_rank)


def local_batch_sizes(rollout: int, mini: int, micro: int, world: int) -> tuple[int, int, int]:
    """Per-process rollout, minibatch and micro-batch sizes for global ``rollout``/``mini``.

    Raises:
        ValueError: When a global size does not split evenly over ``world`` processes.
    """
    for name, n in (("rollout_batch_size", rollout), ("mini_batch_size", mini)):
        if n % world:
            raise ValueError(f"ppo.{name}={n} must be a multiple of the number of processes ({world}).")
    local_mini = mini // world
    local_micro = min(micro, local_mini)
    if local_mini % local_micro:
        raise ValueError(f"ppo.mini_batch_size / processes = {local_mini} must be a multiple of "
                         f"ppo.micro_batch_size ({local_micro}, per process).")
    return rollout // world, local_mini, local_micro


def fill_config(template: dict, *, micro: int, accumulation: int, world: int, max_grad_norm: float,
                hidden_size: int, bf16: bool, optimizer: dict | None = None) -> dict:
    """A DeepSpeed config with every ``"auto"`` value resolved (what the HF Trainer does for the
    other stages): batch sizes, clipping, precision, bucket sizes from ``hidden_size``, and the
    optimizer block's hyperparameters.

    Raises:
        ValueError: When an ``"auto"`` is left that PPO does not know how to fill.
    """
    cfg = copy.deepcopy(template)
    auto = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * world,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in auto.items():
        if cfg.get(key, "auto") == "auto":
            cfg[key] = value
    for key, enabled in (("bf16", bf16), ("fp16", False)):
        if isinstance(cfg.get(key), dict) and cfg[key].get("enabled") == "auto":
            cfg[key]["enabled"] = enabled
    zero = cfg.get("zero_optimization", {})
    sizes = {"reduce_bucket_size": hidden_size * hidden_size,
             "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
             "stage3_param_persistence_threshold": 10 * hidden_size}
    for key, value in sizes.items():
        if zero.get(key) == "auto":
            zero[key] = value
    if "optimizer" in cfg:
        params = cfg["optimizer"].setdefault("params", {})
        for key, value in (optimizer or {}).items():
            if params.get(key) == "auto":
                params[key] = value
    left = _autos(cfg)
    if left:
        raise ValueError(f"deepspeed config: cannot fill 'auto' for {', '.join(left)} in the PPO stage; set them.")
    return cfg


def _autos(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _autos(v, f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if node == "auto" else []


def wrap_trainable(model: torch.nn.Module, config: dict, lr: float, eps: float, weight_decay: float,
                   schedule: Callable[[int], float]):
    """A ``DeepSpeedEngine`` for a trainable model with AdamW and a ``LambdaLR`` schedule."""
    import deepspeed

    def scheduler(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    def adamw(params):
        return torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay)

    engine, *_ = deepspeed.initialize(  # the config's optimizer block (e.g. DeepSpeedCPUAdam) wins over ours
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        optimizer=None if "optimizer" in config else adamw,
        lr_scheduler=scheduler, config=config,
    )
    return engine


def wrap_frozen(model: torch.nn.Module, config: dict) -> torch.nn.Module:
    """A frozen model's module, partitioned under ZeRO-3 (an inference engine); unchanged otherwise."""
    if zero_stage(config) != 3:
        return model
    import deepspeed

    frozen = {k: v for k, v in config.items() if k not in ("optimizer", "scheduler")}
    frozen["zero_optimization"] = {k: v for k, v in config["zero_optimization"].items()
                                   if not k.startswith("offload_optimizer")}
    engine, *_ = deepspeed.initialize(model=model, config=frozen)
    engine.eval()
    return engine.module
