"""Multi-process training with DeepSpeed ZeRO for the Trainer-based stages (SFT, RM, DPO).

A stage passes :func:`deepspeed_args` into its ``TrainingArguments``/TRL config, and after
training calls :func:`finish_training`, which writes this rank's ZeRO partition report,
consolidates a ZeRO-3 model into ``final/`` and hands rank 0 a plain model to save and evaluate
(other ranks stop there). :func:`is_main_process` gates files and trackers everywhere else.

CPU gotchas seen with transformers 5.2x / accelerate 1.1x / DeepSpeed 0.19 (handled here or in
:mod:`align.models.precision`, so users never meet them):

* ``use_cpu=True`` is required (``precision_args`` sets it without CUDA): without it every
  launcher fails DeepSpeed's train-batch-size assertion, and plain DDP runs N lone processes.
* DeepSpeed's CPU accelerator talks oneCCL when ``oneccl_bindings_for_pytorch`` is installed and
  falls back to gloo otherwise; we pin ``DS_ACCELERATOR=cpu`` without CUDA so it never guesses.
* Under ZeRO-3 a model created while the Trainer's DeepSpeed config is alive is built with
  ``zero.Init`` (partitioned at load), which needs ``deepspeed.init_distributed`` first; our stages
  load before the config exists, and :func:`release_zero3` drops that state after training so
  rank 0 reloads ``final/`` as a plain model.
* ZeRO-3 keeps tensors below ``stage3_param_persistence_threshold`` whole on every rank;
  DeepSpeed's default (1e5) partitions nothing of a tiny model, so the configs use ``auto``
  (10 x hidden_size, filled by the Trainer).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from align.outputs import atomic_write_text

log = logging.getLogger(__name__)

RANK_DIR = "distributed"


def rank() -> int:
    """This process's global rank (0 without a launcher; SLURM's task id under ``srun`` alone)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def world_size() -> int:
    """Number of processes in the launch (1 without a launcher; SLURM's task count under ``srun``)."""
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def is_main_process() -> bool:
    """True on the rank that writes ``metrics.json``, ``final/``, plots and tracker runs."""
    return rank() == 0


def zero_stage(config: dict | None) -> int:
    """The ZeRO stage of a DeepSpeed config dict (0: no DeepSpeed)."""
    if not config:
        return 0
    return int(config.get("zero_optimization", {}).get("stage", 0))


def check_deepspeed_choice(config: dict | None, peft_method: str) -> None:
    """Refuse combinations that cannot work, before any model is loaded.

    Raises:
        ValueError: ZeRO-3 with a PEFT method (adapters are saved and merged from whole weights,
            which ZeRO-3 never holds), or QLoRA under any DeepSpeed stage (4-bit bitsandbytes
            weights cannot be partitioned or offloaded).
    """
    stage = zero_stage(config)
    if stage == 3 and peft_method != "none":
        raise ValueError(
            f"deepspeed ZeRO-3 with peft={peft_method} is not supported: adapters are saved and merged "
            "from whole weights. Use deepspeed=zero2 (or zero1) with PEFT, or peft=none with zero3."
        )
    if config and peft_method == "qlora":
        raise ValueError("peft=qlora cannot run under DeepSpeed (4-bit weights are not partitioned); use deepspeed=none.")


def deepspeed_args(config: dict | None) -> dict:
    """Keyword arguments for ``TrainingArguments``/TRL configs: ``{}`` or ``{"deepspeed": config}``.

    Also prepares the process for DeepSpeed: ``DS_ACCELERATOR=cpu`` without CUDA; ranks from
    SLURM for one task per process (``MASTER_ADDR`` must be exported); and a one-process "world"
    (rank 0 of 1 on a free local port) when no launcher set one, so
    ``python stages/sft.py deepspeed=zero2`` runs like ``torchrun --nproc_per_node=1``.

    Raises:
        ValueError: Under several SLURM tasks without ``MASTER_ADDR``.
    """
    if not config:
        return {}
    # DeepSpeed calls torch.distributed's old collective names once per bucket: one line each.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        # One SLURM task per process (srun, Hydra's submitit launcher): ranks from SLURM.
        if "MASTER_ADDR" not in os.environ:
            raise ValueError(
                "SLURM tasks found but MASTER_ADDR is not set: export MASTER_ADDR (the first node, "
                "`scontrol show hostnames $SLURM_JOB_NODELIST | head -n1`) and MASTER_PORT before the stage."
            )
        os.environ.update(RANK=os.environ["SLURM_PROCID"], LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"),
                          WORLD_SIZE=os.environ["SLURM_NTASKS"])
        os.environ.setdefault("MASTER_PORT", "29500")
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    return {"deepspeed": dict(config)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def release_zero3() -> None:
    """Forget the Trainer's global ZeRO-3 state, so ``from_pretrained`` builds plain models again."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


@contextmanager
def whole_parameters(module: torch.nn.Module):
    """Inside the block ``module``'s ZeRO-3 parameters are whole on every rank (gathered, read-only);
    without ZeRO-3 nothing happens. A collective: every rank must enter it. It gathers the whole
    module at once, so use it for small reads (checksums), not on a model that fits no single rank.
    """
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]  # see is_partitioned
    if not params:
        yield module
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield module


def is_partitioned(module: torch.nn.Module) -> bool:
    """True when ``module`` holds ZeRO-3-partitioned parameters (its forward passes are collectives)."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def partition_report(engine) -> dict:
    """How much of the model and optimizer state this rank holds (element counts).

    Args:
        engine: The ``DeepSpeedEngine`` after training (``trainer.deepspeed``).

    Returns:
        ``parameters/total`` (whole model), ``parameters/local`` (held here: a ZeRO-3 rank holds
        its ``ds_tensor`` shard of each partitioned tensor plus whole persistent ones; ZeRO-1/2
        hold everything), ``parameters/persistent`` (ZeRO-3 tensors kept whole), ``optimizer/
        trainable_total``, ``optimizer/fp32_partition`` (the fp32 master weights this rank's
        optimizer steps), ``optimizer/state`` (elements of its Adam moments), and the fractions
        ``parameters/local_fraction`` and ``optimizer/local_fraction`` (fp32 partition /
        trainable total; about 1/N under every ZeRO stage, 1/N for parameters only under ZeRO-3).
    """
    module, opt = engine.module, engine.optimizer
    total = local = persistent = trainable = 0
    for p in module.parameters():
        n = int(p.ds_numel) if hasattr(p, "ds_numel") else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
        if hasattr(p, "ds_tensor"):
            if getattr(p, "ds_persist", False):
                persistent += n
                local += n
            else:
                local += p.ds_tensor.numel()
        else:
            local += n
    flat = getattr(opt, "fp32_partitioned_groups_flat", None)  # ZeRO-3
    if flat is None:
        flat = getattr(opt, "single_partition_of_fp32_groups", [])  # ZeRO-1/2
    fp32_partition = sum(t.numel() for t in flat)
    inner = getattr(opt, "optimizer", opt)
    state = sum(
        v.numel() for s in getattr(inner, "state", {}).values() for v in s.values()
        if torch.is_tensor(v) and v.dim() > 0
    )
    return {
        "rank": rank(),
        "world_size": world_size(),
        "zero_stage": int(engine.zero_optimization_stage()),
        "parameters/total": total,
        "parameters/local": local,
        "parameters/persistent": persistent,
        "parameters/local_fraction": local / max(total, 1),
        "optimizer/trainable_total": trainable,
        "optimizer/fp32_partition": fp32_partition,
        "optimizer/state": state,
        "optimizer/local_fraction": fp32_partition / max(trainable, 1),
    }


def consolidated_state_dict(engine) -> dict[str, torch.Tensor] | None:
    """The whole 16-bit state dict of a ZeRO-3 engine's module, gathered from every rank's shards.

    A collective: every rank must call it. Rank 0 gets the full state dict (on CPU, tied weights
    kept tied); the other ranks get ``None``.

    Why a wrapper: under ZeRO-3 each rank holds only its shard of every parameter, so the
    module's own ``state_dict()`` is empty placeholders, and saving a Hugging Face ``final/``
    needs the shards gathered first. DeepSpeed's public ``engine.save_16bit_model(dir)`` gathers
    them but writes its own ``pytorch_model.bin`` (and only when the config sets
    ``stage3_gather_16bit_weights_on_model_save``), not a folder ``from_pretrained`` loads. The
    method that returns the gathered dict is private (``_zero3_consolidated_16bit_state_dict``);
    the HF Trainer and Accelerate call it the same way. It is called here alone, so a DeepSpeed
    release that renames it breaks in one place, next to this explanation.

    Args:
        engine: A ``DeepSpeedEngine`` under ZeRO-3.

    Raises:
        ValueError: When ``engine`` does not partition its parameters (ZeRO-1/2: the module's
            ``state_dict()`` is already whole on every rank).
    """
    stage = int(engine.zero_optimization_stage())
    if stage != 3:
        raise ValueError(f"consolidated_state_dict needs a ZeRO-3 engine, got ZeRO-{stage}; "
                         "under ZeRO-1/2 use module.state_dict() (whole on every rank).")
    return engine._zero3_consolidated_16bit_state_dict()


def write_rank_report(out_dir: Path, report: dict) -> Path:
    """Write ``<stage dir>/distributed/rank<k>.json`` (one file per rank: no races)."""
    path = Path(out_dir) / RANK_DIR / f"rank{report['rank']}.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return path


def finish_training(trainer, final_dir: Path, load: Callable[[str], torch.nn.Module]):
    """End of training on every rank; returns the trained model, plain, on rank 0 (else ``None``).

    Every rank must call it (ZeRO-3 consolidation is a collective). Under DeepSpeed it writes
    this rank's partition report next to ``final_dir`` (``distributed/rank<k>.json``). Under
    ZeRO-3, each rank holds only a shard, so all ranks gather the 16-bit weights into
    ``final_dir`` (rank 0 writes a normal Hugging Face folder) and rank 0 reloads it with
    ``load(path)``: the model it evaluates is the checkpoint plain ``transformers`` loads.
    Otherwise rank 0 gets ``trainer.model`` (whole on every rank under ZeRO-1/2 and DDP).

    Ranks other than 0 get ``None`` and should return: only rank 0 saves, evaluates and reports.
    """
    engine = getattr(trainer, "deepspeed", None) if getattr(trainer, "is_deepspeed_enabled", False) else None
    if engine is not None:
        path = write_rank_report(Path(final_dir).parent, partition_report(engine))
        log.info("rank %d: ZeRO partition report %s", rank(), path)
    if engine is not None and zero_stage(engine.config) == 3:
        trainer.save_model(str(final_dir))  # collective: gathers each tensor, rank 0 writes
        trainer.accelerator.wait_for_everyone()
        if not is_main_process():
            return None
        release_zero3()
        log.info("ZeRO-3 weights consolidated into %s; reloading them as a plain model", final_dir)
        return load(str(final_dir))
    if world_size() > 1:
        trainer.accelerator.wait_for_everyone()
    return trainer.model if is_main_process() else None


def setup_rank_logging(out_dir: Path, stage: str) -> None:
    """On ranks other than 0: log to ``distributed/rank<k>.log`` instead of the stage log, and
    only warnings to the console (one readable log per stage; no interleaved lines)."""
    if is_main_process():
        return
    root = logging.getLogger()
    shared = str((Path(out_dir) / f"{stage}.log").resolve())
    for h in list(root.handlers):
        if getattr(h, "baseFilename", None) == shared:
            root.removeHandler(h)
            h.close()
        elif isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(logging.WARNING)
    path = Path(out_dir) / RANK_DIR / f"rank{rank()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(fh)
