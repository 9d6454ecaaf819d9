"""Find the checkpoint a resumed run continues from."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def latest_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest ``checkpoint-<step>`` folder under ``checkpoint_dir``, or None (logged)."""
    ckpts = sorted(Path(checkpoint_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not ckpts:
        log.warning("resume=true but no checkpoint in %s: starting fresh", checkpoint_dir)
        return None
    log.info("resuming from %s", ckpts[-1])
    return str(ckpts[-1])
