"""Resume only the same run, and only from a complete checkpoint.

Every checkpoint folder a stage writes (HF Trainer's ``checkpoint-<step>/``, PPO's
``iter_<n>/``) gets a marker, ``align_checkpoint.json``, written *last*:

- ``run_id``: drawn when a run starts fresh, carried over when it resumes;
- ``config``: the run's training-relevant config (flattened ``a.b.c`` keys; :data:`NOT_TRAINING`
  lists what is left out: logging, paths, resume switches, checkpoint cadence);
- ``files``: the size of every file in the folder, so a truncated file is seen;
- ``extra``: what the stage needs to continue its bookkeeping (e.g. the loss sum so far).

A folder without a marker, or whose files do not match it, is incomplete (killed while it was
written): resume skips it, says so, and takes the newest complete one. A complete checkpoint whose
config differs from this run's is refused, with the keys, unless ``resume_allow`` names them
(recorded in the marker and the metrics). A run with ``resume=false`` removes the checkpoints of
an earlier run first, so it can neither inherit them nor have its own rotated away by them.

:func:`start_run` is the one entry point; docs/reliability.md says what is guaranteed.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from align.errors import CheckpointError
from align.outputs import atomic_write_text

log = logging.getLogger(__name__)

MARKER = "align_checkpoint.json"
FORMAT = 1
# Keys that do not change what a run computes: a resumed run may differ in them freely.
NOT_TRAINING = (
    "resume", "resume_allow", "logger.*", "paths.*", "output_dir", "run", "debug.*",
    "trainer.save_steps", "trainer.save_total_limit", "trainer.save_strategy", "trainer.logging_steps",
    "trainer.dataloader_num_workers", "trainer.report_to", "trainer.run_name",
    "checkpoint.every", "checkpoint.keep", "log_every",
)


def flatten(config: Mapping, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values (JSON-comparable)."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(key == p or fnmatch.fnmatchcase(key, p) for p in patterns)


def training_config(config: Mapping) -> dict[str, object]:
    """The flattened, JSON-normalised config without the :data:`NOT_TRAINING` keys."""
    flat = json.loads(json.dumps(flatten(config), default=str))
    return {k: v for k, v in sorted(flat.items()) if not _matches(k, NOT_TRAINING)}


def config_changes(old: Mapping[str, object], new: Mapping[str, object]) -> dict[str, tuple[object, object]]:
    """Keys whose value differs (a missing key reads ``<unset>``): ``{key: (old, new)}``."""
    unset = "<unset>"
    return {k: (old.get(k, unset), new.get(k, unset)) for k in sorted(set(old) | set(new))
            if old.get(k, unset) != new.get(k, unset)}


def checkpoint_step(path: Path, prefix: str) -> int | None:
    """``checkpoint-12`` -> 12 for ``prefix="checkpoint-"``; None for anything else."""
    rest = path.name[len(prefix):] if path.name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


def list_checkpoints(checkpoint_dir: Path, prefix: str) -> list[Path]:
    """Every ``<prefix><step>`` folder, complete or not, newest first."""
    found = [p for p in Path(checkpoint_dir).glob(f"{prefix}*") if p.is_dir() and checkpoint_step(p, prefix) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p, prefix), reverse=True)


def folder_files(folder: Path) -> dict[str, int]:
    """``{relative path: size}`` of every file under ``folder`` but the marker."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.name != MARKER}


def read_marker(folder: Path) -> dict:
    """The marker of a complete checkpoint.

    Raises:
        CheckpointError: Why ``folder`` is not a complete checkpoint.
    """
    marker = Path(folder) / MARKER
    if not marker.is_file():
        raise CheckpointError(f"{folder}: no {MARKER} (killed while the checkpoint was written, or written by "
                              "an older align).")
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        files = dict(data["files"])
        data["run_id"], data["config"]  # noqa: B018  (required keys)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{marker}: unreadable marker ({e}).") from None
    for name, size in files.items():
        path = Path(folder) / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: {name} is missing (the checkpoint was not completely written).")
        if path.stat().st_size != size:
            raise CheckpointError(f"{folder}: {name} is {path.stat().st_size} bytes, the marker says {size} "
                                  "(truncated or overwritten).")
    return data


@dataclass
class RunState:
    """Who this run is, and where it continues from.

    Attributes:
        stage: The stage name.
        run_id: This run's id (carried over from the checkpoint it resumes).
        config: The training-relevant config (:func:`training_config`).
        resumed_from: The checkpoint folder resumed, or None for a fresh start.
        step: That checkpoint's step (0 when fresh).
        extra: That checkpoint's ``extra`` (the stage's bookkeeping), ``{}`` when fresh.
        skipped: ``(folder name, why)`` of each newer checkpoint that was incomplete.
        accepted: Config keys that differ from the checkpoint's and were accepted by ``resume_allow``.
    """

    stage: str
    run_id: str
    config: dict[str, object]
    resumed_from: Path | None = None
    step: int = 0
    extra: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    accepted: dict[str, tuple[object, object]] = field(default_factory=dict)

    def write_marker(self, folder: Path, step: int, extra: Mapping | None = None) -> None:
        """Mark ``folder`` complete: call after every file of the checkpoint is on disk."""
        data = {"format": FORMAT, "run_id": self.run_id, "stage": self.stage, "step": int(step),
                "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": self.config,
                "accepted_changes": {k: list(v) for k, v in self.accepted.items()},
                "extra": dict(extra or {}), "files": folder_files(folder)}
        atomic_write_text(Path(folder) / MARKER, json.dumps(data, indent=1, default=str) + "\n")

    def metrics(self) -> dict[str, object]:
        """``resume/*`` for metrics.json: what was resumed, skipped and accepted."""
        return {"resume/run_id": self.run_id, "resume/resumed": self.resumed_from is not None,
                "resume/from_step": self.step, "resume/skipped_checkpoints": len(self.skipped),
                "resume/accepted_changes": ",".join(self.accepted) or None}


def start_run(stage: str, config: Mapping, checkpoint_dir: Path, prefix: str, *, resume: bool,
              allow: Iterable[str] = (), main_process: bool = True) -> RunState:
    """Start fresh or resume, the same way in every stage.

    ``resume=false``: the checkpoints of an earlier run in ``checkpoint_dir`` are removed (by the
    main process) and a new run id is drawn. ``resume=true``: the newest complete checkpoint is
    taken (newer incomplete ones are skipped and listed); its config must equal this run's but for
    the keys ``allow`` matches (``fnmatch`` patterns, e.g. ``trainer.learning_rate``).

    Raises:
        CheckpointError: The newest complete checkpoint is another run's (its config differs).
    """
    config = training_config(config)
    allow = list(allow or ())
    checkpoint_dir = Path(checkpoint_dir)
    if not resume:
        old = list_checkpoints(checkpoint_dir, prefix) + list(checkpoint_dir.glob(f".tmp_{prefix}*"))
        if old and main_process:
            log.warning("%s: removing %d checkpoint(s) of an earlier run in %s (resume=false starts a new run; "
                        "resume=true would have continued it)", stage, len(old), checkpoint_dir)
            for path in old:
                shutil.rmtree(path, ignore_errors=True)
        return RunState(stage, uuid.uuid4().hex[:12], config)
    skipped: list[tuple[str, str]] = []
    for path in list_checkpoints(checkpoint_dir, prefix):
        try:
            marker = read_marker(path)
        except CheckpointError as e:
            skipped.append((path.name, str(e).split(": ", 1)[-1]))
            log.warning("%s: skipping incomplete checkpoint %s: %s", stage, path, skipped[-1][1])
            continue
        changes = config_changes(marker["config"], config)
        refused = {k: v for k, v in changes.items() if not _matches(k, allow)}
        if refused:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(refused.items())[:12])
            more = f" (and {len(refused) - 12} more)" if len(refused) > 12 else ""
            raise CheckpointError(
                f"{stage}: resume=true, but the newest complete checkpoint {path} belongs to another run "
                f"(run {marker['run_id']}); its config differs in {len(refused)} key(s): {shown}{more}. "
                f"Fix: resume=false to start a new run here (its old checkpoints are removed), or accept the "
                f"change with resume_allow=[{','.join(refused)}].")
        if changes:
            log.warning("%s: resuming with changed keys (resume_allow): %s", stage,
                        "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()))
        log.info("%s: resuming run %s from %s (step %d)", stage, marker["run_id"], path, marker.get("step", 0))
        return RunState(stage, marker["run_id"], config, path, int(marker.get("step", 0)), dict(marker.get("extra", {})),
                        skipped, changes)
    if skipped:
        log.warning("%s: resume=true but no complete checkpoint in %s (skipped %s): starting fresh", stage,
                    checkpoint_dir, ", ".join(n for n, _ in skipped))
    else:
        log.warning("%s: resume=true but no checkpoint in %s: starting fresh", stage, checkpoint_dir)
    return RunState(stage, uuid.uuid4().hex[:12], config, skipped=skipped)


def free_space_hint(path: Path, err: OSError) -> str:
    """The fix for a failed write: names the folder and the free space when the disk is full."""
    import errno

    if getattr(err, "errno", None) == errno.ENOSPC:
        free = shutil.disk_usage(Path(path).parent if not Path(path).exists() else path).free / 2**20
        return (f"the disk is full ({free:.0f} MiB free on the file system of {path}). Free space, then rerun with "
                "resume=true: the last complete checkpoint is intact.")
    return f"{err.strerror or err} (errno {err.errno}). Check the folder is writable, then rerun with resume=true."


def is_main_env() -> bool:
    """Rank 0 of a launch, read from the environment (before torch.distributed is set up)."""
    return int(os.environ.get("RANK", "0")) == 0
