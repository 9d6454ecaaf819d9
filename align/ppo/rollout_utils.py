"""Post-processing of generated responses: stop-token truncation, the response mask, the no-EOS penalty.

Responses are ``[B, T]`` token ids, right-padded, as ``generate`` returns them after the prompt.
A response *ends* when it produces the EOS token (the end-of-turn token here) before the length
limit; one that runs out of tokens never ends. References: TRL <= 1.12 ``PPOTrainer``
(``first_true_indices``, ``truncate_response``, ``missing_eos_penalty``); Huang et al. 2024, "The N+
Implementation Details of RLHF with PPO", details on EOS truncation and the no-EOS penalty.
"""

from __future__ import annotations

import torch
from torch import Tensor


def first_true_indices(mask: Tensor) -> Tensor:
    """Index of the first ``True`` of each row, or the row length ``T`` when there is none.

    Args:
        mask: ``[B, T]`` bool.

    Returns:
        ``[B]`` long.

    Raises:
        TypeError: If ``mask`` is not bool.
        ValueError: If ``mask`` is not 2-D.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"first_true_indices: mask must be bool, got {mask.dtype}; compare first (x == value).")
    if mask.ndim != 2:
        raise ValueError(f"first_true_indices: mask must be [B, T], got shape {tuple(mask.shape)}.")
    b, t = mask.shape
    if t == 0:
        return torch.zeros(b, dtype=torch.long, device=mask.device)
    # T at False entries, the column index at True entries: the row minimum is the first True (or T).
    positions = torch.arange(t, device=mask.device).expand_as(mask)
    return torch.where(mask, positions, t).min(dim=1).values


def truncate_after_eos(responses: Tensor, eos_token_id: int, pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Replace everything after each row's first EOS by padding, and build the response mask.

    The EOS itself is kept, and is inside the mask: the policy is credited (and the value head
    trained) on the decision to stop. A response that never produced EOS keeps all ``T`` tokens,
    mask all ``True``. Works when ``pad_token_id == eos_token_id`` too: only the *first* EOS counts.

    Args:
        responses: ``[B, T]`` generated token ids (without the prompt).
        eos_token_id: The stop token.
        pad_token_id: The token written after the EOS.

    Returns:
        ``responses``: ``[B, T]`` the truncated ids, ``pad_token_id`` after the first EOS.
        ``response_mask``: ``[B, T]`` bool, ``True`` up to and including the first EOS.
    """
    if responses.ndim != 2:
        raise ValueError(f"truncate_after_eos: responses must be [B, T], got shape {tuple(responses.shape)}.")
    eos_at = first_true_indices(responses == eos_token_id)  # [B], T when there is no EOS
    positions = torch.arange(responses.shape[1], device=responses.device)
    response_mask = positions[None, :] <= eos_at[:, None]
    return torch.where(response_mask, responses, pad_token_id), response_mask


def contains_eos(responses: Tensor, eos_token_id: int) -> Tensor:
    """Whether each response produced the EOS token, i.e. ended before the length limit.

    Args:
        responses: ``[B, T]`` token ids (truncated or not: the answer is the same).

    Returns:
        ``[B]`` bool.
    """
    if responses.ndim != 2:
        raise ValueError(f"contains_eos: responses must be [B, T], got shape {tuple(responses.shape)}.")
    return (responses == eos_token_id).any(dim=1)


def apply_no_eos_penalty(scores: Tensor, ended: Tensor, penalty: float | None) -> Tensor:
    """Give responses that never produced EOS the score ``penalty`` instead of the reward model's.

    A response cut off by the length limit is not a finished answer, and a reward model may still
    like its beginning; without a penalty the policy learns to ramble until the limit. Huang et al.
    2024 ("N+ implementation details", the EOS trick) and TRL <= 0.10 (``non_eos_penalty`` with
    ``penalty_reward_value = -1``) *replace* the score by a fixed penalty score; TRL >= 0.11
    (``missing_eos_penalty``) *subtracts* the penalty from the score instead. We replace: the
    configuration is "the score of a response that never ends", independent of what the reward
    model said about it. Apply it to the normalized scores, before KL shaping, so that the penalty
    is on the same scale as the scores (``-1`` is about one standard deviation below the mean).

    Args:
        scores: ``[B]`` reward-model scores.
        ended: ``[B]`` bool, from :func:`contains_eos`.
        penalty: The score given to responses that never ended; ``None`` turns the penalty off.

    Returns:
        ``[B]`` scores, a new tensor (``scores`` itself when ``penalty`` is ``None``).
    """
    if ended.dtype != torch.bool:
        raise TypeError(f"apply_no_eos_penalty: ended must be bool, got {ended.dtype}; use contains_eos().")
    if scores.ndim != 1 or scores.shape != ended.shape:
        raise ValueError(
            f"apply_no_eos_penalty: scores and ended must both be [B]; got {tuple(scores.shape)} and "
            f"{tuple(ended.shape)}. A reward head returns [B, 1]: call .squeeze(-1) first."
        )
    if penalty is None:
        return scores
    return torch.where(ended, scores, torch.as_tensor(penalty, dtype=scores.dtype, device=scores.device))
