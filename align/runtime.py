"""Process-level memory: the peak-RSS figure every stage and bench reports, and memory care for
a long training loop on CPU.

glibc's malloc keeps memory that a loop frees: it raises its mmap threshold each time a large
block is freed (the dynamic threshold), so later blocks of that size come from the heap, and freed
heap pages mostly stay resident. In PPO, which allocates and frees activation-sized tensors in
every rollout and every update, resident memory then grows iteration after iteration: about
+230 MB per iteration on a 43M-parameter model here.

Two fixes were measured (``docs/ppo_benchmark.md``):

- pinning the mmap threshold (``mallopt``) keeps the peak flat, but every large tensor then
  costs fresh zeroed pages: PPO ran 2.5x slower on the default model;
- ``malloc_trim(0)`` between phases returns the freed pages, at a cost of milliseconds per call.

:func:`release_free_memory` does the second. It is a no-op where glibc is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018  (glibc only; musl has none)
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC or None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def release_free_memory() -> bool:
    """Hand memory that malloc holds but no tensor uses back to the OS (``malloc_trim(0)``).

    Returns:
        Whether anything was released (False where glibc is absent).
    """
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
