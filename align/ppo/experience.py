"""One batch of PPO rollouts, with the shapes of its fields, and its minibatch iteration.

OpenRLHF ``trainer/ppo_utils/experience_maker.py`` (``Experience``) and torchtune
``rlhf/_types.py`` (``Trajectory``), with the tensor names of TRL <= 1.12 ``PPOTrainer``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch
from torch import Tensor

# Fields that are [B, T] over the response tokens.
PER_TOKEN_FIELDS = (
    "responses",
    "response_mask",
    "old_logprobs",
    "ref_logprobs",
    "values",
    "rewards",
    "advantages",
    "returns",
)


@dataclass
class Experience:
    """A batch of ``B`` rollouts, everything PPO needs to optimize on them.

    ``P`` is the prompt (context) length and ``T`` the padded response length; prompts are left-padded
    to ``P`` and responses right-padded to ``T``. Every ``[B, T]`` field is aligned with
    ``responses``: position ``t`` is about response token ``t``. All fields are computed at rollout
    time, without gradient.

    Attributes:
        query_responses: ``[B, P + T]`` long, prompt then response token ids (the model's input).
        responses: ``[B, T]`` long, response token ids, ``pad`` after the first EOS.
        response_mask: ``[B, T]`` bool, ``True`` on real response tokens up to and including the EOS.
        old_logprobs: ``[B, T]`` log-probability of each response token under the policy at rollout
            (the ``old_logprobs`` of :func:`align.losses.ppo_policy_loss`).
        ref_logprobs: ``[B, T]`` the same under the frozen reference (SFT) model.
        values: ``[B, T]`` value-head predictions at rollout (the ``old_values`` of
            :func:`align.losses.ppo_value_loss`).
        scores: ``[B]`` reward-model scores, normalized, with the no-EOS penalty applied.
        rewards: ``[B, T]`` KL-shaped per-token rewards (:func:`~align.ppo.advantages.kl_penalized_rewards`).
        advantages: ``[B, T]`` GAE advantages (whitened or not, as the loop decides).
        returns: ``[B, T]`` value targets, ``advantages + values`` before whitening.
        context_length: ``P``, where the response starts in ``query_responses``.
        attention_mask: ``[B, P + T]`` long, 1 on real prompt and response tokens (the prompt is
            left-padded); ``None`` means "every token not equal to padding", which the loop never
            relies on since a model may emit the pad token.
    """

    query_responses: Tensor
    responses: Tensor
    response_mask: Tensor
    old_logprobs: Tensor
    ref_logprobs: Tensor
    values: Tensor
    scores: Tensor
    rewards: Tensor
    advantages: Tensor
    returns: Tensor
    context_length: int
    attention_mask: Tensor | None = None

    def __post_init__(self) -> None:
        if self.responses.ndim != 2:
            raise ValueError(f"Experience: responses must be [B, T], got shape {tuple(self.responses.shape)}.")
        if self.response_mask.dtype != torch.bool:
            raise TypeError(
                f"Experience: response_mask must be bool (True = real token), got {self.response_mask.dtype}; "
                "use truncate_after_eos() to build it."
            )
        b, t = self.responses.shape
        for name in PER_TOKEN_FIELDS:
            shape = tuple(getattr(self, name).shape)
            if shape != (b, t):
                raise ValueError(
                    f"Experience: {name} has shape {shape} but responses is {(b, t)}; every per-token "
                    "field is [B, T] over the response tokens, aligned with responses."
                )
        if tuple(self.scores.shape) != (b,):
            raise ValueError(
                f"Experience: scores must be [B] = {(b,)}, got {tuple(self.scores.shape)}; one score per "
                "rollout (a reward head returns [B, 1]: call .squeeze(-1) first)."
            )
        if not isinstance(self.context_length, int) or self.context_length < 0:
            raise ValueError(f"Experience: context_length must be an int >= 0, got {self.context_length!r}.")
        expected = (b, self.context_length + t)
        if tuple(self.query_responses.shape) != expected:
            raise ValueError(
                f"Experience: query_responses has shape {tuple(self.query_responses.shape)}, expected "
                f"[B, context_length + T] = {expected} (context_length={self.context_length}, T={t})."
            )

        if self.attention_mask is not None and self.attention_mask.shape != self.query_responses.shape:
            raise ValueError(
                f"Experience: attention_mask has shape {tuple(self.attention_mask.shape)} but "
                f"query_responses is {tuple(self.query_responses.shape)}."
            )

    def __len__(self) -> int:
        """``B``, the number of rollouts."""
        return self.responses.shape[0]

    def to(self, device: torch.device | str) -> Experience:
        """A copy with every tensor on ``device``."""
        return self._map(lambda x: x.to(device))

    def minibatches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Experience]:
        """Shuffle the rollouts and yield them in minibatches of ``batch_size`` rows.

        One pass (one PPO epoch) uses every row exactly once; the minibatches are disjoint, and the
        last one holds the ``B mod batch_size`` rows left over when ``batch_size`` does not divide
        ``B`` (kept, not dropped: every rollout was paid for). Rows stay whole: a minibatch is an
        ``Experience`` of complete rollouts, every field indexed alike.

        Args:
            batch_size: Rollouts per minibatch, ``>= 1``.
            generator: A CPU ``torch.Generator`` for the permutation (seed it for reproducibility).

        Yields:
            ``Experience`` minibatches.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Experience.minibatches: batch_size must be an int >= 1, got {batch_size!r}.")
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size].to(self.responses.device)
            yield self._map(lambda x: x[index])

    def trimmed(self) -> Experience:
        """The same rollouts without the columns no row uses: leading prompt columns that are
        padding in every row, and response columns past the longest real response.

        A minibatch of a few rollouts is usually narrower than the whole batch, and every removed
        column is a position the forward and backward passes no longer compute. Masked positions
        contribute nothing to any loss, so the result is the same. Needs ``attention_mask``.
        """
        if self.attention_mask is None:
            return self
        p = self.context_length
        prompt_used = self.attention_mask[:, :p].any(0)
        start = int(prompt_used.long().argmax()) if bool(prompt_used.any()) else p - 1
        start = min(start, p - 1)  # keep the last prompt column: its logits predict response token 0
        t = max(int(self.response_mask.sum(1).max()), 1)
        cut = {name: getattr(self, name)[:, :t] for name in PER_TOKEN_FIELDS}
        return Experience(
            query_responses=self.query_responses[:, start : p + t], scores=self.scores,
            context_length=p - start, attention_mask=self.attention_mask[:, start : p + t], **cut,
        )

    def _map(self, fn) -> Experience:
        """A new ``Experience`` with ``fn`` applied to every tensor field."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        return Experience(**{k: fn(v) if isinstance(v, Tensor) else v for k, v in kwargs.items()})
