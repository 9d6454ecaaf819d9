"""Masked statistics over padded tensors: mean, variance, whitening and per-row sums.

Every function takes a bool ``mask`` (``True`` on real entries). Padding never leaks into a result:
it is selected away with ``torch.where`` (so even a ``nan`` there is harmless). Statistics are
computed in at least fp32. Used by the advantage functions (:mod:`align.ppo.advantages`), the
objectives (:mod:`align.losses`) and evaluation's sequence log-probabilities.

References: TRL <= 1.12 ``core.masked_mean``/``masked_var``/``masked_whiten``; OpenRLHF ``models/utils``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

WHITEN_EPS = 1e-8

Reduce = Callable[[Tensor], Tensor]
"""Sums a tensor over the processes that share a batch (data parallelism)."""


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None, reduce: Reduce | None = None) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is ``True``.

    Args:
        x: Tensor of any shape.
        mask: Bool tensor of the same shape.
        dim: Reduce over this dimension only; ``None`` reduces over everything.
        reduce: Sums a tensor over the processes that share the batch (data parallelism): the
            mean is then the whole batch's, not this process's share's (``dim=None`` only).

    Returns:
        A scalar (``dim=None``) or ``x`` reduced over ``dim``. With ``dim`` given, a slice with no
        selected entry has mean ``0``.

    Raises:
        TypeError: If ``mask`` is not bool.
        ValueError: If the shapes differ, or ``dim=None`` and nothing is selected.
    """
    check_mask("masked_mean", x, mask)
    values = torch.where(mask, upcast(x), 0.0)
    if dim is not None:
        if reduce is not None:
            raise ValueError("masked_mean: reduce (over processes) needs dim=None.")
        return values.sum(dim) / mask.sum(dim).clamp(min=1)
    total, count = values.sum(), mask.sum()
    if reduce is not None:
        total, count = reduce(total), reduce(count)
    if not count:
        raise ValueError("masked_mean: the mask selects no entry, so the mean is undefined.")
    return total / count


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True, reduce: Reduce | None = None) -> Tensor:
    """Variance of ``x`` over the entries where ``mask`` is ``True``.

    Args:
        x: Tensor of any shape.
        mask: Bool tensor of the same shape.
        unbiased: Apply Bessel's correction ``n / (n - 1)``, as TRL's ``masked_var`` does.
        reduce: As in :func:`masked_mean`: the whole batch's variance over processes.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: If fewer than 2 entries are selected with ``unbiased=True`` (none otherwise).
    """
    mean = masked_mean(x, mask, reduce=reduce)
    var = masked_mean((upcast(x) - mean) ** 2, mask, reduce=reduce)
    if unbiased:
        n = mask.sum() if reduce is None else reduce(mask.sum())
        if n < 2:
            raise ValueError(
                f"masked_var: the mask selects {int(n)} entry; the unbiased variance needs at least 2 "
                "(use a larger batch, or unbiased=False)."
            )
        var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, reduce: Reduce | None = None) -> Tensor:
    """Normalize ``x`` to unit variance (and zero mean) using statistics of the selected entries only.

    ``(x - mean) / sqrt(var + 1e-8)`` with the unbiased masked variance; with ``shift_mean=False``
    the mean is added back, so only the scale changes (TRL's option for whitening rewards, which
    keeps their sign). Padding does not enter the statistics, and is ``0`` in the output.

    Args:
        x: ``[B, T]`` (or any shape).
        mask: Bool, same shape.
        shift_mean: Subtract the mean (``True``) or keep it (``False``).
        reduce: As in :func:`masked_mean`: the whole batch's statistics over processes.

    Returns:
        Same shape as ``x``, ``0`` where ``mask`` is ``False``.
    """
    mean, var = masked_mean(x, mask, reduce=reduce), masked_var(x, mask, reduce=reduce)
    whitened = (upcast(x) - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0.0)


def masked_sequence_sum(token_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Sum of per-token log-probabilities over the masked (response) positions of each row.

    Args:
        token_logprobs: ``[B, T]`` log p(token_t | tokens_<t); any value where ``mask`` is False
            (``-inf`` at padding is fine: it is never multiplied, only skipped).
        mask: ``[B, T]`` bool, True at response tokens.

    Returns:
        ``[B]`` float32: ``log p(response | prompt)`` per row.
    """
    if token_logprobs.shape != mask.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"masked_sequence_sum: need token_logprobs and a bool mask of one shape; got "
            f"{tuple(token_logprobs.shape)} and {tuple(mask.shape)} ({mask.dtype})."
        )
    return torch.where(mask, token_logprobs.float(), 0.0).sum(-1)


def upcast(x: Tensor) -> Tensor:
    """At least fp32: bf16 statistics keep under 3 significant digits."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def check_mask(name: str, x: Tensor, mask: Tensor) -> None:
    if mask.dtype != torch.bool:
        raise TypeError(f"{name}: mask must be a bool tensor (True = real token), got {mask.dtype}; use mask.bool().")
    if mask.shape != x.shape:
        raise ValueError(f"{name}: mask has shape {tuple(mask.shape)} but x has {tuple(x.shape)}; they must match.")
