"""The farm: a deterministic, seedable instruction world with a gold oracle.

A tiny language model is trained from scratch on this world, so alignment can be measured
exactly: ``gold_score`` plays the human rater, ``demonstrate`` the imperfect SFT writer, and
``build`` writes the shipped data files (``python -m align.farm.build --out data --seed 0``).
"""

from typing import Any

from align.farm.demonstrator import DemoConfig, demonstrate, perturb
from align.farm.gold import gold_details, gold_score, is_gold_correct, is_gold_perfect
from align.farm.world import FAMILIES, Task, parse_task

__all__ = [
    "FAMILIES",
    "DemoConfig",
    "Task",
    "build",
    "demonstrate",
    "gold_details",
    "gold_score",
    "is_gold_correct",
    "is_gold_perfect",
    "parse_task",
    "perturb",
]


def __getattr__(name: str) -> Any:
    # ``build`` is imported on first use so that ``python -m align.farm.build`` does not find
    # its own module already imported (runpy warns about that).
    if name == "build":
        from align.farm.build import build

        globals()["build"] = build  # the submodule import bound the module here; rebind
        return build
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
