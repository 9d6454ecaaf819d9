"""Experience making: from a rollout to an :class:`~align.ppo.experience.Experience`.

Old and reference log-probabilities, values, reward-model scores (normalized with the reward
model's saved mean/std, the no-EOS penalty applied), KL-shaped per-token rewards, GAE advantages
and returns, all without gradient and in micro-batches (so a large rollout batch never holds all
of its ``[B, T, V]`` logits at once). References: InstructGPT (Ouyang et al. 2022), Huang et al.
2024 ("The N+ Implementation Details of RLHF with PPO"), OpenRLHF ``experience_maker.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from align.masked import Reduce, masked_mean
from align.ppo.advantages import gae, kl_penalized_rewards, whiten_advantages
from align.ppo.experience import Experience
from align.ppo.models import PPOModels, response_logprobs, response_values, sequence_scores
from align.ppo.rollout import Rollout
from align.ppo.rollout_utils import apply_no_eos_penalty


@dataclass
class RewardSpec:
    """How reward-model scores become PPO scores.

    Attributes:
        mean, std: The reward model's scores on SFT samples (``reward_normalization.json``);
            scores become ``(r - mean) / std``. ``mean=0, std=1`` leaves them raw.
        no_eos_penalty: The score of a response that never produced EOS (``None``: off).
        eos_token_id, pad_token_id: The policy tokenizer's.
        suffix: Chat-template tokens after the EOS (:func:`~align.ppo.models.reward_suffix_ids`).
    """

    mean: float
    std: float
    no_eos_penalty: float | None
    eos_token_id: int
    pad_token_id: int
    suffix: list[int]


@torch.no_grad()
def score_rollout(models: PPOModels, rollout: Rollout, spec: RewardSpec, micro_batch_size: int) -> tuple[Tensor, Tensor]:
    """``[B]`` normalized reward-model scores, before and after the no-EOS penalty."""
    raw = []
    with models.reward() as rm:
        for rows in _chunks(len(rollout), micro_batch_size):
            raw.append(sequence_scores(rm, rollout.select(rows), spec.eos_token_id, spec.pad_token_id, spec.suffix))
    normalized = (torch.cat(raw) - spec.mean) / spec.std
    return normalized, apply_no_eos_penalty(normalized, rollout.ended, spec.no_eos_penalty)


@torch.no_grad()
def reference_logprobs(models: PPOModels, rollout: Rollout, temperature: float, micro_batch_size: int) -> Tensor:
    """``[B, T]`` log-probabilities of the response tokens under the frozen reference."""
    with models.reference() as ref:
        return torch.cat([response_logprobs(ref, rollout.select(r), temperature)
                          for r in _chunks(len(rollout), micro_batch_size)])


@torch.no_grad()
def make_experience(
    models: PPOModels,
    rollout: Rollout,
    spec: RewardSpec,
    kl_coef: float,
    kl_estimator: str,
    gamma: float,
    lam: float,
    whiten: bool,
    temperature: float,
    micro_batch_size: int,
    reduce: Reduce | None = None,
) -> tuple[Experience, dict[str, float]]:
    """Everything PPO needs about ``rollout``; and its statistics for logging.

    ``reduce`` sums a tensor over the processes that share the batch (data parallelism): the
    advantages are then whitened, and the statistics taken, over the whole batch.

    Returns:
        The experience; and ``rollout/score_mean`` (normalized RM score before the no-EOS
        penalty), ``rollout/score_penalized_mean``, ``ppo/kl_ref`` (mean per-response KL to the
        reference, summed over tokens with the chosen estimator), ``rollout/response_len``,
        ``rollout/no_eos_frac``, ``ppo/value_mean``, ``ppo/return_mean``, ``ppo/advantage_mean``
        (before whitening).
    """
    was = models.policy.training, models.value.training
    models.policy.eval()
    models.value.eval()
    chunks = _chunks(len(rollout), micro_batch_size)
    old_logprobs = torch.cat([response_logprobs(models.policy, rollout.select(r), temperature) for r in chunks])
    values = torch.cat([response_values(models.value, rollout.select(r)) for r in chunks])
    ref_logprobs = reference_logprobs(models, rollout, temperature, micro_batch_size)
    raw_scores, scores = score_rollout(models, rollout, spec, micro_batch_size)
    mask = rollout.response_mask
    rewards, kl = kl_penalized_rewards(scores, old_logprobs, ref_logprobs, mask, kl_coef, kl_estimator)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    def mean(x: Tensor, where: Tensor | None = None) -> float:  # over the whole batch (every process)
        if where is None and reduce is None:
            return x.float().mean().item()
        return masked_mean(x, torch.ones_like(x, dtype=torch.bool) if where is None else where, reduce=reduce).item()

    stats = {
        "rollout/score_mean": mean(raw_scores),
        "rollout/score_penalized_mean": mean(scores),
        "ppo/kl_ref": mean(kl.sum(1)),
        "rollout/response_len": mean(mask.sum(1).float()),
        "rollout/no_eos_frac": mean((~rollout.ended).float()),
        "ppo/value_mean": mean(values, mask),
        "ppo/return_mean": mean(returns, mask),
        "ppo/advantage_mean": mean(advantages, mask),
    }
    if whiten:
        advantages = whiten_advantages(advantages, mask, reduce)
    models.policy.train(was[0])
    models.value.train(was[1])
    exp = Experience(
        query_responses=rollout.query_responses, responses=rollout.responses, response_mask=mask,
        old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, values=values, scores=scores,
        rewards=rewards, advantages=advantages, returns=returns, context_length=rollout.context_length,
        attention_mask=rollout.attention_mask,
    )
    return exp, stats


def experience_rollout(exp: Experience) -> Rollout:
    """The :class:`Rollout` view of an experience (minibatch), for the training forward passes."""
    from align.ppo.rollout import positions_from_mask

    if exp.attention_mask is None:
        raise ValueError("experience_rollout: the experience has no attention_mask (make_experience sets it).")
    return Rollout(
        query_responses=exp.query_responses, attention_mask=exp.attention_mask,
        position_ids=positions_from_mask(exp.attention_mask), responses=exp.responses,
        response_mask=exp.response_mask, ended=exp.response_mask.new_ones(len(exp)),
        context_length=exp.context_length,
    )


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, i + size) for i in range(0, n, max(1, size))]
