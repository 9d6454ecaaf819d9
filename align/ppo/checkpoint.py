"""PPO training state on disk: everything a killed run needs to continue exactly where it stopped.

A checkpoint folder ``checkpoints/iter_<n>/`` holds ``state.pt``: the trainable parameters of the
policy and the value model (all of them in ``full`` mode, the adapters and value head in ``lora``
mode), both optimizers and schedulers, the KL controller, the RNG states (Python, NumPy, torch CPU
and CUDA) and the iteration counter, which is also the prompt loader's position (the prompt order
is a pure function of the seed and the epoch). Written to a temporary folder and renamed, so a
kill during the write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)
PREFIX = "iter_"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (``requires_grad``), by name, detached copies."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model``'s trainable parameters; every name must match."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        raise ValueError(
            f"checkpoint does not match the model (different ppo.mode or LoRA config?): missing "
            f"{missing[:3]}, unexpected {extra[:3]}."
        )
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoint_dir: Path, iteration: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` (plus RNG states) to ``checkpoint_dir/iter_<iteration>`` atomically; keep the newest ``keep``."""
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"{PREFIX}{iteration}"
    tmp = checkpoint_dir / f".tmp_{PREFIX}{iteration}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({**state, "iteration": iteration, "rng": rng_state()}, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(checkpoint_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [p for p in Path(checkpoint_dir).glob(f"{PREFIX}*") if (p / "state.pt").exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def load_latest(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint's state (RNG not yet applied), or ``None`` when there is none."""
    ckpts = list_checkpoints(checkpoint_dir)
    if not ckpts:
        log.warning("resume=true but no checkpoint in %s: starting fresh", checkpoint_dir)
        return None
    log.info("resuming from %s", ckpts[-1])
    return torch.load(ckpts[-1] / "state.pt", weights_only=False)


def save_engine_checkpoint(checkpoint_dir: Path, iteration: int, engines: dict, state: dict[str, Any], keep: int,
                           dp) -> Path:
    """Under DeepSpeed: ``iter_<n>/<engine name>/`` holds each engine's shards (every process
    writes its own), and ``state.pt`` the rest of ``state``; a collective.

    ``state.pt`` is written last, by rank 0, after every shard is on disk, and the folder is then
    renamed: a checkpoint without it is incomplete and :func:`list_checkpoints` ignores it.
    """
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"{PREFIX}{iteration}"
    tmp = checkpoint_dir / f".tmp_{PREFIX}{iteration}"
    main = dp.rank == 0
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dp.barrier()
    for name, engine in engines.items():
        engine.save_checkpoint(str(tmp), tag=name, save_latest=False)
    dp.barrier()
    if main:
        torch.save({**state, "iteration": iteration}, tmp / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(checkpoint_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dp.barrier()
    return final


def load_engine_checkpoint(checkpoint_dir: Path, engines: dict) -> dict[str, Any] | None:
    """Restore each engine (weights, optimizer shards, schedule) from the newest complete
    checkpoint and return its ``state.pt``; ``None`` when there is none. A collective."""
    ckpts = list_checkpoints(checkpoint_dir)
    if not ckpts:
        log.warning("resume=true but no checkpoint in %s: starting fresh", checkpoint_dir)
        return None
    log.info("resuming from %s", ckpts[-1])
    for name, engine in engines.items():
        path, _ = engine.load_checkpoint(str(ckpts[-1]), tag=name)
        if path is None:
            raise ValueError(f"{ckpts[-1] / name}: no DeepSpeed checkpoint of the {name} model (saved without DeepSpeed?).")
    return torch.load(ckpts[-1] / "state.pt", weights_only=False)
