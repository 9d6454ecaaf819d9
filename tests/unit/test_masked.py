"""Masked statistics: hand-worked values (in comments), padding never leaks, low precision upcast."""

import math

import pytest
import torch

from align.masked import masked_mean, masked_sequence_sum, masked_var, masked_whiten
from tests.unit.helpers import random_batch

# ---------------------------------------------------------------------------- masked statistics


def test_masked_mean_var_match_torch_on_selected():
    x, _, mask = random_batch()
    sel = x[mask]
    torch.testing.assert_close(masked_mean(x, mask), sel.mean())
    torch.testing.assert_close(masked_var(x, mask), sel.var(unbiased=True))
    torch.testing.assert_close(masked_var(x, mask, unbiased=False), sel.var(unbiased=False))
    # Per-row means: row 1 has one real token, so its mean is that token.
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.stack([row[m].mean() for row, m in zip(x, mask)]))


def test_masked_mean_hand_worked_and_padding_ignored():
    # Selected [1, 3] and [5]: global mean (1 + 3 + 5) / 3 = 3; row means [2, 5, 0 (empty row)].
    # Unbiased variance: ((1-3)^2 + 0 + (5-3)^2) / (3 - 1) = 8 / 2 = 4.
    nan = float("nan")
    x = torch.tensor([[1.0, 3.0, nan], [5.0, 1e9, nan], [nan, nan, nan]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([2.0, 5.0, 0.0]))
    assert masked_var(x, mask).item() == pytest.approx(4.0)
    # Whitened: (x - 3) / sqrt(4 + 1e-8) -> [-1, 0] and [1]; padding -> 0.
    expected = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(masked_whiten(x, mask), expected)
    # shift_mean=False keeps the mean: (x - 3) / 2 + 3 -> [2, 3] and [4].
    expected = torch.tensor([[2.0, 3.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(masked_whiten(x, mask, shift_mean=False), expected)


def test_whitened_has_zero_mean_unit_variance_over_mask():
    x, _, mask = random_batch(seed=1)
    x = 10 * x + 3
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-5)
    assert (w[~mask] == 0).all()
    torch.testing.assert_close(w[mask], (x[mask] - x[mask].mean()) / x[mask].std())


def test_masked_stat_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="bool"):
        masked_mean(x, torch.ones(2, 3))
    with pytest.raises(ValueError, match="shape"):
        masked_mean(x, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="no entry"):
        masked_mean(x, torch.zeros(2, 3, dtype=torch.bool))
    one = torch.zeros(2, 3, dtype=torch.bool)
    one[0, 0] = True
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(x, one)
    assert masked_var(x, one, unbiased=False).item() == 0.0


def test_low_precision_is_upcast():
    x = torch.tensor([[1.0, 3.0]], dtype=torch.bfloat16)
    assert masked_mean(x, torch.ones(1, 2, dtype=torch.bool)).dtype == torch.float32



def test_masked_sequence_sum_skips_prompt_and_padding_even_at_minus_inf():
    # Row 0: prompt at t=0, response at t=1,2, padding (-inf) at t=3 -> -0.5 + -1.0 = -1.5.
    # Row 1: prompt at t=0,1, response at t=2,3 -> -2.0 + -0.25 = -2.25.
    lp = torch.tensor([[-9.0, -0.5, -1.0, -math.inf], [-9.0, -9.0, -2.0, -0.25]])
    mask = torch.tensor([[False, True, True, False], [False, False, True, True]])
    assert masked_sequence_sum(lp, mask).tolist() == [-1.5, -2.25]


def test_masked_sequence_sum_wants_a_bool_mask_of_the_same_shape():
    with pytest.raises(ValueError, match="bool mask"):
        masked_sequence_sum(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="bool mask"):
        masked_sequence_sum(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.bool))


