"""Masks and random batches shared by the unit tests of masked statistics and advantages."""

import torch


def prefix_mask(lengths, t):
    """``[B, t]`` bool: row ``b`` is True on its first ``lengths[b]`` positions."""
    return torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]


def random_batch(seed=0, lengths=(5, 1, 3, 6), t=6):
    """Two seeded ``[B, t]`` random tensors and the prefix mask of ``lengths``."""
    g = torch.Generator().manual_seed(seed)
    mask = prefix_mask(lengths, t)
    return torch.randn(len(lengths), t, generator=g), torch.randn(len(lengths), t, generator=g), mask
