"""Score a policy's responses on farm prompts with the gold oracle."""

from __future__ import annotations

import math
from collections import defaultdict

from align.eval.metrics import win_rate
from align.farm import gold_details, parse_task
from align.generation import Generations


def gold_metrics(prompts: list[str], gens: Generations, prefix: str = "gold/") -> dict[str, float]:
    """Summarise gold scores of ``gens`` (one response per prompt).

    Returns:
        ``{prefix}score_mean``, ``{prefix}score_sem`` (standard error of the mean),
        ``{prefix}correct_frac`` (right on content, ``is_gold_correct``), ``{prefix}perfect_frac``
        (score >= 0.99) and ``{prefix}score/<family>`` per task family. Lengths are not gold:
        :func:`align.eval.policy.generation_metrics`.
    """
    if len(prompts) != len(gens.texts):
        raise ValueError(f"{len(prompts)} prompts but {len(gens.texts)} responses.")
    if not prompts:
        raise ValueError("gold_metrics needs at least one prompt.")
    details = [gold_details(p, r) for p, r in zip(prompts, gens.texts)]
    scores = [d["score"] for d in details]
    n = len(scores)
    mean = sum(scores) / n
    var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    by_family: dict[str, list[float]] = defaultdict(list)
    for p, s in zip(prompts, scores):
        by_family[parse_task(p).family].append(s)
    out = {
        f"{prefix}score_mean": mean,
        f"{prefix}score_sem": math.sqrt(var / n),
        f"{prefix}correct_frac": sum(d["correctness"] == 1.0 and d["score"] > 0 for d in details) / n,
        f"{prefix}perfect_frac": sum(s >= 0.99 for s in scores) / n,
    }
    for fam, vals in sorted(by_family.items()):
        out[f"{prefix}score/{fam}"] = sum(vals) / len(vals)
    return out


def sample_rows(prompts: list[str], gens: Generations, k: int = 8) -> list[list]:
    """The first ``k`` (prompt, response, gold score) rows, for a samples table."""
    return [[p, r, round(gold_details(p, r)["score"], 3)] for p, r in list(zip(prompts, gens.texts))[:k]]


def gold_win_rate(prompts: list[str], texts: list[str], baseline_texts: list[str]) -> float:
    """Fraction of prompts where ``texts`` scores higher under the gold oracle than ``baseline_texts``.

    Ties count half (AlpacaFarm's win rate), so two identical policies score exactly 0.5.
    """
    if not (len(prompts) == len(texts) == len(baseline_texts)) or not prompts:
        raise ValueError(
            f"gold_win_rate needs one response per prompt from each policy; got {len(prompts)} prompts, "
            f"{len(texts)} and {len(baseline_texts)} responses."
        )
    return win_rate([gold_details(p, a)["score"] for p, a in zip(prompts, texts)],
                    [gold_details(p, b)["score"] for p, b in zip(prompts, baseline_texts)])
