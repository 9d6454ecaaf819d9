"""malloc_trim between PPO phases: freed tensor memory goes back to the OS."""

import re
import sys

import pytest
import torch

from align.runtime import release_free_memory


def _rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_release_returns_freed_heap_memory():
    # Many mid-sized tensors (below the mmap threshold: heap-allocated), kept one in two so the
    # heap cannot simply shrink from the top when the rest is freed.
    keep, drop = [], []
    for i in range(400):
        (keep if i % 2 else drop).append(torch.ones(16_000))  # 64 kB each
    del drop  # 200 x 64 kB holes between live tensors: free() alone cannot return them
    before = _rss_mb()
    assert release_free_memory() is True
    assert before - _rss_mb() > 5  # most of the 12.5 MB of holes went back to the OS
    assert len(keep) == 200
