"""PPO policy and value losses and the entropy: hand-worked values (in comments), torchtune-style.

Clip range 0.2 throughout, so the policy ratio is clipped to [0.8, 1.2] and the value to
old_value +- 0.2. Losses are token means over the real tokens.
"""

import math

import pytest
import torch

from align.losses import masked_entropy_from_logits, ppo_policy_loss, ppo_value_loss

NAN = float("nan")


def test_policy_loss_hand_worked():
    # Four real tokens (ratio rho, advantage A), then one padding token holding nan:
    #   a: rho 1.5, A +1: unclipped -1.5 * 1 = -1.5, clipped -1.2 * 1 = -1.2 -> max -1.2  (clipped)
    #   b: rho 0.5, A -1: unclipped +0.5,            clipped +0.8            -> max  0.8  (clipped)
    #   c: rho 1.0, A +2: unclipped -2,              clipped -2              -> max -2    (not clipped)
    #   d: rho 1.5, A -1: unclipped +1.5,            clipped +1.2            -> max  1.5  (not clipped:
    #      the ratio is outside the range but moved against the advantage, so it is not cut)
    # loss = (-1.2 + 0.8 - 2 + 1.5) / 4 = -0.9 / 4 = -0.225
    # clipfrac = 2 / 4 = 0.5 (a and b)
    # approx_kl = mean 0.5 * log(rho)^2 = 0.5 * (0.164402 + 0.480453 + 0 + 0.164402) / 4 = 0.101157
    #   (log 1.5 = 0.405465, squared 0.164402; log 0.5 = -0.693147, squared 0.480453)
    # ratio_mean = (1.5 + 0.5 + 1 + 1.5) / 4 = 1.125
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0, NAN]])
    ratios = torch.tensor([[1.5, 0.5, 1.0, 1.5, 1.0]])
    logprobs = (old + ratios.log()).nan_to_num(nan=5.0).requires_grad_()
    advantages = torch.tensor([[1.0, -1.0, 2.0, -1.0, NAN]])
    mask = torch.tensor([[True, True, True, True, False]])
    loss, stats = ppo_policy_loss(logprobs, old, advantages, mask, clip_range=0.2)
    assert loss.item() == pytest.approx(-0.225, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["approx_kl"].item() == pytest.approx(0.101157, abs=1e-6)
    assert stats["ratio_mean"].item() == pytest.approx(1.125, abs=1e-6)
    assert not any(v.requires_grad for v in stats.values())
    loss.backward()
    # d loss / d logprob_t = -A_t * rho_t / 4 where the unclipped term is active, 0 where clipped:
    #   a: 0, b: 0, c: -2 * 1 / 4 = -0.5, d: +1 * 1.5 / 4 = 0.375, padding: 0
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, 0.0, -0.5, 0.375, 0.0]]))


def test_policy_loss_on_policy_is_minus_mean_advantage():
    # First epoch on fresh rollouts: rho = 1 everywhere, loss = -mean(A), nothing clipped, kl 0.
    g = torch.Generator().manual_seed(0)
    logprobs = torch.randn(3, 5, generator=g)
    advantages = torch.randn(3, 5, generator=g)
    mask = torch.arange(5)[None, :] < torch.tensor([[5], [2], [4]])
    loss, stats = ppo_policy_loss(logprobs, logprobs.clone(), advantages, mask, clip_range=0.2)
    torch.testing.assert_close(loss, -advantages[mask].mean())
    assert stats["clipfrac"].item() == 0.0 and stats["approx_kl"].item() == 0.0
    assert stats["ratio_mean"].item() == pytest.approx(1.0)


def test_value_loss_hand_worked():
    # old_values 0, clip 0.2, so V_clip = clip(V, -0.2, 0.2):
    #   a: V  0.5, R  1: (0.5-1)^2 = 0.25,  V_clip  0.2: (0.2-1)^2 = 0.64 -> max 0.64 (clipped)
    #   b: V  0.1, R  1: (0.1-1)^2 = 0.81,  V_clip  0.1: 0.81            -> max 0.81 (tie, not clipped)
    #   c: V  0.5, R -1: (0.5+1)^2 = 2.25,  V_clip  0.2: (0.2+1)^2 = 1.44 -> max 2.25 (not clipped)
    #   d: V -0.5, R -1: (-0.5+1)^2 = 0.25, V_clip -0.2: (-0.2+1)^2 = 0.64 -> max 0.64 (clipped)
    # loss = 0.5 * (0.64 + 0.81 + 2.25 + 0.64) / 4 = 0.5 * 1.085 = 0.5425; value_clipfrac = 2 / 4
    values = torch.tensor([[0.5, 0.1, 0.5, -0.5, NAN]], requires_grad=True)
    old_values = torch.tensor([[0.0, 0.0, 0.0, 0.0, NAN]])
    returns = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1e9]])
    mask = torch.tensor([[True, True, True, True, False]])
    loss, stats = ppo_value_loss(values, old_values, returns, mask, clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.5425, abs=1e-6)
    assert stats["value_clipfrac"].item() == pytest.approx(0.5)
    loss.backward()
    # d loss / dV = 0.5 * 2 * (V - R) / 4 = (V - R) / 4 where unclipped: b: -0.9 / 4 = -0.225,
    # c: 1.5 / 4 = 0.375; a, d (clipped) and padding: 0
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -0.225, 0.375, 0.0, 0.0]]))


def test_value_loss_without_clipping_is_half_mse():
    g = torch.Generator().manual_seed(1)
    values, returns = torch.randn(2, 6, generator=g), torch.randn(2, 6, generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    loss, stats = ppo_value_loss(values, values.clone(), returns, mask, clip_range_value=1e9)
    torch.testing.assert_close(loss, 0.5 * ((values - returns) ** 2).mean())
    assert stats["value_clipfrac"].item() == 0.0


def test_masked_entropy_hand_worked():
    # Token 0: uniform over 4 -> log 4 = 1.386294.
    # Token 1: probs [0.25, 0.75, 0, 0] -> 0.25 log 4 + 0.75 log(4/3) = 0.346574 + 0.215762 = 0.562335
    #   (logits [log 1, log 3, -30, -30]: e^-30 is negligible).
    # Token 2: padding. Mean over real tokens = (1.386294 + 0.562335) / 2 = 0.974315
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -30.0, -30.0], [1e4, -1e4, NAN, 0.0]]]
    )
    mask = torch.tensor([[True, True, False]])
    assert masked_entropy_from_logits(logits, mask).item() == pytest.approx(0.974315, abs=1e-5)
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        masked_entropy_from_logits(logits[0], mask)


def test_ppo_loss_input_errors():
    z = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="advantages"):
        ppo_policy_loss(z, z, torch.zeros(2, 4), mask, 0.2)
    with pytest.raises(TypeError, match="bool"):
        ppo_policy_loss(z, z, z, mask.float(), 0.2)
    with pytest.raises(ValueError, match="clip_range"):
        ppo_policy_loss(z, z, z, mask, 0.0)
    with pytest.raises(ValueError, match="returns"):
        ppo_value_loss(z, z, torch.zeros(3), mask, 0.2)


def test_bf16_inputs_give_fp32_loss():
    lp = torch.zeros(1, 2, dtype=torch.bfloat16)
    loss, _ = ppo_policy_loss(lp, lp, torch.ones(1, 2, dtype=torch.bfloat16), torch.ones(1, 2, dtype=torch.bool), 0.2)
    assert loss.dtype == torch.float32 and loss.item() == -1.0
