"""The PPO prompt order: a function of (seed, iteration), each prompt once per epoch."""

from __future__ import annotations

import torch

from align.ppo import prompt_order
from align.ppo.prompt_order import permutation, prompt_indices


def test_each_epoch_visits_every_prompt_once_even_across_batch_boundaries():
    n, batch = 10, 4  # 10 prompts, batches of 4: iteration 2 takes 2 rows from epoch 0 and 2 from epoch 1
    order = [i for it in range(5) for i in prompt_indices(n, it, batch, seed=3)]
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
    assert order[:10] != order[10:20]  # a new permutation each epoch
    assert prompt_indices(n, 2, batch, seed=3) == order[8:12]


def test_the_order_is_a_function_of_seed_and_iteration_alone():
    n, batch = 7, 3
    forward = [prompt_indices(n, it, batch, seed=5) for it in range(6)]
    prompt_order._PERMS.clear()  # a resumed process starts with an empty cache
    torch.manual_seed(123)  # and any global RNG state: the permutation has its own generator
    rng = torch.get_rng_state()
    backward = [prompt_indices(n, it, batch, seed=5) for it in reversed(range(6))][::-1]
    assert backward == forward
    assert torch.equal(torch.get_rng_state(), rng)  # nothing drawn from the global stream
    assert [prompt_indices(n, it, batch, seed=6) for it in range(6)] != forward


def test_the_permutation_is_pinned():
    # Resuming an old checkpoint depends on this formula: epoch e of seed s is
    # randperm(n) under a generator seeded s * 7919 + e.
    expected = torch.randperm(9, generator=torch.Generator().manual_seed(42 * 7919 + 2))
    assert torch.equal(permutation(9, 42, 2), expected)
    assert prompt_indices(9, 4, 4, seed=42)[2:] == expected[:2].tolist()  # positions 18, 19: epoch 2, rows 0, 1
