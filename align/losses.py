"""Every training objective of the pipeline, in one file to audit the math (OpenRLHF ``models/loss.py``).

Sections:
    1. Reward-model objectives: InstructGPT's ranked K-wise loss (Bradley-Terry over every pair;
       with K = 2 it is the pairwise loss that ``rm.loss=pairwise`` gets from TRL's
       ``RewardTrainer``), listwise Plackett-Luce, and the reward-centering auxiliary loss.
    2. PPO policy and value losses: clipped surrogate, clipped value loss, masked entropy.
    3. DPO and other direct preference losses (to come).

Conventions for the K-wise (ranked) objectives: ``rewards``, ``scores`` and ``mask`` are
``[B, K]``; ``scores`` is the annotator's (or gold) grade, higher is better, and only its order
matters; ``mask`` is ``False`` at padding, for prompts with fewer than ``K`` responses. Padded
entries never take part in a comparison, and their rewards receive exactly zero gradient whatever
they hold (even ``nan``). Each prompt weighs the same in the batch mean whatever its number of
responses or comparisons, and prompts with no comparison at all (a single response, or all responses
tied) are left out of the mean; a batch in which no prompt has a comparison raises ``ValueError``
rather than returning a silent, gradient-free zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from align.masked import masked_mean, upcast

# ======================================================================================
# 1. Reward-model objectives
# ======================================================================================


def ranked_pairwise_loss(rewards: Tensor, scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """InstructGPT's K-wise ranking loss: every ordered pair of a prompt, the prompt weighted once.

    Ouyang et al. 2022, eq. 1: ``-1/C(K,2) E[log sigmoid(r(x, y_w) - r(x, y_l))]`` over all pairs
    of the K ranked responses of a prompt. Here, for prompt ``b``, the pairs are every ``(i, j)``
    with ``scores[b, i] > scores[b, j]`` among unpadded responses (ties form no pair), and the
    prompt's loss is the mean of ``-log sigmoid(r_i - r_j)`` over its pairs, i.e. weight
    ``1 / num_pairs[b]``, which is InstructGPT's ``1 / C(K, 2)`` when there are no ties. The batch
    loss is the mean over prompts with at least one pair. Keeping all pairs of a prompt in one
    element of the batch, each prompt weighing the same, is what InstructGPT credits for not
    overfitting as shuffled pairs do (each response would otherwise be seen K - 1 times per epoch).

    Args:
        rewards: ``[B, K]`` reward of each response.
        scores: ``[B, K]`` grade of each response, higher is better.
        mask: ``[B, K]`` bool, ``False`` at padding; ``None`` means every entry is real.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the shapes differ or are not 2-D, or no prompt has a pair.
        TypeError: If ``mask`` is not bool.
    """
    r, pairs = _ranked_pairs("ranked_pairwise_loss", rewards, scores, mask)
    diff = r[:, :, None] - r[:, None, :]  # [B, K, K]: diff[b, i, j] = r_i - r_j
    terms = torch.where(pairs, -F.logsigmoid(diff), 0.0)
    return _per_prompt_mean(terms.sum((1, 2)), pairs.sum((1, 2)))


def plackett_luce_loss(rewards: Tensor, scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Listwise Plackett-Luce negative log-likelihood of the observed ranking, per stage.

    Plackett (1975) and Luce (1959): a ranking is drawn by picking the best response with
    probability ``softmax(r)`` over those left, then the next, and so on; its log-likelihood is
    ``sum_i [r_i - logsumexp_{j ranked at or below i} r_j]``. This is the K-wise maximum-likelihood
    estimator of Zhu, Jordan and Jiao 2023 ("Principled RLHF from pairwise or K-wise comparisons"),
    which they show is asymptotically more efficient than splitting the ranking into pairs.

    Ties (our choice): response ``i`` is compared with itself and the responses *strictly* below
    it, i.e. ``-log P(i beats every j with scores[j] < scores[i])``, a PL marginal. Without ties
    this is exactly the PL likelihood above. With ties it is a composite likelihood in which each
    tied response gets the term it would have if it came last in its tie group (a ranking the data
    does not contradict), and, like the pairwise loss skipping tied pairs, no term ever compares two
    tied responses: the loss pulls their rewards neither apart nor together. (Breslow's approximation
    would put a tie group's other members in each denominator, and so give a tied bottom group a
    term that pulls its rewards together.) Responses with nothing strictly below them (the last,
    or a bottom tie group) contribute ``log 1 = 0`` and are not counted.

    Normalisation: each prompt's sum is divided by its number of counted terms (``K - 1`` without
    ties), then averaged over prompts with at least one term. For ``K = 2`` this equals
    the Bradley-Terry pairwise loss ``-log sigmoid(r_c - r_r)`` exactly. (Zhu et al. sum the K stages
    unnormalised; dividing only rescales
    each prompt's weight so that long rankings do not dominate the batch.)

    Args:
        rewards: ``[B, K]`` reward of each response.
        scores: ``[B, K]`` grade of each response, higher is better.
        mask: ``[B, K]`` bool, ``False`` at padding; ``None`` means every entry is real.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the shapes differ or are not 2-D, or no prompt has two distinct grades.
        TypeError: If ``mask`` is not bool.
    """
    r, below = _ranked_pairs("plackett_luce_loss", rewards, scores, mask)  # below[b, i, j]: j strictly under i
    counted = below.any(-1)  # [B, K]: i has something to beat (implies i is not padding)
    k = r.shape[1]
    eye = torch.eye(k, dtype=torch.bool, device=r.device)
    logits = r[:, None, :].expand(-1, k, -1).masked_fill(~(below | eye), float("-inf"))
    # The diagonal is always kept, so every row has a finite entry and logsumexp is finite.
    nll = torch.logsumexp(logits, dim=-1) - r  # [B, K], >= 0
    return _per_prompt_mean(torch.where(counted, nll, 0.0).sum(-1), counted.sum(-1))


def reward_centering_loss(rewards: Tensor) -> Tensor:
    """Auxiliary loss that keeps rewards near zero: ``mean(rewards ** 2)``; scale it by a coefficient.

    Eisenstein et al. 2023 ("Helping or Herding? Reward model ensembles mitigate but do not
    eliminate reward hacking", eq. 2), TRL's ``center_rewards_coefficient`` (0.01 recommended). The
    Bradley-Terry loss only sees differences, so without it the reward offset drifts freely.

    What to pass matters. Eisenstein et al. and TRL penalise the *sum* of each pair,
    ``mean((r_c + r_r) ** 2)``: pass ``chosen_rewards + rejected_rewards`` to get exactly that; it
    centres each pair and leaves the margin ``r_c - r_r`` free. Passing every reward
    (``torch.cat([chosen, rejected])``) also penalises the margin, since
    ``r_c**2 + r_r**2 = ((r_c + r_r)**2 + (r_c - r_r)**2) / 2``, and so fights the preference loss.
    For K-wise data the analogue is each prompt's summed (or mean) reward over its responses.

    Args:
        rewards: tensor of any shape with at least one element.

    Returns:
        Scalar loss.
    """
    if rewards.numel() == 0:
        raise ValueError("reward_centering_loss: got an empty rewards tensor.")
    return upcast(rewards).pow(2).mean()


def response_lm_loss(logits: Tensor, input_ids: Tensor, target_mask: Tensor) -> Tensor:
    """Next-token cross-entropy on the masked target tokens: an auxiliary language-modelling loss.

    Position ``t`` predicts token ``t + 1``; ``target_mask[:, t]`` says whether token ``t`` is a
    target (a response token). The mean is over all target tokens of the batch (SFT's convention).
    The reward model uses it on the annotators' top-ranked responses to keep its backbone's
    next-token knowledge while the head learns to rank (Yang et al. 2024, "Regularizing hidden
    states enables learning generalizable reward model for LLMs": the SFT regulariser).

    Args:
        logits: ``[N, L, V]`` next-token logits.
        input_ids: ``[N, L]`` token ids.
        target_mask: ``[N, L]`` bool, True at the tokens to predict.

    Returns:
        Scalar loss.

    Raises:
        ValueError: On mismatched shapes, or when no token is a target.
    """
    if logits.shape[:2] != input_ids.shape or target_mask.shape != input_ids.shape:
        raise ValueError(
            f"response_lm_loss: logits {tuple(logits.shape)}, input_ids {tuple(input_ids.shape)} and "
            f"target_mask {tuple(target_mask.shape)} must agree on [N, L]."
        )
    targets = target_mask[:, 1:]
    if not targets.any():
        raise ValueError("response_lm_loss: no target token in the batch.")
    pred = upcast(logits[:, :-1][targets])
    return F.cross_entropy(pred, input_ids[:, 1:][targets])


# ======================================================================================
# Helpers
# ======================================================================================


def _ranked_pairs(name: str, rewards: Tensor, scores: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Validate ``[B, K]`` inputs; return rewards (padding zeroed) and the pair mask.

    Returns:
        ``r``: ``[B, K]`` upcast rewards, 0 at padding (so padding cannot leak a nan or a gradient).
        ``pairs``: ``[B, K, K]`` bool, ``pairs[b, i, j]`` when both are real and ``scores[b, i] > scores[b, j]``.
    """
    if rewards.ndim != 2 or rewards.shape != scores.shape:
        raise ValueError(
            f"{name}: rewards and scores must both be [B, K]; got {tuple(rewards.shape)} and {tuple(scores.shape)}."
        )
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name}: mask must be a bool tensor (True = real response), got {mask.dtype}; use mask.bool()."
        )
    if mask.shape != rewards.shape:
        raise ValueError(f"{name}: mask has shape {tuple(mask.shape)}, rewards {tuple(rewards.shape)}.")
    r = torch.where(mask, upcast(rewards), 0.0)
    pairs = (scores[:, :, None] > scores[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    if not pairs.any():
        raise ValueError(
            f"{name}: no prompt in the batch has two real responses with different scores (all tied or "
            "padding), so there is nothing to learn; drop such prompts when building the dataset."
        )
    return r, pairs


def _per_prompt_mean(sums: Tensor, counts: Tensor) -> Tensor:
    """Mean over prompts with ``counts > 0`` of ``sums / counts`` (``[B]`` each): every prompt weighs the same."""
    has = counts > 0
    assert has.any(), "callers check that some prompt has a term"
    return (sums[has] / counts[has]).mean()


# ======================================================================================
# 2. PPO policy and value losses
# ======================================================================================
#
# Conventions: ``[B, T]`` tensors over response tokens with a bool ``response_mask`` (True on real
# tokens up to and including the EOS), the names of :class:`align.ppo.experience.Experience`.
# ``logprobs``/``values`` are the current model's (with gradient); ``old_logprobs``/``old_values``
# were recorded at rollout. Each loss is a mean over the real tokens of the minibatch (token-level
# mean, as TRL and OpenRLHF). Padding is replaced by a neutral value before any arithmetic, so it
# receives exactly zero gradient whatever it holds (even ``nan``). Statistics come back as detached
# scalar tensors (no host sync); the loop names them ``ppo/<key>``.



def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    clip_range: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate objective, negated, as a masked mean over response tokens.

    Schulman et al. 2017, eq. 7: ``L = E_t[min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)]``
    with ``rho_t = exp(logprobs - old_logprobs)``; we minimize ``max(-rho A, -clip(rho) A)``. When
    the clipped term is the larger loss (``rho > 1 + eps`` with ``A > 0``, or ``rho < 1 - eps`` with
    ``A < 0``) the token's gradient is exactly zero: the update stops pushing once the ratio has
    moved far enough in the advantage's direction.

    Args:
        logprobs: ``[B, T]`` log-probabilities of the response tokens under the current policy.
        old_logprobs: ``[B, T]`` the same at rollout (no gradient).
        advantages: ``[B, T]`` (usually whitened; no gradient).
        response_mask: ``[B, T]`` bool.
        clip_range: ``eps``, e.g. 0.2.

    Returns:
        ``loss``: scalar.
        ``stats``: ``clipfrac``, the fraction of real tokens where the clipped term was the larger
        loss (strictly, so the gradient was cut); ``approx_kl``, the masked mean of
        ``0.5 * (logprobs - old_logprobs) ** 2``, Schulman's ``k2`` estimator of
        ``KL(old || new)`` ("Approximating KL Divergence", 2020; CleanRL's and TRL's ``approxkl``);
        ``ratio_mean``, the masked mean of ``rho``.
    """
    _check_ppo_shapes(
        "ppo_policy_loss", response_mask, logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages
    )
    if not clip_range > 0:
        raise ValueError(f"ppo_policy_loss: clip_range must be > 0, got {clip_range}.")
    log_ratio = torch.where(response_mask, upcast(logprobs) - upcast(old_logprobs), 0.0)
    adv = torch.where(response_mask, upcast(advantages), 0.0)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), response_mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), response_mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, response_mask),
            "ratio_mean": masked_mean(ratio, response_mask),
        }
    return loss, stats


def ppo_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    response_mask: Tensor,
    clip_range_value: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped squared-error value loss, ``0.5 * max((V - R)^2, (V_clip - R)^2)``, masked mean.

    The squared error is PPO's ``L^VF`` (Schulman et al. 2017, eq. 9); the clipping
    ``V_clip = old_values + clip(values - old_values, -eps_v, eps_v)`` is from OpenAI baselines
    ``ppo2`` (Huang et al. 2022, "37 implementation details", #9), kept by TRL and OpenRLHF for
    RLHF. Like the policy clip, a token whose clipped error is the larger gets zero gradient.

    Args:
        values: ``[B, T]`` current value-head predictions.
        old_values: ``[B, T]`` predictions at rollout (``Experience.values``; no gradient).
        returns: ``[B, T]`` value targets from :func:`align.ppo.advantages.gae` (no gradient).
        response_mask: ``[B, T]`` bool.
        clip_range_value: ``eps_v``, in the units of the values (e.g. 0.2).

    Returns:
        ``loss``: scalar.
        ``stats``: ``value_clipfrac``, the fraction of real tokens where the clipped error was
        strictly larger.
    """
    _check_ppo_shapes("ppo_value_loss", response_mask, values=values, old_values=old_values, returns=returns)
    if not clip_range_value > 0:
        raise ValueError(f"ppo_value_loss: clip_range_value must be > 0, got {clip_range_value}.")
    v = torch.where(response_mask, upcast(values), 0.0)
    v_old = torch.where(response_mask, upcast(old_values), 0.0)
    ret = torch.where(response_mask, upcast(returns), 0.0)
    v_clipped = v_old + torch.clamp(v - v_old, -clip_range_value, clip_range_value)
    unclipped, clipped = (v - ret) ** 2, (v_clipped - ret) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), response_mask)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((clipped > unclipped).float(), response_mask)}
    return loss, stats


def masked_entropy_from_logits(logits: Tensor, response_mask: Tensor) -> Tensor:
    """Mean entropy of the policy's next-token distributions over the real response tokens.

    ``H_t = logsumexp(z_t) - sum_v softmax(z_t)_v z_{t,v}``, the entropy of ``softmax(z_t)``; the
    PPO paper's entropy bonus ``S`` (Schulman et al. 2017, eq. 9) and TRL's ``entropy_from_logits``,
    in fp32. Logged as ``ppo/entropy``; subtract ``coef * entropy`` from the loss for a bonus.

    Args:
        logits: ``[B, T, V]`` logits that predict each response token (finite).
        response_mask: ``[B, T]`` bool.

    Returns:
        Scalar, in nats.
    """
    if logits.ndim != 3 or logits.shape[:2] != response_mask.shape:
        raise ValueError(
            f"masked_entropy_from_logits: logits must be [B, T, V] matching response_mask [B, T]; got "
            f"{tuple(logits.shape)} and {tuple(response_mask.shape)}."
        )
    z = upcast(logits)
    entropy = torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(-1)
    return masked_mean(entropy, response_mask)


def _check_ppo_shapes(name: str, response_mask: Tensor, **tensors: Tensor) -> None:
    if response_mask.dtype != torch.bool:
        raise TypeError(f"{name}: response_mask must be bool (True = real token), got {response_mask.dtype}.")
    for key, x in tensors.items():
        if x.shape != response_mask.shape:
            raise ValueError(
                f"{name}: {key} has shape {tuple(x.shape)} but response_mask has {tuple(response_mask.shape)}; "
                "every per-token tensor is [B, T] over the response tokens."
            )
