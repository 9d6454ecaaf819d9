"""Type and range checks of the config keys each stage reads, before any work starts.

PLACEHOLDER: filled in by the config-checks change (issue 14 item 9); see align/cli.py.
"""

from __future__ import annotations


def check_config(cfg) -> None:
    """Raise :class:`align.errors.ConfigError` naming the key, its value and a fix."""
    return None
