"""Pure pieces of eval: the sequence KL estimator, best-of-n selection and its analytic KL, win rates."""

import math

import pytest
import torch

from align.eval.metrics import (
    best_of_n_indices,
    best_of_n_kl,
    mean_sem,
    sequence_kl,
    win_rate,
)


def test_sequence_kl_hand_worked():
    # Three samples from the policy: log-ratios 1.5-1.0=0.5, -0.2-(-1.2)=1.0, -3.0-(-2.5)=-0.5.
    # KL = mean = (0.5 + 1.0 - 0.5) / 3 = 1/3; sample var = ((1/6)^2+(2/3)^2+(5/6)^2)/2 = 7/12;
    # s.e. = sqrt(7/12 / 3) = sqrt(7/36).
    kl, sem = sequence_kl([1.5, -0.2, -3.0], [1.0, -1.2, -2.5])
    assert kl == pytest.approx(1 / 3)
    assert sem == pytest.approx(math.sqrt(7 / 36))


def test_sequence_kl_is_zero_for_the_policy_itself_and_matches_the_exact_kl_in_expectation():
    assert sequence_kl([-1.0, -2.0], [-1.0, -2.0]) == (0.0, 0.0)
    # One-token "responses": policy p = (0.7, 0.3), reference q = (0.4, 0.6). The exact KL is
    # 0.7 log(0.7/0.4) + 0.3 log(0.3/0.6) = 0.18378...; the Monte-Carlo mean over many samples
    # from p converges to it.
    p, q = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])
    exact = (p * (p / q).log()).sum().item()
    ys = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    kl, sem = sequence_kl(p.log()[ys], q.log()[ys])
    assert exact == pytest.approx(0.18378, abs=1e-5)
    assert abs(kl - exact) < 4 * sem


def test_sequence_kl_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same N"):
        sequence_kl([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="same N"):
        sequence_kl([], [])


def test_best_of_n_kl_analytic():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)  # 0.1931
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)  # 0.6363
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)  # 1.8351
    # Exact for n = 2 on a continuous reward: the best of two has density 2 F(r) p(r), so its KL to
    # p is E[log 2F] = log 2 + integral_0^1 log u du = log 2 - 1/2.
    assert best_of_n_kl(2) == pytest.approx(0.19315, abs=1e-5)
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n_kl(0)


def test_best_of_n_indices_uses_the_first_n_draws_and_breaks_ties_early():
    scores = torch.tensor([[0.1, 0.9, 0.5, 2.0],
                           [3.0, 1.0, 3.0, 0.0],
                           [-1.0, -2.0, -0.5, -0.5]])
    assert best_of_n_indices(scores, 1).tolist() == [0, 0, 0]
    assert best_of_n_indices(scores, 2).tolist() == [1, 0, 0]
    assert best_of_n_indices(scores, 4).tolist() == [3, 0, 2]  # row 1: tie 0/2 -> 0; row 2: tie 2/3 -> 2
    with pytest.raises(ValueError, match="only 4 draws"):
        best_of_n_indices(scores, 5)


def test_win_rate_ties_half_and_mean_sem():
    assert win_rate([1.0, 0.0, 0.5], [0.0, 1.0, 0.5]) == 0.5
    assert win_rate([2.0, 2.0], [1.0, 2.0]) == 0.75
    assert mean_sem([1.0, 3.0]) == (2.0, 1.0)  # var = 2, s.e. = sqrt(2 / 2)
    assert mean_sem([5.0]) == (5.0, 0.0)


