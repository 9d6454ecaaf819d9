"""Simulated annotators: noise models and the noise ceiling."""

import random

import pytest

from align.farm.annotators import agreement, annotate, strict_pairs


def test_no_noise_returns_gold_and_full_agreement():
    gold = [[1.0, 0.3, 0.0], [0.5, 0.9]]
    labels = [annotate(g, random.Random(0), noise="none") for g in gold]
    assert labels == gold
    assert agreement(labels, gold) == 1.0


def test_flip_rate_matches_pairwise_disagreement_for_k2():
    rng = random.Random(0)
    gold = [[1.0, 0.0]] * 20000
    labels = [annotate(g, rng, noise="flip", flip_rate=0.25) for g in gold]
    # K = 2: the label is flipped with probability exactly 0.25 -> agreement ~0.75.
    assert agreement(labels, gold) == pytest.approx(0.75, abs=0.01)


def test_flip_scores_are_win_counts_and_k4_agreement_is_near_one_minus_rate():
    rng = random.Random(1)
    scores = annotate([0.9, 0.5, 0.2, 0.0], rng, noise="flip", flip_rate=0.0)
    assert scores == [3.0, 2.0, 1.0, 0.0]  # Copeland wins, best first
    gold = [[0.9, 0.5, 0.2, 0.0]] * 5000
    labels = [annotate(g, rng, noise="flip", flip_rate=0.25) for g in gold]
    # Win counts aggregate 3 comparisons per item, so induced pairs agree a bit more than 0.75.
    assert 0.72 < agreement(labels, gold) < 0.85


def test_bt_temperature_controls_noise():
    gold = [[1.0, 0.9, 0.3, 0.0]] * 3000
    cold = [annotate(g, random.Random(i), noise="bt", temperature=0.01) for i, g in enumerate(gold)]
    warm = [annotate(g, random.Random(i), noise="bt", temperature=1.0) for i, g in enumerate(gold)]
    assert agreement(cold, gold) > 0.99
    assert 0.5 < agreement(warm, gold) < 0.8
    assert sorted(cold[0]) == [0.0, 1.0, 2.0, 3.0]  # a strict ranking


def test_bad_arguments():
    with pytest.raises(ValueError, match="noise"):
        annotate([1, 0], random.Random(0), noise="gauss")
    with pytest.raises(ValueError, match="flip_rate"):
        annotate([1, 0], random.Random(0), flip_rate=0.7)
    with pytest.raises(ValueError, match="temperature"):
        annotate([1, 0], random.Random(0), noise="bt", temperature=0)
    assert strict_pairs([1.0, 1.0, 0.0]) == [(0, 2), (1, 2)]
