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


def environment() -> dict[str, object]:
    """What a stage's figures depend on beyond its config: library versions, CPU and threads,
    and the code's git commit (``environment.json`` in every stage folder; docs/reliability.md
    says which of these must match for a rerun to give the same numbers)."""
    import importlib.metadata as md
    import platform
    import subprocess
    from pathlib import Path

    import torch

    env: dict[str, object] = {"python": platform.python_version(), "platform": platform.platform(),
                              "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    for pkg in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "deepspeed", "numpy", "tokenizers"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    try:
        info = Path("/proc/cpuinfo").read_text()
        env["cpu"] = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), None)
        flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
        env["cpu_flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    except OSError:
        env["cpu"] = platform.processor() or None
    root = Path(__file__).resolve().parent.parent
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
        env["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                               capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env
