"""Pure advantage functions: advantage whitening, KL-shaped rewards and GAE (masked statistics: :mod:`align.masked`).

Everything here works on ``[B, T]`` tensors over the response tokens with a bool ``response_mask``
(``True`` on real tokens up to and including the EOS; each row a prefix). Padding never leaks into
a result: it is selected away with ``torch.where`` (so even a ``nan`` there is harmless), and the
``[B, T]`` outputs are exactly ``0`` at padding. Results are computed in at least fp32.

References: Schulman et al. 2016 (GAE); Ziegler et al. 2019 and Ouyang et al. 2022 (KL-shaped
reward); TRL <= 1.12 ``PPOTrainer`` and OpenRLHF ``ppo_utils`` (masked whitening, the recursion);
Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO".
"""

from __future__ import annotations

import torch
from torch import Tensor

from align.masked import Reduce, masked_whiten, upcast
from align.ppo.rollout_utils import first_true_indices

KL_ESTIMATORS = ("k1", "k3")


def whiten_advantages(advantages: Tensor, mask: Tensor, reduce: Reduce | None = None) -> Tensor:
    """Whiten advantages over the batch's real tokens: mean 0, variance 1, ``0`` at padding.

    Standard PPO (OpenAI baselines ``ppo2``; Huang et al. 2022, "37 implementation details", #7;
    TRL ``PPOTrainer``): the step size then does not depend on the reward scale, and about half the
    tokens are pushed up, half down.

    Args:
        advantages: ``[B, T]`` from :func:`gae`.
        mask: ``[B, T]`` bool ``response_mask``.
        reduce: Sums a tensor over the processes that share the batch (data parallelism): the
            mean and variance are then those of the whole batch, not of this process's share.

    Returns:
        ``[B, T]`` whitened advantages.
    """
    return masked_whiten(advantages, mask, shift_mean=True, reduce=reduce)


# ======================================================================================
# Rewards and advantages
# ======================================================================================


@torch.no_grad()
def kl_penalized_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    response_mask: Tensor,
    kl_coef: float,
    kl_estimator: str = "k1",
) -> tuple[Tensor, Tensor]:
    """Per-token rewards: a KL penalty on every real token, plus the score on the last one.

    Ziegler et al. 2019, eq. 2, and InstructGPT (Ouyang et al. 2022, eq. 2):
    ``R(x, y) = r(x, y) - beta * log(pi(y|x) / pi_ref(y|x))``, with the KL term spread over the
    tokens it is made of (the estimator below, per token) and the reward-model score ``r(x, y)``
    paid at the last real token of the response (its EOS when it ended). So
    ``rewards[b, t] = -kl_coef * kl[b, t] + (t == last[b]) * scores[b]`` on real tokens, ``0`` on
    padding. Targets, not differentiated: runs under ``torch.no_grad()``.

    KL estimators per token (Schulman 2020, "Approximating KL Divergence"), with
    ``log r = ref_logprobs - logprobs`` of the sampled token:

    - ``"k1"``: ``-log r = logprobs - ref_logprobs``, unbiased, can be negative per token (TRL's
      default, InstructGPT's).
    - ``"k3"``: ``(r - 1) - log r``, unbiased and always ``>= 0``, lower variance.

    Args:
        scores: ``[B]`` reward-model scores (normalized, no-EOS penalty applied).
        logprobs: ``[B, T]`` log-probability of each response token under the policy at rollout.
        ref_logprobs: ``[B, T]`` the same under the frozen reference (SFT) model.
        response_mask: ``[B, T]`` bool; each row a prefix with at least one real token.
        kl_coef: The KL coefficient ``beta`` (the KL controller's ``value``).
        kl_estimator: ``"k1"`` or ``"k3"``.

    Returns:
        ``rewards``: ``[B, T]``.
        ``kl``: ``[B, T]`` the per-token KL estimate, ``0`` at padding (log its row sums).

    Raises:
        ValueError: On an unknown estimator, mismatched shapes, or a mask that is not a non-empty prefix.
    """
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_penalized_rewards: kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}.")
    _check_response_mask("kl_penalized_rewards", response_mask, logprobs=logprobs, ref_logprobs=ref_logprobs)
    if scores.shape != response_mask.shape[:1]:
        raise ValueError(
            f"kl_penalized_rewards: scores must be [B] = {tuple(response_mask.shape[:1])}, got "
            f"{tuple(scores.shape)}. A reward head returns [B, 1]: call .squeeze(-1) first."
        )
    # Zero the log-ratio at padding first, so that a nan or inf there cannot reach exp().
    log_ratio = torch.where(response_mask, upcast(ref_logprobs) - upcast(logprobs), 0.0)  # log r
    kl = -log_ratio if kl_estimator == "k1" else torch.expm1(log_ratio) - log_ratio
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, _last_true_indices(response_mask)] += upcast(scores)
    return rewards, kl


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, response_mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation over response tokens (Schulman et al. 2016, eq. 11-16).

    Each response is one episode whose time steps are its tokens:
    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (eq. 12) and
    ``A_t = delta_t + gamma * lam * A_{t+1}`` (the recursion behind eq. 16), with ``V`` and ``A``
    taken as ``0`` after the last real token (the episode ends at the EOS or at the length limit;
    like TRL and OpenRLHF we do not bootstrap a truncated response). Returns, the value targets,
    are ``A_t + V_t`` (the ``TD(lam)`` return). With ``gamma = lam = 1``, ``A_t`` is the reward-to-go
    minus ``V_t``. Vectorized over ``B``, a loop over ``T`` backwards. Targets, not differentiated:
    runs under ``torch.no_grad()``.

    Args:
        rewards: ``[B, T]`` from :func:`kl_penalized_rewards`.
        values: ``[B, T]`` value-head predictions at rollout.
        response_mask: ``[B, T]`` bool, each row a prefix.
        gamma: Discount, in ``[0, 1]`` (1 in InstructGPT-style RLHF).
        lam: GAE ``lambda``, in ``[0, 1]`` (0.95 is common).

    Returns:
        ``advantages``: ``[B, T]``, ``0`` at padding.
        ``returns``: ``[B, T]`` ``advantages + values``, ``0`` at padding.
    """
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"gae: {name} must be in [0, 1], got {x}.")
    _check_response_mask("gae", response_mask, rewards=rewards, values=values)
    # Padding is zeroed first: then V_{t+1} = 0 after the last real token (no bootstrap), and
    # whatever padding held never leaks into an earlier advantage.
    r = torch.where(response_mask, upcast(rewards), 0.0)
    v = torch.where(response_mask, upcast(values), 0.0)
    advantages = torch.zeros_like(r)
    next_value = torch.zeros_like(r[:, 0])
    next_advantage = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
        next_value = v[:, t]
    advantages = torch.where(response_mask, advantages, 0.0)
    return advantages, advantages + v


# ======================================================================================
# Helpers
# ======================================================================================


def _check_response_mask(name: str, response_mask: Tensor, **tensors: Tensor) -> None:
    """``response_mask`` is bool ``[B, T]``, matches every tensor, and each row is a non-empty prefix."""
    if response_mask.dtype != torch.bool or response_mask.ndim != 2:
        raise TypeError(
            f"{name}: response_mask must be a bool [B, T] tensor, got {response_mask.dtype} of shape "
            f"{tuple(response_mask.shape)}; use truncate_after_eos() to build it."
        )
    for key, x in tensors.items():
        if x.shape != response_mask.shape:
            raise ValueError(
                f"{name}: {key} has shape {tuple(x.shape)} but response_mask has {tuple(response_mask.shape)}; "
                "every per-token tensor is [B, T] over the response tokens."
            )
    if (response_mask[:, 1:] & ~response_mask[:, :-1]).any():
        raise ValueError(
            f"{name}: response_mask must be a prefix in each row (real tokens, then padding); a row has a "
            "real token after padding. Right-pad responses and build the mask with truncate_after_eos()."
        )
    if not response_mask.any(dim=1).all():
        raise ValueError(f"{name}: a row of response_mask has no real token; every response needs at least one.")


def _last_true_indices(mask: Tensor) -> Tensor:
    """``[B]`` index of the last ``True`` of each row of a ``[B, T]`` bool mask (rows are non-empty)."""
    return mask.shape[1] - 1 - first_true_indices(mask.flip(1))
