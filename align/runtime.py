"""Process-level settings that a long training loop on CPU needs.

glibc's malloc serves large blocks with ``mmap`` and returns them to the OS on ``free``, but it
*raises* its mmap threshold each time such a block is freed (the dynamic threshold), so later
blocks of that size come from the heap instead. Freed heap memory rarely goes back. In a loop that
allocates and frees activation-sized tensors every iteration (PPO: rollout, then update), resident
memory then grows iteration after iteration: +230 MB per iteration on a 43M-parameter model here.
A fixed threshold keeps large tensors on ``mmap`` and the peak flat (measured:
``docs/ppo_benchmark.md``). ``MALLOC_MMAP_THRESHOLD_`` in the environment does the same from outside.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
DEFAULT_THRESHOLD = 128 * 1024


def fix_mmap_threshold(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold (Linux only; a no-op elsewhere or when the env var is set).

    Returns:
        Whether the setting was applied.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        applied = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to pin
        return False
    if applied:
        log.info("glibc mmap threshold pinned at %d bytes (keeps peak memory flat across iterations)", threshold)
    return applied
