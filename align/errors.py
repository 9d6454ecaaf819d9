"""The errors the pipeline raises on purpose: each says what is wrong, where, and how to fix it.

Every stage's command line (:mod:`align.cli`) prints an :class:`AlignError` as its message alone
(the traceback goes to the stage log, and to the console with ``ALIGN_DEBUG=1``). The classes
subclass the built-in error a caller would catch anyway (``ValueError``, ``RuntimeError``), so
``except ValueError`` keeps working.

- :class:`ConfigError`: a config key has a wrong type or value; names the key and a fix.
- :class:`CheckpointError`: a checkpoint or model folder cannot be used (incomplete, another
  run's, another architecture, newly initialised weights).
- :class:`NonFiniteError`: training produced a non-finite loss, gradient norm or weight.
- :class:`align.data.errors.DataError`: a bad input row (file, row, field).
"""

from __future__ import annotations


class AlignError(Exception):
    """Base class: an error whose message is complete for the user (no traceback needed)."""


class ConfigError(AlignError, ValueError):
    """A config key with a wrong type or value (the message names the key and a fix)."""


class CheckpointError(AlignError, RuntimeError):
    """A checkpoint or model folder that cannot be resumed from or loaded as asked."""


class NonFiniteError(AlignError, RuntimeError):
    """A non-finite loss, gradient norm or weight: the run stops before it is saved."""

    def __init__(self, stage: str, step: int | None, what: str, value: float, hint: str = "") -> None:
        self.stage, self.step, self.what, self.value = stage, step, what, value
        if step is None:  # a model read from disk, not a training step
            hint = hint or ("The folder holds a diverged model: retrain it (a lower learning rate, more warm-up "
                            "or gradient clipping), or point to another checkpoint.")
            super().__init__(f"{stage}: non-finite {what} ({value}); refused before use. {hint}")
            return
        hint = hint or ("Lower the learning rate (or raise warm-up / gradient clipping); the last good "
                        "checkpoint is kept and resume=true continues from it.")
        super().__init__(f"{stage}: non-finite {what} ({value}) at step {step}; stopped before saving it. {hint}")
