"""Tests for align.data.pairs: ranked lists to pairs, worked by hand on K = 4 with a tie."""

from __future__ import annotations

import pytest

from align.data.pairs import PAIR_RULES, to_pairs
from align.data.preferences import RankedExample

USER = [{"role": "user", "content": "q"}]

# K = 4 with a tie: a = c = 1. Sorted best first (ties keep list order): b(3), a(1), c(1), d(0).
K4 = RankedExample(USER, ["a", "b", "c", "d"], [1.0, 3.0, 1.0, 0.0], "test, line 1")


def test_best_vs_worst():
    # b is the best (3), d the worst (0): one pair, gap 3.
    assert to_pairs(K4, "best_vs_worst") == [("b", "d", 3.0)]


def test_best_vs_rest():
    # b against every strictly worse reply, in sorted order: a (3-1), c (3-1), d (3-0).
    assert to_pairs(K4, "best_vs_rest") == [("b", "a", 2.0), ("b", "c", 2.0), ("b", "d", 3.0)]


def test_all_pairs_skips_ties():
    # C(4, 2) = 6 pairs minus the tie (a, c) = 5.
    assert to_pairs(K4, "all_pairs") == [
        ("b", "a", 2.0),
        ("b", "c", 2.0),
        ("b", "d", 3.0),
        ("a", "d", 1.0),
        ("c", "d", 1.0),
    ]


def test_adjacent_pairs_consecutive_score_levels():
    # Levels 3 | 1, 1 | 0: each reply against each of the next level; b-d skips a level.
    assert to_pairs(K4, "adjacent") == [
        ("b", "a", 2.0),
        ("b", "c", 2.0),
        ("a", "d", 1.0),
        ("c", "d", 1.0),
    ]


def test_without_ties_adjacent_is_the_sorted_chain():
    ex = RankedExample(USER, ["w", "x", "y", "z"], [0.5, 2.0, 1.0, 4.0], "t")
    # Sorted: z(4), x(2), y(1), w(0.5).
    assert to_pairs(ex, "adjacent") == [("z", "x", 2.0), ("x", "y", 1.0), ("y", "w", 0.5)]
    assert len(to_pairs(ex, "all_pairs")) == 6


def test_tie_at_the_top():
    ex = RankedExample(USER, ["a", "b", "c"], [2.0, 2.0, 0.0], "t")
    # The best is the first of the highest (a); b is not "worse" than a, so best_vs_rest skips it.
    assert to_pairs(ex, "best_vs_worst") == [("a", "c", 2.0)]
    assert to_pairs(ex, "best_vs_rest") == [("a", "c", 2.0)]
    assert to_pairs(ex, "adjacent") == [("a", "c", 2.0), ("b", "c", 2.0)]


def test_pair_example_gives_one_pair_under_every_rule():
    pair = RankedExample(USER, ["good", "bad"], [1.0, 0.0], "t")
    for rule in PAIR_RULES:
        assert to_pairs(pair, rule) == [("good", "bad", 1.0)]


def test_all_tied_gives_no_pairs_and_unknown_rule_is_refused():
    tied = RankedExample(USER, ["a", "b"], [1.0, 1.0], "t")
    assert all(to_pairs(tied, rule) == [] for rule in PAIR_RULES)
    with pytest.raises(ValueError, match="rule='best' is not supported; pass one of best_vs_worst"):
        to_pairs(K4, "best")
