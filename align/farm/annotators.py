"""Simulated annotators: rank candidate responses by the gold score, with controlled noise.

Human preference labels are noisy; AlpacaFarm (Dubois et al. 2023) injects 25% label flips into
its simulated annotators to match human disagreement. Two noise models are offered:

* ``flip`` (rate ``p``): the annotator compares every pair of candidates by gold score and flips
  each comparison independently with probability ``p`` (a pair with equal gold is ordered by a
  fair coin). The ranking is the number of comparisons each candidate wins (its Copeland score),
  so equal win counts are ties. For K = 2 this is exactly "flip the label with probability p".
* ``bt`` (temperature ``t``): the annotator samples a full ranking from the Plackett-Luce model
  with utilities ``gold / t`` (Bradley-Terry for K = 2): P(i above j) = sigmoid((g_i - g_j) / t).

:func:`agreement` measures the *noise ceiling*: how often the annotator's strict pairwise
preferences agree with gold over the pairs where gold has a strict preference. A reward model
trained on these labels is measured against gold, so the ceiling says how much of its accuracy
the labels themselves could explain.
"""

from __future__ import annotations

import math
import random
from itertools import combinations

NOISE_MODELS = ("flip", "bt", "none")


def annotate(
    gold: list[float], rng: random.Random, noise: str = "flip", flip_rate: float = 0.25, temperature: float = 0.1
) -> list[float]:
    """Annotator scores (higher is better; ties possible) for candidates with these gold scores.

    Args:
        gold: Gold scores of the K candidates of one prompt.
        rng: Random source (the only one used).
        noise: ``flip``, ``bt`` or ``none`` (the gold scores themselves).
        flip_rate: Probability of flipping each pairwise comparison (``flip``).
        temperature: Plackett-Luce temperature on the gold scale (``bt``).

    Returns:
        One score per candidate: win counts (``flip``), K-1-position (``bt``) or gold (``none``).

    Raises:
        ValueError: Unknown noise model or a rate/temperature out of range.
    """
    if noise not in NOISE_MODELS:
        raise ValueError(f"prefs.noise={noise!r} is not one of {', '.join(NOISE_MODELS)}.")
    if not 0.0 <= flip_rate <= 0.5:
        raise ValueError(f"prefs.flip_rate={flip_rate} must be in [0, 0.5] (0.5 is a coin flip).")
    if temperature <= 0:
        raise ValueError(f"prefs.temperature={temperature} must be > 0.")
    if noise == "none":
        return list(gold)
    k = len(gold)
    if noise == "flip":
        wins = [0.0] * k
        for i, j in combinations(range(k), 2):
            i_better = gold[i] > gold[j] if gold[i] != gold[j] else rng.random() < 0.5
            if rng.random() < flip_rate:
                i_better = not i_better
            wins[i if i_better else j] += 1
        return wins
    # bt: sequential Plackett-Luce sampling, best first.
    remaining, order = list(range(k)), []
    while remaining:
        weights = [math.exp(gold[i] / temperature) for i in remaining]
        pick = rng.choices(remaining, weights=weights)[0]
        order.append(pick)
        remaining.remove(pick)
    scores = [0.0] * k
    for position, i in enumerate(order):
        scores[i] = float(k - 1 - position)
    return scores


def strict_pairs(scores: list[float]) -> list[tuple[int, int]]:
    """Index pairs (better, worse) with a strict preference under ``scores``."""
    out = []
    for i, j in combinations(range(len(scores)), 2):
        if scores[i] > scores[j]:
            out.append((i, j))
        elif scores[j] > scores[i]:
            out.append((j, i))
    return out


def agreement(labels: list[list[float]], gold: list[list[float]]) -> float:
    """Share of gold-strict pairs that the labels order the same way (label ties count half).

    Args:
        labels: Annotator scores per prompt.
        gold: Gold scores per prompt (same shapes).

    Returns:
        The agreement in [0, 1], or NaN when gold has no strict pair at all.
    """
    agree, total = 0.0, 0
    for lab, gol in zip(labels, gold, strict=True):
        for better, worse in strict_pairs(gol):
            total += 1
            agree += 1.0 if lab[better] > lab[worse] else 0.5 if lab[better] == lab[worse] else 0.0
    return agree / total if total else float("nan")
