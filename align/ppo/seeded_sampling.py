"""Sampling whose randomness belongs to the row, not to the batch or the process.

``generate(do_sample=True)`` draws each step's tokens from one random stream for the whole batch,
so the same prompt gets a different response when it sits in another batch or on another
process. With per-row seeds, each row's token at step ``s`` is ``argmax(logits / T + g)`` with
Gumbel noise ``g`` drawn from a generator seeded by ``(row seed, s)``: the Gumbel-max trick, an
exact sample from ``softmax(logits / T)`` (after top-p filtering), and a function of the row's
seed alone. A PPO run on ``N`` processes then samples the responses one process samples, which
is what makes the two comparable (``generation.row_seeds``).

Reference: Gumbel (1954); Maddison et al. 2014 ("A* Sampling"), the Gumbel-max trick.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, TopPLogitsWarper

_MASK = (1 << 63) - 1


def row_seed(seed: int, iteration: int, position: int) -> int:
    """The seed of the ``position``-th rollout of ``iteration`` (global position, any process)."""
    return ((seed * 1_000_003 + iteration) * 100_003 + position) & _MASK


class RowSeededGumbel(LogitsProcessor):
    """Adds per-row Gumbel noise to ``logits / temperature`` so greedy decoding samples.

    Use with ``do_sample=False`` (the argmax of the returned scores is the sample).

    Args:
        seeds: One seed per batch row.
        temperature: Sampling temperature (> 0).
        top_p: Nucleus threshold (1: the full softmax).
        prompt_length: Width of the (left-padded) prompt block; the step is counted from it.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float, prompt_length: int):
        if not temperature > 0:
            raise ValueError(f"RowSeededGumbel: temperature must be > 0, got {temperature}.")
        self.seeds, self.temperature, self.prompt_length = list(seeds), float(temperature), prompt_length
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.seeds):
            raise ValueError(f"RowSeededGumbel: {len(self.seeds)} seeds for a batch of {input_ids.shape[0]} rows.")
        step = input_ids.shape[1] - self.prompt_length
        scores = scores.float() / self.temperature
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        vocab = scores.shape[-1]
        noise = torch.stack([
            torch.rand(vocab, generator=torch.Generator().manual_seed((s * 4099 + step) & _MASK), dtype=torch.float64)
            for s in self.seeds
        ]).to(scores.device)
        gumbel = -torch.log(-torch.log(noise.clamp(min=1e-300)))
        return scores + gumbel.float()
