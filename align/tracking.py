"""Experiment tracking: Weights & Biases (offline automatically without credentials), TensorBoard, or none.

A stage opens one :class:`Tracker` before training. For TRL/Trainer-backed stages the tracker's
``report_to`` goes into the trainer config and the Trainer's own callback logs into the run the
tracker opened (``WandbCallback`` reuses an active ``wandb.run``); custom loops call
:meth:`Tracker.log`. Runs are grouped by run name with ``job_type`` = stage id, so a whole pipeline
(pretrain -> sft -> ...) shows up as one group in W&B.

Offline W&B runs are ordinary run folders under ``<stage dir>/wandb/offline-run-*`` that
``wandb sync`` uploads later.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BACKENDS = ("wandb", "tensorboard", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_has_credentials() -> bool:
    """True when an API key is in the environment or in ``~/.netrc`` (``wandb login`` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> ``online`` with credentials, else ``offline``; ``WANDB_MODE`` in the env wins."""
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.mode={mode!r} is not one of {', '.join(WANDB_MODES)}.")
    env = os.environ.get("WANDB_MODE")
    if mode == "auto" and env:
        return env
    if mode == "auto":
        return "online" if wandb_has_credentials() else "offline"
    return mode


class Tracker:
    """One experiment-tracking run for one stage.

    Args:
        backend: ``wandb``, ``tensorboard`` or ``none``.
        out_dir: The stage's output folder (W&B and TensorBoard files go below it).
        run_name: The pipeline run name (W&B group).
        stage: Stage id (W&B ``job_type``).
        project: W&B project.
        config: The resolved config as a plain dict (stored with the run).
        mode: W&B mode (see :func:`resolve_wandb_mode`).
        tags: Optional W&B tags.
    """

    def __init__(
        self,
        backend: str,
        out_dir: Path,
        run_name: str,
        stage: str,
        project: str = "align",
        config: dict | None = None,
        mode: str = "auto",
        tags: list[str] | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"logger.backend={backend!r} is not one of {', '.join(BACKENDS)}.")
        self.backend = backend
        self.out_dir = Path(out_dir)
        self.run = None
        self._tb = None
        if backend == "wandb":
            import wandb

            resolved = resolve_wandb_mode(mode)
            self.run = wandb.init(
                project=project,
                group=run_name,
                job_type=stage,
                name=f"{run_name}/{stage}",
                dir=str(self.out_dir),
                mode=resolved,
                config=config or {},
                tags=tags,
                reinit="finish_previous",
            )
            log.info("W&B run %s (%s) in %s", self.run.id, resolved, self.run.dir)
        elif backend == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.tb_dir))
            # transformers 5 has no TrainingArguments.logging_dir: its callback reads this.
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.tb_dir)

    @property
    def tb_dir(self) -> Path:
        return self.out_dir / "tensorboard"

    @property
    def report_to(self) -> list[str]:
        """Value for ``TrainingArguments.report_to``."""
        return [] if self.backend == "none" else [self.backend]

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Log scalar metrics (custom loops and end-of-stage evaluation)."""
        if self.run is not None:
            self.run.log(metrics, step=step)
        elif self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, global_step=step)

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        """Log a table of samples (W&B table; TensorBoard gets a markdown text block)."""
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=rows)})
        elif self._tb is not None:
            header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
            body = "".join("| " + " | ".join(str(c).replace("\n", " ") for c in r) + " |\n" for r in rows)
            self._tb.add_text(name, header + body)

    def finish(self, summary: dict | None = None) -> None:
        """Store final metrics as the run summary and close the run."""
        if self.run is not None:
            if summary:
                self.run.summary.update(summary)
            self.run.finish()
            self.run = None
        if self._tb is not None:
            if summary:
                self.log(summary)
            self._tb.close()
            self._tb = None
