"""Turn ranked preference lists into (chosen, rejected) pairs for pairwise trainers.

A :class:`~align.data.preferences.RankedExample` holds K candidate replies with scores (higher
is better, ties allowed). Pairwise objectives (Bradley-Terry reward models, DPO) need pairs.
The rules, for replies sorted by score from best to worst (equal scores keep their order in the
list); a pair always has a strictly higher-scored chosen reply, so ties never make a pair:

* ``best_vs_worst``: one pair, the best reply against the worst. The best is the first reply
  with the highest score, the worst the first with the lowest: the widest margin, one pair
  per prompt.
* ``best_vs_rest``: the best reply against every reply scored strictly lower (K-1 pairs when
  there is no tie at the top).
* ``all_pairs``: every strictly ordered pair, C(K, 2) minus the tied ones: what InstructGPT
  trains its reward model on from rankings of K = 4..9 replies (Ouyang et al. 2022, sec. 3.5,
  eq. 1).
* ``adjacent``: pairs between consecutive score levels: every reply of one level against every
  reply of the next lower level. Without ties, this is each reply against the next one in the
  sorted order (K-1 pairs); with ties, a tied group is never split by its order in the list.

Worked example (K = 4, one tie), scores ``a=1, b=3, c=1, d=0``; sorted: ``b, a, c, d``::

    best_vs_worst  (b, d, 3)
    best_vs_rest   (b, a, 2) (b, c, 2) (b, d, 3)
    all_pairs      (b, a, 2) (b, c, 2) (b, d, 3) (a, d, 1) (c, d, 1)      # a = c: no pair
    adjacent       (b, a, 2) (b, c, 2) (a, d, 1) (c, d, 1)                # levels 3 | 1 | 0

Each pair is ``(chosen, rejected, gap)`` with ``gap = score[chosen] - score[rejected] > 0``.
"""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING

from align.data.errors import check_choice

if TYPE_CHECKING:
    from align.data.preferences import RankedExample

PAIR_RULES = ("best_vs_worst", "best_vs_rest", "all_pairs", "adjacent")

Pair = tuple[str, str, float]


def to_pairs(example: RankedExample, rule: str) -> list[Pair]:
    """The ``(chosen, rejected, score_gap)`` pairs of ``example`` under ``rule``.

    Args:
        example: A ranked example (K >= 2 responses with scores, higher is better).
        rule: One of :data:`PAIR_RULES` (see the module docstring).

    Returns:
        The pairs, best chosen first; empty when every score is equal.

    Raises:
        ValueError: Unknown ``rule``.
    """
    check_choice("rule", rule, PAIR_RULES)
    responses, scores = example.responses, [float(s) for s in example.scores]
    assert len(responses) == len(scores), (len(responses), len(scores))
    # Stable sort: equal scores keep their order in the list.
    order = sorted(range(len(scores)), key=lambda i: -scores[i])

    def pair(i: int, j: int) -> Pair:
        return responses[i], responses[j], scores[i] - scores[j]

    if rule == "best_vs_worst":
        best = max(range(len(scores)), key=lambda i: scores[i])  # first of the highest
        worst = min(range(len(scores)), key=lambda i: scores[i])  # first of the lowest
        return [pair(best, worst)] if scores[best] > scores[worst] else []
    if rule == "best_vs_rest":
        best = order[0]
        return [pair(best, j) for j in order[1:] if scores[j] < scores[best]]
    if rule == "all_pairs":
        return [
            pair(i, j) for n, i in enumerate(order) for j in order[n + 1 :] if scores[j] < scores[i]
        ]
    levels = [list(group) for _, group in groupby(order, key=lambda i: scores[i])]
    return [pair(i, j) for upper, lower in zip(levels, levels[1:]) for i in upper for j in lower]
