"""The RM report card: hand-worked values (in comments), and a reliability diagram that shows data."""

import math

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from align.rm.metrics import (
    expected_calibration_error,
    length_correlation,
    list_bootstrap_interval,
    mean_margin,
    pair_credit,
    pairwise_accuracy,
    reliability_diagram,
    reward_stats,
    symmetrize,
    top1_accuracy,
)


def test_pairwise_accuracy_and_margin():
    # (3 > 1) right, (1 = 1) tie -> 1/2, (2 < 5) wrong: (1 + 0.5 + 0) / 3 = 0.5
    chosen, rejected = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 5.0])
    assert pairwise_accuracy(chosen, rejected) == pytest.approx(0.5)
    # margins 2, 0, -3 -> mean -1/3
    assert mean_margin(chosen, rejected) == pytest.approx(-1 / 3)
    assert pairwise_accuracy([3, 1, 2], [1, 1, 5]) == pytest.approx(0.5)  # plain lists work too
    with pytest.raises(ValueError, match="must match"):
        pairwise_accuracy([1.0, 2.0], [1.0])


def test_ece_hand_worked():
    # bin 9 (p = 0.9): labels 1, 0 -> frequency 0.5, |0.5 - 0.9| = 0.4, weight 2/4
    # bin 6 (p = 0.6): labels 1, 1 -> frequency 1.0, |1.0 - 0.6| = 0.4, weight 2/4
    # ECE = 0.5 * 0.4 + 0.5 * 0.4 = 0.4
    probs, labels = torch.tensor([0.9, 0.9, 0.6, 0.6]), torch.tensor([1, 0, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    # One bin: mean p = 0.75, frequency 0.75 -> 0
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.0)
    # Calibrated within its bin: 10 pairs at p = 0.7, 7 of them preferred -> 0
    assert expected_calibration_error([0.7] * 10, [1] * 7 + [0] * 3) == pytest.approx(0.0, abs=1e-12)


def test_ece_edges_and_errors():
    # p = 1 joins the last bin: a wrong confident prediction has ECE |0 - 1| = 1.
    assert expected_calibration_error([1.0], [0]) == pytest.approx(1.0)
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="raw rewards"):
        expected_calibration_error([2.5], [1])
    with pytest.raises(ValueError, match="0 or 1"):
        expected_calibration_error([0.5], [2])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0.5], [1], n_bins=0)


def test_symmetrize():
    # (0.8, 1) -> adds (0.2, 0). ECE: bin 8 |1 - 0.8| = 0.2, bin 2 |0 - 0.2| = 0.2 -> 0.2
    p, y = symmetrize(torch.tensor([0.8]), torch.tensor([1]))
    torch.testing.assert_close(p, torch.tensor([0.8, 0.2], dtype=torch.float64))
    torch.testing.assert_close(y, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert expected_calibration_error(p, y) == pytest.approx(0.2)


def test_reliability_diagram_is_a_real_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    margins = torch.randn(400, generator=g) * 2
    probs = torch.sigmoid(margins)
    labels = (torch.rand(400, generator=g) < torch.sigmoid(margins * 0.5)).long()  # overconfident RM
    out = reliability_diagram(*symmetrize(probs, labels), tmp_path / "plots" / "calibration.png")
    data = out.read_bytes()
    assert out.parent.name == "plots"
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < len(data) < 2_000_000
    image = imread(out)  # [H, W, 4] floats
    assert image.shape[:2] == (600, 500)
    assert image.std() > 0.05  # not a blank frame
    colours = np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20  # bars, dots, diagonal, text


def test_length_correlation():
    # x = [1, 2, 3, 4], y = [1, 3, 2, 4]: deviations [-1.5, -.5, .5, 1.5] and [-1.5, .5, -.5, 1.5];
    # sum of products = 2.25 - .25 - .25 + 2.25 = 4; sums of squares 5 and 5 -> r = 4 / 5 = 0.8
    assert length_correlation([1.0, 2.0, 3.0, 4.0], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert length_correlation(torch.tensor([1.0, 2.0, 3.0]), [30, 20, 10]) == pytest.approx(-1.0)
    # Monotone but not linear: Spearman 1, Pearson below 1. Pearson: mean length 277.75, deviations
    # [-276.75, -267.75, -177.75, 722.25]; sum of products 1543.5, sums of squares 5 and 701520.75
    # -> 1543.5 / sqrt(5 * 701520.75) = 0.824141
    rewards, lengths = [1.0, 2.0, 3.0, 4.0], [1, 10, 100, 1000]
    assert length_correlation(rewards, lengths, method="spearman") == pytest.approx(1.0)
    assert length_correlation(rewards, lengths) == pytest.approx(0.824141, abs=1e-6)
    # Spearman with a tie: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]; against [1, 2, 3, 4]:
    # deviations [-1.5, 0, 0, 1.5] and [-1.5, -.5, .5, 1.5]: 4.5 / sqrt(4.5 * 5) = 0.948683
    assert length_correlation([1.0, 2.0, 2.0, 3.0], [1, 2, 3, 4], "spearman") == pytest.approx(0.948683, abs=1e-6)


def test_length_correlation_undefined_is_nan():
    assert math.isnan(length_correlation([1.0, 2.0, 3.0], [5, 5, 5]))  # constant lengths
    assert math.isnan(length_correlation([2.0], [7]))
    with pytest.raises(ValueError, match="spearman"):
        length_correlation([1.0, 2.0], [1, 2], method="kendall")


def test_top1_accuracy():
    # Prompt 0: argmax reward = response 1; gold best = {1, 2} (tie) -> 1.
    # Prompt 1: argmax reward = response 0; gold best = {2} -> 0.
    rewards = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 0.0]])
    gold = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    assert top1_accuracy(rewards, gold) == pytest.approx(0.5)


def test_top1_accuracy_padding_and_reward_ties():
    # Prompt 0: the padded response has the highest reward and gold but is ignored; argmax of
    #   [1, 2] is response 1, gold best of [0, 1] is response 1 -> 1.
    # Prompt 1: rewards tie for best on responses 0 and 1, only 0 is gold best -> 1/2.
    # Prompt 2: a single real response, nothing chosen -> skipped.   Mean (1 + 0.5) / 2 = 0.75
    rewards = torch.tensor([[1.0, 2.0, 9.0], [2.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    gold = torch.tensor([[0.0, 1.0, 9.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    assert top1_accuracy(rewards, gold, mask) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="two or more"):
        top1_accuracy(rewards[2:], gold[2:], mask[2:])
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        top1_accuracy(rewards, gold[:, :2])


def test_reward_stats():
    # [1, 2, 3, 4]: mean 2.5; population variance (2.25 + .25 + .25 + 2.25) / 4 = 1.25 -> std 1.118034
    stats = reward_stats(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert stats == pytest.approx({"mean": 2.5, "std": 1.118034, "min": 1.0, "max": 4.0}, abs=1e-6)
    assert reward_stats([3.0])["std"] == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        reward_stats([])


def test_pair_credit_counts_a_tie_half():
    assert pair_credit([2.0, 1.0, 1.0], [1.0, 1.0, 3.0]).tolist() == [1.0, 0.5, 0.0]
    assert pairwise_accuracy([2.0, 1.0, 1.0], [1.0, 1.0, 3.0]) == pytest.approx(0.5)  # its mean


def test_list_bootstrap_resamples_lists_not_pairs():
    # 20 lists of 6 pairs, each list all right or all wrong: 20 independent observations, not 120.
    # The accuracy is 0.5 with standard error sqrt(0.25 / 20) = 0.112, so the 95% interval is about
    # 0.5 +- 0.22 (width 0.44); resampling the 120 pairs would give 0.5 +- 0.09 (width 0.18).
    low, high = list_bootstrap_interval([6.0] * 10 + [0.0] * 10, [6] * 20)
    assert low < 0.5 < high and 0.35 < high - low < 0.55


def test_list_bootstrap_with_one_pair_per_list_is_the_binomial_interval():
    # 400 lists of one pair, 300 right: p = 0.75, standard error sqrt(0.75 * 0.25 / 400) = 0.0217,
    # so the normal interval is 0.75 +- 1.96 * 0.0217 = [0.708, 0.792] (width 0.085).
    low, high = list_bootstrap_interval([1.0] * 300 + [0.0] * 100, [1] * 400)
    assert low == pytest.approx(0.708, abs=0.01) and high == pytest.approx(0.792, abs=0.01)
    assert list_bootstrap_interval([1.0] * 300 + [0.0] * 100, [1] * 400) == (low, high)  # seeded
    assert list_bootstrap_interval([1.0] * 300 + [0.0] * 100, [1] * 400, seed=1) != (low, high)
    # One list: every resample is that list, so the interval is its own accuracy (a tie's 1/2 included).
    assert list_bootstrap_interval([1.5], [2]) == (0.75, 0.75)


def test_list_bootstrap_edges_and_errors():
    assert list_bootstrap_interval([3.0, 1.0], [3, 1]) == (1.0, 1.0)  # every pair right: nothing to vary
    a = list_bootstrap_interval([1.0] * 30 + [0.0] * 10, [1] * 40, level=0.5)
    b = list_bootstrap_interval([1.0] * 30 + [0.0] * 10, [1] * 40, level=0.99)
    assert b[0] < a[0] < 0.75 < a[1] < b[1]  # a higher level is wider
    with pytest.raises(ValueError, match="pairs > 0"):
        list_bootstrap_interval([0.0], [0])
    with pytest.raises(ValueError, match="credit <= pairs"):
        list_bootstrap_interval([2.0], [1])
    with pytest.raises(ValueError, match="level"):
        list_bootstrap_interval([1.0], [1], level=1.0)
