"""Reward-model objectives: hand-worked values (in comments) and invariants.

Notation: sp(x) = -log sigmoid(x) = log(1 + e^-x). Values used below:
    sp(0) = log 2 = 0.693147   sp(1) = 0.313262   sp(2) = 0.126928   sp(3) = 0.048587
    sp(-1) = 1.313262
"""

import math

import pytest
import torch

from align.losses import (
    plackett_luce_loss,
    ranked_pairwise_loss,
    reward_centering_loss,
)

LOG2 = math.log(2)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def bradley_terry(chosen, rejected):
    """The pairwise loss of InstructGPT eq. 1 with K = 2 (TRL's RewardTrainer loss): mean sp(r_c - r_r)."""
    return -torch.nn.functional.logsigmoid(chosen - rejected).mean()


# ---------------------------------------------------------------------------- ranked (K-wise)


def test_ranked_k2_hand_worked_gradient_and_stable():
    # pair 1: sp(2 - 0) = 0.126928; pair 2: sp(0 - 0) = 0.693147; mean over prompts = 0.410038
    rewards = t([2, 0], [0, 0]).requires_grad_()
    loss = ranked_pairwise_loss(rewards, t([1, 0], [1, 0]))
    assert loss.item() == pytest.approx(0.410038, abs=1e-6)
    # d sp(c - r) / dc = -sigmoid(-2) = -0.119203, halved by the mean over the 2 prompts
    loss.backward()
    assert rewards.grad[0].tolist() == pytest.approx([-0.119203 / 2, 0.119203 / 2], abs=1e-6)
    # log(sigmoid(-200)) underflows to -inf in fp32; logsigmoid gives sp(-200) = 200.
    assert ranked_pairwise_loss(t([0, 200]), t([1, 0])).item() == pytest.approx(200.0)


def test_ranked_with_k2_equals_pairwise():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(16, 2, generator=g)
    scores = torch.rand(16, 2, generator=g)  # distinct, in either order
    first_wins = scores[:, 0] > scores[:, 1]
    chosen = torch.where(first_wins, rewards[:, 0], rewards[:, 1])
    rejected = torch.where(first_wins, rewards[:, 1], rewards[:, 0])
    torch.testing.assert_close(ranked_pairwise_loss(rewards, scores), bradley_terry(chosen, rejected))


def test_ranked_weights_every_prompt_equally():
    # Prompt A, K = 4, rewards [3, 2, 1, 0] in score order: 6 pairs with gaps 1, 2, 3, 1, 2, 1
    #   -> (3 sp(1) + 2 sp(2) + sp(3)) / 6 = (0.939785 + 0.253856 + 0.048587) / 6 = 0.207038
    # Prompt B, K = 2 (padded to 4), rewards [0, 0]: 1 pair -> sp(0) = 0.693147
    # Loss = (0.207038 + 0.693147) / 2 = 0.450093, NOT the mean of the 7 terms (0.276482).
    rewards = t([3, 2, 1, 0], [0, 0, 9, 9])
    scores = t([4, 3, 2, 1], [1, 0, 5, 5])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    loss = ranked_pairwise_loss(rewards, scores, mask)
    assert loss.item() == pytest.approx(0.450093, abs=1e-6)
    assert loss.item() != pytest.approx(0.276482, abs=1e-3)


def test_ranked_skips_tied_pairs():
    # scores [2, 2, 1]: pairs (0, 2) gap 1 -> sp(1) = 0.313262 and (1, 2) gap 2 -> sp(2) = 0.126928;
    # the tied (0, 1) forms no pair. Mean = 0.220095.
    loss = ranked_pairwise_loss(t([1, 2, 0]), t([2, 2, 1]))
    assert loss.item() == pytest.approx(0.220095, abs=1e-6)


@pytest.mark.parametrize("loss_fn", [ranked_pairwise_loss, plackett_luce_loss])
def test_prompts_without_pairs_contribute_nothing(loss_fn):
    useful = (t([1, 0, 0]), t([2, 1, 0]), torch.tensor([[True] * 3]))
    all_tied = (t([5, -5, 0]), t([1, 1, 1]), torch.tensor([[True] * 3]))
    single = (t([7, 0, 0]), t([3, 0, 0]), torch.tensor([[True, False, False]]))
    batch = [torch.cat(parts) for parts in zip(useful, all_tied, single)]
    torch.testing.assert_close(loss_fn(*batch), loss_fn(*useful))
    nothing = [torch.cat(parts) for parts in zip(all_tied, single)]
    with pytest.raises(ValueError, match="no prompt"):
        loss_fn(*nothing)


@pytest.mark.parametrize("loss_fn", [ranked_pairwise_loss, plackett_luce_loss])
def test_padding_changes_neither_loss_nor_gradients(loss_fn):
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(3, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    base = torch.randn(3, 5, generator=g)
    results = []
    for pad_reward, pad_score in [(0.0, 0.0), (1e6, 99.0), (float("nan"), -99.0), (float("-inf"), float("nan"))]:
        rewards = torch.where(mask, base, pad_reward).requires_grad_()
        loss = loss_fn(rewards, torch.where(mask, scores, pad_score), mask)
        loss.backward()
        results.append((loss.detach(), rewards.grad))
    for loss, grad in results:
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert (grad[~mask] == 0).all()
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(grad, results[0][1])


@pytest.mark.parametrize("loss_fn", [ranked_pairwise_loss, plackett_luce_loss])
def test_gradients_flow_and_are_shift_invariant(loss_fn):
    g = torch.Generator().manual_seed(2)
    rewards = torch.randn(4, 4, generator=g, requires_grad=True)
    scores = torch.randperm(4, generator=g).float().expand(4, 4)
    loss = loss_fn(rewards, scores)
    loss.backward()
    assert torch.isfinite(rewards.grad).all() and (rewards.grad != 0).all()
    # Only reward differences within a prompt matter, and each prompt's gradients sum to 0.
    shift = torch.tensor([[10.0], [-3.0], [0.0], [100.0]])
    torch.testing.assert_close(loss_fn(rewards.detach() + shift, scores), loss.detach())
    torch.testing.assert_close(rewards.grad.sum(-1), torch.zeros(4), atol=1e-6, rtol=0)


def test_ranked_input_errors():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        ranked_pairwise_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        plackett_luce_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="bool"):
        ranked_pairwise_loss(torch.zeros(2, 3), t([1, 0, 0], [1, 0, 0]), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask"):
        ranked_pairwise_loss(torch.zeros(2, 3), t([1, 0, 0], [1, 0, 0]), torch.ones(2, 2, dtype=torch.bool))


# ---------------------------------------------------------------------------- Plackett-Luce


def test_plackett_luce_with_k2_equals_pairwise():
    # One stage: logsumexp(r_c, r_r) - r_c = log(1 + e^-(r_c - r_r)) = sp(r_c - r_r), divided by 1.
    g = torch.Generator().manual_seed(3)
    rewards = torch.randn(16, 2, generator=g)
    scores = torch.rand(16, 2, generator=g)
    first_wins = scores[:, 0] > scores[:, 1]
    chosen = torch.where(first_wins, rewards[:, 0], rewards[:, 1])
    rejected = torch.where(first_wins, rewards[:, 1], rewards[:, 0])
    torch.testing.assert_close(plackett_luce_loss(rewards, scores), bradley_terry(chosen, rejected))
    # Also when the K = 2 prompt sits in a K = 4 batch, padded.
    padded = torch.cat([rewards, torch.full((16, 2), 3.0)], dim=1)
    mask = torch.tensor([True, True, False, False]).expand(16, 4)
    torch.testing.assert_close(
        plackett_luce_loss(padded, torch.cat([scores, scores], 1), mask), bradley_terry(chosen, rejected)
    )


def test_plackett_luce_hand_worked_k3():
    # Equal rewards: the ranking has probability 1/3 * 1/2 * 1 = 1/6; NLL log 6 over K - 1 = 2
    # stages -> log(6) / 2 = 0.895880.
    assert plackett_luce_loss(torch.zeros(1, 3), t([3, 2, 1])).item() == pytest.approx(0.895880, abs=1e-6)
    # Rewards [2, 1, 0] in score order (listed out of order to check the sort is by score):
    #   stage 1: logsumexp(2, 1, 0) - 2 = log(1 + e^-1 + e^-2) = log(1.503215) = 0.407606
    #   stage 2: logsumexp(1, 0) - 1 = sp(1) = 0.313262;  stage 3: log 1 = 0
    #   -> (0.407606 + 0.313262) / 2 = 0.360434
    loss = plackett_luce_loss(t([0, 2, 1]), t([1, 3, 2]))
    assert loss.item() == pytest.approx(0.360434, abs=1e-6)
    # Not the ranked pairwise loss: (sp(1) + sp(2) + sp(1)) / 3 = 0.251151.
    assert ranked_pairwise_loss(t([0, 2, 1]), t([1, 3, 2])).item() == pytest.approx(0.251151, abs=1e-6)


def test_plackett_luce_ties():
    # Tie at the top, scores [2, 2, 1], rewards [1, 2, 0]: each tied item is chosen from itself and
    # the strictly-lower item only: sp(1 - 0) = 0.313262 and sp(2 - 0) = 0.126928; item 3 has
    # nothing below -> not counted. Mean = 0.220095, the same as the ranked pairwise loss here.
    assert plackett_luce_loss(t([1, 2, 0]), t([2, 2, 1])).item() == pytest.approx(0.220095, abs=1e-6)
    # Tie at the bottom, scores [3, 1, 1], rewards [2, 1, 0]: one counted stage,
    # logsumexp(2, 1, 0) - 2 = 0.407606; the tied pair is never compared.
    assert plackett_luce_loss(t([2, 1, 0]), t([3, 1, 1])).item() == pytest.approx(0.407606, abs=1e-6)
    # ... so moving one tied reward against the other changes nothing through a tie term:
    rewards = t([2, 1, 0]).requires_grad_()
    plackett_luce_loss(rewards, t([3, 1, 1])).backward()
    # Gradient = softmax(2, 1, 0) - onehot(0) = [0.665241 - 1, 0.244728, 0.090031]
    torch.testing.assert_close(rewards.grad, t([-0.334759, 0.244728, 0.090031]), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------- centering


def test_reward_centering_loss():
    # mean([1^2, (-1)^2, 2^2]) = 2
    assert reward_centering_loss(torch.tensor([1.0, -1.0, 2.0])).item() == pytest.approx(2.0)
    # TRL / Eisenstein et al. eq. 2: mean((r_c + r_r)^2); c = [1, 2], r = [-1, 0] -> mean([0, 4]) = 2
    c, r = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.0])
    assert reward_centering_loss(c + r).item() == pytest.approx(torch.mean((c + r) ** 2).item())
    with pytest.raises(ValueError, match="empty"):
        reward_centering_loss(torch.zeros(0))


def test_low_precision_rewards_are_upcast():
    rewards = torch.tensor([[2.0, 0.0]], dtype=torch.bfloat16)
    loss = ranked_pairwise_loss(rewards, t([1, 0]))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(0.126928, abs=1e-6)


# --------------------------------------------------------------------------- auxiliary LM loss


def test_response_lm_loss_hand_worked_and_masked():
    from align.losses import response_lm_loss

    # Vocabulary 2, logits 0 everywhere except position 1, which says log-odds 2 for token 1.
    # Targets: token 2 only (predicted from position 1): -log softmax([0, 2])[1] = sp(2) = 0.126928.
    logits = torch.zeros(1, 3, 2)
    logits[0, 1, 1] = 2.0
    ids = torch.tensor([[0, 0, 1]])
    assert response_lm_loss(logits, ids, torch.tensor([[False, False, True]])).item() == pytest.approx(0.126928, abs=1e-6)
    # Both tokens 1 and 2: mean of log 2 (position 0, uniform) and sp(2).
    both = response_lm_loss(logits, ids, torch.tensor([[False, True, True]]))
    assert both.item() == pytest.approx((LOG2 + 0.126928) / 2, abs=1e-6)
    # The first token is never a target (nothing predicts it); an empty mask is an error, not a 0.
    with pytest.raises(ValueError, match="no target"):
        response_lm_loss(logits, ids, torch.tensor([[True, False, False]]))
    with pytest.raises(ValueError, match="agree"):
        response_lm_loss(logits, ids[:, :2], torch.tensor([[True, True]]))
