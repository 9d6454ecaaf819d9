"""The order PPO visits its train prompts: epochs of a seeded permutation.

Position ``k`` of the run (``k = iteration * batch_size + row``) is prompt
``permutation(epoch)[index]`` with ``epoch, index = divmod(k, n)``: every epoch visits each prompt
once, and a batch that crosses an epoch boundary takes its last rows from the next epoch's
permutation. The order is a function of ``(seed, iteration)`` alone (no loader state), so a
resumed run needs only the iteration counter of its checkpoint (:mod:`align.ppo.checkpoint`).
"""

from __future__ import annotations

import torch


def prompt_indices(n: int, iteration: int, batch_size: int, seed: int) -> list[int]:
    """Indices into the ``n`` train prompts of the ``batch_size`` rollouts of ``iteration``."""
    out = []
    for pos in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, index = divmod(pos, n)
        out.append(int(permutation(n, seed, epoch)[index]))
    return out


_PERMS: dict[tuple[int, int, int], torch.Tensor] = {}


def permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """``[n]`` the prompt order of ``epoch`` (cached; its own generator, so the global RNG is untouched)."""
    key = (n, seed, epoch)
    if key not in _PERMS:
        _PERMS[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return _PERMS[key]
