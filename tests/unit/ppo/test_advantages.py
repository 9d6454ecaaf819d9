"""KL-shaped rewards and GAE: hand-worked values (in comments) and invariants."""

import math

import pytest
import torch

from align.ppo.advantages import (
    gae,
    kl_penalized_rewards,
)
from tests.unit.helpers import prefix_mask, random_batch

# ---------------------------------------------------------------------------- KL-shaped rewards


def test_kl_penalized_rewards_hand_worked_k1():
    # kl_coef = 0.1, k1 = logprobs - ref_logprobs.
    # Row 0, 4 real tokens: kl = [-1 - -2, -1 - -1, -1 - -1.5, -1 - -1] = [1, 0, 0.5, 0]
    #   rewards = -0.1 * kl = [-0.1, 0, -0.05, 0], plus score 2 at t = 3 -> [-0.1, 0, -0.05, 2]
    # Row 1, 2 real tokens: kl = [-0.5 - -1, -2 - -1] = [0.5, -1] (k1 can be negative per token)
    #   rewards = [-0.05, 0.1], plus score -1 at t = 1 -> [-0.05, -0.9]; padding 0 whatever it held.
    logprobs = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-0.5, -2.0, 9.0, float("nan")]])
    ref_logprobs = torch.tensor([[-2.0, -1.0, -1.5, -1.0], [-1.0, -1.0, 0.0, 0.0]])
    mask = prefix_mask([4, 2], 4)
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.5, -1.0, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.1, 0.0, -0.05, 2.0], [-0.05, -0.9, 0.0, 0.0]]))


def test_score_lands_on_last_real_token_of_each_row():
    lengths = [6, 1, 3, 4]
    _, _, mask = random_batch(lengths=lengths)
    zeros = torch.zeros(4, 6)
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0])
    rewards, _ = kl_penalized_rewards(scores, zeros, zeros, mask, kl_coef=0.5)  # no KL: only scores
    expected = torch.zeros(4, 6)
    for b, n in enumerate(lengths):
        expected[b, n - 1] = scores[b]
    torch.testing.assert_close(rewards, expected)


def test_k3_hand_worked_nonnegative_and_zero_when_equal():
    # logprobs - ref = log 2, so r = exp(ref - logp) = 1/2:
    #   k3 = (r - 1) - log r = -0.5 + log 2 = 0.193147; k1 = log 2 = 0.693147
    mask = torch.ones(1, 1, dtype=torch.bool)
    logp, ref = torch.tensor([[math.log(2)]]), torch.zeros(1, 1)
    _, k3 = kl_penalized_rewards(torch.zeros(1), logp, ref, mask, 1.0, kl_estimator="k3")
    _, k1 = kl_penalized_rewards(torch.zeros(1), logp, ref, mask, 1.0, kl_estimator="k1")
    assert k3.item() == pytest.approx(0.193147, abs=1e-6)
    assert k1.item() == pytest.approx(0.693147, abs=1e-6)
    logp, ref, mask = random_batch(seed=2)
    _, k3 = kl_penalized_rewards(torch.zeros(4), logp, ref, mask, 1.0, kl_estimator="k3")
    assert (k3 >= 0).all() and (k3[mask] > 0).all() and (k3[~mask] == 0).all()
    _, k3_equal = kl_penalized_rewards(torch.zeros(4), logp, logp, mask, 1.0, kl_estimator="k3")
    assert (k3_equal == 0).all()


def test_kl_penalized_rewards_errors():
    z, mask = torch.zeros(2, 3), prefix_mask([3, 2], 3)
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_penalized_rewards(torch.zeros(2), z, z, mask, 0.1, kl_estimator="k2")
    with pytest.raises(ValueError, match="squeeze"):
        kl_penalized_rewards(torch.zeros(2, 1), z, z, mask, 0.1)
    with pytest.raises(ValueError, match="ref_logprobs"):
        kl_penalized_rewards(torch.zeros(2), z, torch.zeros(2, 4), mask, 0.1)
    with pytest.raises(ValueError, match="prefix"):
        kl_penalized_rewards(torch.zeros(2), z, z, torch.tensor([[True, False, True], [True, True, False]]), 0.1)
    with pytest.raises(ValueError, match="no real token"):
        kl_penalized_rewards(torch.zeros(2), z, z, prefix_mask([3, 0], 3), 0.1)
    with pytest.raises(TypeError, match="bool"):
        kl_penalized_rewards(torch.zeros(2), z, z, mask.float(), 0.1)


# ---------------------------------------------------------------------------------------- GAE


def test_gae_hand_worked_three_steps():
    # gamma = lam = 0.5 (gamma * lam = 0.25); rewards [0, 1, 4], values [1, 2, 3], V = 0 after t = 2.
    #   delta_2 = r_2 + gamma * 0   - V_2 = 4 - 3             = 1
    #   delta_1 = r_1 + gamma * V_2 - V_1 = 1 + 0.5 * 3 - 2   = 0.5
    #   delta_0 = r_0 + gamma * V_1 - V_0 = 0 + 0.5 * 2 - 1   = 0
    #   A_2 = delta_2                    = 1
    #   A_1 = delta_1 + 0.25 * A_2 = 0.5 + 0.25   = 0.75
    #   A_0 = delta_0 + 0.25 * A_1 = 0 + 0.1875   = 0.1875
    #   returns = A + V = [1.1875, 2.75, 4]
    rewards, values = torch.tensor([[0.0, 1.0, 4.0]]), torch.tensor([[1.0, 2.0, 3.0]])
    adv, ret = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma=0.5, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.1875, 0.75, 1.0]]))
    torch.testing.assert_close(ret, torch.tensor([[1.1875, 2.75, 4.0]]))
    # The same episode padded to T = 5 with junk: V after the last real token is 0, not 7.
    rewards = torch.tensor([[0.0, 1.0, 4.0, 5.0, float("nan")]])
    values = torch.tensor([[1.0, 2.0, 3.0, 7.0, float("inf")]])
    adv, ret = gae(rewards, values, prefix_mask([3], 5), gamma=0.5, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.1875, 0.75, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[1.1875, 2.75, 4.0, 0.0, 0.0]]))


def test_gae_gamma_lambda_one_is_reward_to_go_minus_values():
    rewards, values, mask = random_batch(seed=3)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    r = torch.where(mask, rewards, 0.0)
    reward_to_go = r.flip(1).cumsum(1).flip(1)  # sum_{k >= t} r_k
    torch.testing.assert_close(adv, torch.where(mask, reward_to_go - values, 0.0))
    torch.testing.assert_close(ret, torch.where(mask, reward_to_go, 0.0))  # returns = advantages + values


def test_gae_lambda_zero_is_one_step_td():
    # lam = 0: A_t = delta_t = r_t + gamma * V_{t+1} - V_t (V = 0 past the end).
    rewards, values, mask = random_batch(seed=4)
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    v = torch.where(mask, values, 0.0)
    next_v = torch.cat([v[:, 1:], torch.zeros(4, 1)], dim=1)
    torch.testing.assert_close(adv, torch.where(mask, rewards + 0.9 * next_v - v, 0.0))


def test_gae_padding_is_zero_and_does_not_leak():
    rewards, values, mask = random_batch(seed=5)
    adv, ret = gae(rewards, values, mask, gamma=0.99, lam=0.95)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()
    torch.testing.assert_close(ret, adv + torch.where(mask, values, 0.0))
    for junk in (1e6, float("nan"), float("-inf")):
        adv2, ret2 = gae(torch.where(mask, rewards, junk), torch.where(mask, values, junk), mask, 0.99, 0.95)
        torch.testing.assert_close(adv2, adv)
        torch.testing.assert_close(ret2, ret)


def test_gae_errors():
    z, mask = torch.zeros(2, 3), prefix_mask([3, 2], 3)
    with pytest.raises(ValueError, match="gamma"):
        gae(z, z, mask, gamma=1.5, lam=0.95)
    with pytest.raises(ValueError, match="values"):
        gae(z, torch.zeros(2, 4), mask, gamma=1.0, lam=0.95)
    with pytest.raises(ValueError, match="prefix"):
        gae(z, z, torch.tensor([[False, True, True], [True, True, False]]), gamma=1.0, lam=0.95)
