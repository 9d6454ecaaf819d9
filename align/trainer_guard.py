"""What every Hugging Face Trainer-based stage (pretrain, sft, rm, dpo) adds to its trainer.

:class:`TrainingGuard` is one ``TrainerCallback``:

- before each optimizer step it checks the step's loss and gradients: a non-finite value stops
  the run (:class:`align.errors.NonFiniteError`, with stage, step and value) *before* the
  optimizer applies it, so the weights in memory and every checkpoint on disk stay finite;
- after each checkpoint is written it checks the weights and writes the checkpoint's marker
  (:mod:`align.checkpoints`): run id, training config, file sizes, and the loss sum so far;
- :meth:`TrainingGuard.train_loss` and :meth:`TrainingGuard.steps` give a resumed run the same
  ``train/loss`` and ``train/steps`` as an uninterrupted one (HF averages only the resumed part).

The trainer must be built with :data:`GUARD_ARGS` (HF's ``logging_nan_inf_filter`` would
otherwise replace a NaN loss by the running mean, which hides it). The loss is read from the
trainer's ``_tr_loss`` accumulator (transformers 5.x; ``tests/unit/test_trainer_guard.py`` fails
when that changes).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from transformers import TrainerCallback

from align.checkpoints import RunState
from align.errors import NonFiniteError

log = logging.getLogger(__name__)

GUARD_ARGS = {"logging_nan_inf_filter": False}
PREFIX = "checkpoint-"


def first_non_finite(tensors) -> tuple[str, float] | None:
    """``(name, value)`` of the first named tensor holding a NaN or inf, else None."""
    for name, t in tensors:
        if t is not None and t.numel() and not bool(torch.isfinite(t).all()):
            bad = t[~torch.isfinite(t)].flatten()[0].item()
            return name, bad
    return None


def check_finite_weights(model: torch.nn.Module, stage: str, step: int | None, what: str = "weights") -> None:
    """Refuse a model with a NaN or inf parameter: before it is saved (``step``: the training
    step), or before a model read from disk is used (``step=None``).

    Raises:
        NonFiniteError: Naming the first such parameter.
    """
    bad = first_non_finite((n, p.detach()) for n, p in model.named_parameters())
    if bad is not None:
        raise NonFiniteError(stage, step, f"{what} ({bad[0]})", bad[1])


def _is_deepspeed(model) -> bool:
    return hasattr(model, "ds_config") or type(model).__module__.startswith("deepspeed")


class TrainingGuard(TrainerCallback):
    """NaN/inf guard, checkpoint markers and resume-exact loss bookkeeping (see the module docstring)."""

    def __init__(self, run_state: RunState) -> None:
        self.run = run_state
        self.carried_loss = float(run_state.extra.get("loss_sum", 0.0))  # sum of step losses before this call
        self.trainer = None

    def bind(self, trainer) -> TrainingGuard:
        """Attach to the trainer whose loss accumulator this guard reads."""
        self.trainer = trainer
        return self

    # -- the checks ---------------------------------------------------------------------------
    def _loss_so_far(self) -> float:
        """Sum of the step losses of this ``train()`` call so far (HF's own two accumulators)."""
        t = self.trainer
        pending = t._tr_loss.item() if torch.is_tensor(getattr(t, "_tr_loss", None)) else 0.0
        return float(getattr(t, "_total_loss_scalar", 0.0)) + pending

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step = state.global_step + 1
        loss = getattr(self.trainer, "_tr_loss", None)
        if loss is not None and not bool(torch.isfinite(loss).all()):
            raise NonFiniteError(self.run.stage, step, "training loss", float(loss.item()))
        if model is not None and not _is_deepspeed(self.trainer.model_wrapped):  # DeepSpeed holds partitioned grads
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if grads:
                norm = torch.nn.utils.get_total_norm(grads)
                if not math.isfinite(norm.item()):
                    raise NonFiniteError(self.run.stage, step, "gradient norm", norm.item())
        return control

    def on_save(self, args, state, control, model=None, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's shards are on disk before the marker says so
        if not state.is_world_process_zero:
            return control
        folder = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
        if model is not None and not _is_deepspeed(self.trainer.model_wrapped):
            check_finite_weights(model, self.run.stage, state.global_step, "weights of the checkpoint")
        if folder.is_dir():
            self.run.write_marker(folder, state.global_step, {"loss_sum": self.carried_loss + self._loss_so_far()})
        return control

    # -- resume-exact figures -----------------------------------------------------------------
    def train_loss(self, train_out) -> float:
        """Mean step loss over *all* steps of the run, resumed or not (HF's ``training_loss``
        covers only the steps of the last ``train()`` call)."""
        steps = int(train_out.global_step)
        trained_now = steps - self.run.step
        if steps <= 0:
            return float(train_out.training_loss)
        return (self.carried_loss + float(train_out.training_loss) * trained_now) / steps
