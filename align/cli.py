"""Every stage's command line: Hydra's ``main``, the config check, and errors as messages.

``stages/<stage>.py`` ends with ``main = stage_main("<stage>", run)``. Before ``run(cfg)``
starts, :func:`align.config_checks.check_config` checks the types and ranges of the config
keys the stage reads (so ``trainer.learning_rate=abc`` names its key, not a torch internal).
When the stage fails, the user sees one message (``error: <stage>: ...``) and exit status 1; the
full traceback goes to the stage log (``outputs/<run>/<stage>/<stage>.log``), and with
``ALIGN_DEBUG=1`` to the console as well (the exception is re-raised). Under a Hydra multirun the
exception is re-raised for the sweeper, which records the job as failed.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from align.config import REPO_ROOT

log = logging.getLogger("align")


def debug_enabled() -> bool:
    """``ALIGN_DEBUG=1`` (or any value but ``0``/empty): show tracebacks."""
    return os.environ.get("ALIGN_DEBUG", "") not in ("", "0")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def report_failure(stage: str, err: BaseException) -> str:
    """Log ``err``'s traceback at DEBUG level (it reaches the stage log file) and its message
    at ERROR; return the one-line message shown to the user."""
    from align.errors import AlignError

    text = str(err) if isinstance(err, AlignError) else f"{type(err).__name__}: {err}"
    text = text if text.startswith(f"{stage}: ") else f"{stage}: {text}"  # not "rm.gate...: " of stage rm
    detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    for handler in logging.getLogger().handlers:  # the log file keeps message and traceback; the console gets the message
        if getattr(handler, "baseFilename", None):
            handler.handle(logging.LogRecord(f"align.{stage}", logging.ERROR, __file__, 0, "%s\ntraceback:\n%s",
                                             (text, detail), None))
    return text


def stage_main(stage: str, run: Callable[[DictConfig], float]) -> Callable[[], float]:
    """The ``@hydra.main`` entry point of ``stages/<stage>.py`` (config ``conf/<stage>.yaml``)."""

    @hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name=stage)
    def main(cfg: DictConfig) -> float:
        from align.config_checks import check_config

        try:
            check_config(cfg)
            return run(cfg)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001  (every failure becomes a message; the traceback is logged)
            if debug_enabled() or _in_multirun():
                raise
            message = report_failure(stage, err)
            print(f"error: {message}\n(the traceback is in the stage log; ALIGN_DEBUG=1 prints it)", file=sys.stderr)
            raise SystemExit(1) from None

    main.__name__ = f"{stage}_main"
    return main
