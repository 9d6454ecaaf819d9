"""The glibc mmap-threshold pin: applied on Linux/glibc, skipped when the user set the env var."""

import sys

import pytest

from align.runtime import fix_mmap_threshold


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_pin_applies_on_glibc_and_respects_the_environment(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert fix_mmap_threshold() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold() is False
