"""PPO training state on disk, without pickle: everything a killed run needs to continue exactly.

A checkpoint folder ``checkpoints/iter_<n>/`` holds

- ``tensors.safetensors`` (plain torch only): every tensor of the state: the trainable parameters
  of the policy and the value model (all of them in ``full`` mode, the adapters and value head in
  ``lora`` mode), the optimizers' moment and step tensors, and the torch CPU/CUDA RNG states (as
  ``uint8`` tensors);
- ``state.json``: everything else: the iteration (also the prompt loader's position: the prompt
  order is a pure function of the seed and the epoch), the optimizers' ``param_groups``, the
  schedulers, the KL controller, the PPO-ptx position and the Python/NumPy RNG states, with each
  tensor replaced by a reference into ``tensors.safetensors``;
- under DeepSpeed, ``policy/`` and ``value/``: each engine's own shards (``engine.save_checkpoint``);
- ``align_checkpoint.json``, written last (:mod:`align.checkpoints`): run id, training config and
  the size of every file above. Without it, or with a file of another size, the folder is
  incomplete and resume skips it.

Nothing here is ever unpickled: ``state.json`` decodes into dicts, lists, tuples, numbers,
strings, tensors and NumPy arrays only, and the tensors come from safetensors. A legacy
``state.pt`` (a pickle, which could run code when loaded) is never read; resume refuses it
(:func:`legacy_refusal`). DeepSpeed's own shards are another matter: DeepSpeed 0.19 loads them with
``torch.load(weights_only=False)``, so resume a DeepSpeed checkpoint only from a folder you trust
(docs/distributed.md).

Written to a temporary folder and renamed, so a kill during the write leaves the previous
checkpoint intact; a failed write (disk full) removes the temporary folder and raises
:class:`align.errors.CheckpointError` with the free space.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from align.checkpoints import RunState, free_space_hint, read_marker
from align.checkpoints import list_checkpoints as list_all
from align.errors import CheckpointError

log = logging.getLogger(__name__)
PREFIX = "iter_"
STATE = "state.json"
TENSORS = "tensors.safetensors"
LEGACY = "state.pt"
FORMAT = 2  # 1: the pickled state.pt of earlier versions


# ------------------------------------------------------------------ tensors out of JSON, and back


def encode(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON-able data; each tensor goes to ``tensors[<its path>]`` and is replaced by
    ``{"__tensor__": path}``. Tuples, non-string dict keys and NumPy arrays are tagged so that
    :func:`decode` gives them back as they were.

    Raises:
        TypeError: For any other type (nothing is pickled as a fallback).
    """
    if torch.is_tensor(obj):
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, f"{name}/{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[encode(k, f"{name}/key", tensors), encode(v, f"{name}/{k}", tensors)]
                              for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, f"{name}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, f"{name}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state {name}: {type(obj).__name__} cannot be stored without pickle.")


_DTYPES = {"<u4", "<i4", "<i8", "<u8", "<f4", "<f8", "|u1", "|b1"}


def decode(obj: Any, tensors: dict[str, torch.Tensor], where: str = "") -> Any:
    """The inverse of :func:`encode`.

    Raises:
        CheckpointError: A tensor reference that is not in ``tensors``, or a malformed tag.
    """
    if isinstance(obj, list):
        return [decode(v, tensors, where) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        key = obj["__tensor__"]
        if key not in tensors:
            raise CheckpointError(f"{where}: {STATE} refers to tensor {key!r}, which {TENSORS} does not hold.")
        return tensors[key]
    if "__ndarray__" in obj:
        if obj.get("dtype") not in _DTYPES:
            raise CheckpointError(f"{where}: unexpected array dtype {obj.get('dtype')!r} in {STATE}.")
        return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(decode(v, tensors, where) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {decode(k, tensors, where): decode(v, tensors, where) for k, v in obj["__items__"]}
    return {k: decode(v, tensors, where) for k, v in obj.items()}


# ------------------------------------------------------------------ the parts of the state


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (``requires_grad``), by name, detached copies."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model``'s trainable parameters; every name must match."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        raise CheckpointError(
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


# ------------------------------------------------------------------ writing


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """``state.json`` and (when ``state`` holds tensors) ``tensors.safetensors`` in ``folder``."""
    tensors: dict[str, torch.Tensor] = {}
    data = {"format": FORMAT, "state": encode(state, "state", tensors)}
    if tensors:
        save_file(tensors, str(Path(folder) / TENSORS))
    (Path(folder) / STATE).write_text(json.dumps(data) + "\n", encoding="utf-8")


def _commit(tmp: Path, final: Path, iteration: int, write: Callable[[Path], None], run: RunState | None) -> None:
    """``write(tmp)``, then the marker (last), then rename ``tmp`` to ``final``. An ``OSError``
    (disk full, unwritable folder) removes ``tmp`` and becomes a :class:`CheckpointError`; the
    previous checkpoints are untouched."""
    try:
        write(tmp)
        if run is not None:
            run.write_marker(tmp, iteration)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"ppo: writing checkpoint {final} failed: {free_space_hint(final, err)}") from err


def _fresh_tmp(checkpoint_dir: Path, iteration: int) -> Path:
    tmp = Path(checkpoint_dir) / f".tmp_{PREFIX}{iteration}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    except OSError as err:
        raise CheckpointError(f"ppo: cannot create checkpoint folder {tmp}: {free_space_hint(tmp, err)}") from err
    return tmp


def rotate(checkpoint_dir: Path, keep: int, run: RunState | None) -> None:
    """Keep the newest ``keep`` complete checkpoints of this run (0: all); others' are left alone.

    Only folders whose marker carries this run's id count: the checkpoint just written is the
    newest of them, so it is never removed (an earlier run's higher-numbered checkpoints, were any
    left, cannot push it out).
    """
    if keep <= 0:
        return
    mine = []
    for path in list_all(checkpoint_dir, PREFIX):  # newest first
        if run is None:  # no run identity (tests of the format alone): every folder with a state
            mine += [path] if (path / STATE).is_file() else []
            continue
        try:
            marker = read_marker(path)
        except CheckpointError:
            continue
        if marker["run_id"] == run.run_id:
            mine.append(path)
    for old in mine[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(checkpoint_dir: Path, iteration: int, state: dict[str, Any], keep: int = 2,
                    run: RunState | None = None) -> Path:
    """Write ``state`` (plus the RNG states) to ``checkpoint_dir/iter_<iteration>`` atomically, the
    marker last; keep this run's newest ``keep``."""
    full = {**state, "backend": "local", "iteration": iteration, "rng": rng_state()}
    final = Path(checkpoint_dir) / f"{PREFIX}{iteration}"
    _commit(_fresh_tmp(checkpoint_dir, iteration), final, iteration, lambda tmp: write_state(tmp, full), run)
    rotate(checkpoint_dir, keep, run)
    return final


def save_engine_checkpoint(checkpoint_dir: Path, iteration: int, engines: dict, state: dict[str, Any], keep: int,
                           dp, run: RunState | None = None) -> Path:
    """Under DeepSpeed: ``iter_<n>/<engine name>/`` holds each engine's shards (every process
    writes its own), and ``state.json`` the rest of ``state``; a collective.

    ``state.json`` and the marker are written last, by rank 0, after every shard is on disk, and the
    folder is then renamed: a checkpoint without the marker is incomplete and resume skips it.
    """
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"{PREFIX}{iteration}"
    tmp = checkpoint_dir / f".tmp_{PREFIX}{iteration}"
    main = dp.rank == 0
    if main:
        _fresh_tmp(checkpoint_dir, iteration)
    dp.barrier()
    try:
        for name, engine in engines.items():
            engine.save_checkpoint(str(tmp), tag=name, save_latest=False)
    except OSError as err:
        raise CheckpointError(f"ppo: writing checkpoint {final} failed: {free_space_hint(final, err)}") from err
    dp.barrier()
    if main:
        full = {**state, "backend": "deepspeed", "iteration": iteration}
        _commit(tmp, final, iteration, lambda t: write_state(t, full), run)
        rotate(checkpoint_dir, keep, run)
    dp.barrier()
    return final


# ------------------------------------------------------------------ reading


def legacy_refusal(folder: Path) -> CheckpointError:
    return CheckpointError(
        f"{folder}: a checkpoint in the old format ({LEGACY}, a pickle); align no longer loads it, since "
        f"unpickling a file can run code. Fix: resume=false to start a new run here (its old checkpoints are "
        f"removed), or finish the run with the align version that wrote it.")


def read_state(folder: Path) -> dict[str, Any]:
    """The state saved in ``folder`` (RNG not yet applied).

    Raises:
        CheckpointError: A legacy ``state.pt`` folder, or a missing, truncated or malformed file.
    """
    folder = Path(folder)
    if not (folder / STATE).is_file():
        if (folder / LEGACY).is_file():
            raise legacy_refusal(folder)
        raise CheckpointError(f"{folder}: no {STATE} (not a PPO checkpoint, or an incomplete one).")
    try:
        data = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / STATE}: unreadable ({e}); the checkpoint is damaged, resume an "
                              "earlier one or start with resume=false.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "state" not in data:
        raise CheckpointError(f"{folder / STATE}: not a format-{FORMAT} PPO checkpoint state.")
    tensors: dict[str, torch.Tensor] = {}
    if (folder / TENSORS).is_file():
        try:
            tensors = load_file(str(folder / TENSORS))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{folder / TENSORS}: unreadable ({e}); the checkpoint is damaged, resume an "
                                  "earlier one or start with resume=false.") from None
    return decode(data["state"], tensors, str(folder))


def resume_folder(run: RunState, checkpoint_dir: Path) -> Path | None:
    """The checkpoint this run continues from (``run.resumed_from``), or None for a fresh start.

    Raises:
        CheckpointError: There is no complete checkpoint to resume but a legacy ``state.pt`` one
            (it would otherwise be ignored without a word and the run would start over).
    """
    if run.resumed_from is not None:
        return Path(run.resumed_from)
    for path in list_all(checkpoint_dir, PREFIX):
        if (path / LEGACY).is_file() and not (path / STATE).is_file():
            raise legacy_refusal(path)
    return None
