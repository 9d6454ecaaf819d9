"""Tests for align.data.pairs: ranked lists to pairs, worked by hand on K = 4 with a tie."""

from __future__ import annotations

import pytest

from align.data.pairs import PAIR_RULES, pairs_dataset, to_pairs
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


def test_pairs_dataset_is_trl_conversational_explicit_prompt():
    multi = [*USER, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    pair = RankedExample(multi, ["good", "bad"], [1.0, 0.0], "t")
    ds = pairs_dataset([K4, pair], "best_vs_rest")
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    assert len(ds) == 3 + 1
    assert ds[0] == {
        "prompt": USER,
        "chosen": [{"role": "assistant", "content": "b"}],
        "rejected": [{"role": "assistant", "content": "a"}],
    }
    assert ds[3]["prompt"] == multi


def test_pairs_dataset_plain_text_and_margin():
    a = RankedExample(USER, ["good", "bad"], [1.0, 0.0], "t", margin=2.0)
    b = RankedExample(USER, ["ok", "worse"], [1.0, 0.0], "t", margin=0.5)
    ds = pairs_dataset([a, b], "best_vs_worst", conversational=False)
    assert ds[0] == {"prompt": "q", "chosen": "good", "rejected": "bad", "margin": 2.0}
    assert ds["margin"] == [2.0, 0.5]
    # Without a margin on every example there is no margin column.
    assert "margin" not in pairs_dataset([a, K4], "best_vs_worst").column_names
    multi = RankedExample([*USER, *USER], ["x", "y"], [1.0, 0.0], "f.jsonl, line 3")
    with pytest.raises(ValueError, match="f.jsonl, line 3: the prompt has 2 messages"):
        pairs_dataset([multi], "all_pairs", conversational=False)


def test_pairs_dataset_with_no_pairs_is_an_error():
    tied = RankedExample(USER, ["a", "b"], [1.0, 1.0], "t")
    with pytest.raises(ValueError, match="no pairs from 1 examples"):
        pairs_dataset([tied], "all_pairs")
