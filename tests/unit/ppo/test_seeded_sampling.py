"""Per-row seeded sampling: an exact sample of softmax(logits / T), a function of the row's seed
alone (not of the batch it sits in), and what generate_rollout samples with row_seeds."""

from __future__ import annotations

import pytest
import torch

from align.models.loading import build_tiny_llama
from align.ppo.rollout import generate_rollout
from align.ppo.seeded_sampling import RowSeededGumbel, row_seed
from tests.unit.data.helpers import make_tokenizer


def _pick(proc: RowSeededGumbel, logits: torch.Tensor, step: int = 0) -> torch.Tensor:
    ids = torch.zeros(logits.shape[0], proc.prompt_length + step, dtype=torch.long)
    return proc(ids, logits.clone()).argmax(-1)


def test_frequencies_match_the_softmax_at_the_temperature():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    n, temperature = 20_000, 0.7
    proc = RowSeededGumbel(list(range(n)), temperature, 1.0, prompt_length=3)
    picks = _pick(proc, logits.expand(n, -1))
    freq = torch.bincount(picks, minlength=5).double() / n
    expected = torch.softmax(logits.double() / temperature, -1)
    # 4 standard errors of a binomial proportion: fails for a wrong temperature or a biased noise.
    assert torch.all((freq - expected).abs() < 4 * torch.sqrt(expected * (1 - expected) / n)), (freq, expected)


def test_a_row_samples_the_same_token_in_any_batch_and_differs_by_step_and_seed():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    seeds = [row_seed(3, 7, k) for k in range(6)]
    whole = _pick(RowSeededGumbel(seeds, 1.0, 1.0, 4), logits)
    order = [4, 1, 5]
    part = _pick(RowSeededGumbel([seeds[k] for k in order], 1.0, 1.0, 4), logits[order])
    assert part.tolist() == whole[order].tolist()
    flat = torch.zeros(400, 50)  # uniform: any token is as likely
    by_seed = _pick(RowSeededGumbel(list(range(400)), 1.0, 1.0, 4), flat)
    by_step = torch.stack([_pick(RowSeededGumbel([5], 1.0, 1.0, 4), flat[:1], step=s) for s in range(400)]).flatten()
    assert len(set(by_seed.tolist())) > 30 and len(set(by_step.tolist())) > 30
    assert row_seed(3, 7, 0) != row_seed(3, 8, 0) != row_seed(4, 7, 0)


def test_top_p_never_samples_outside_the_nucleus_and_errors_are_clear():
    logits = torch.tensor([[3.0, 2.9, -5.0, -6.0]]).expand(2000, -1)
    picks = _pick(RowSeededGumbel(list(range(2000)), 1.0, 0.9, 2), logits)
    assert set(picks.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="3 seeds for a batch of 2 rows"):
        RowSeededGumbel([1, 2, 3], 1.0, 1.0, 2)(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        RowSeededGumbel([1], 0.0, 1.0, 2)


def test_generate_rollout_with_row_seeds_is_independent_of_the_batch():
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_llama(tok, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    prompts = [tok.encode(t) for t in ("a b c", "hello there friend", "x", "one two three four five")]
    seeds = [row_seed(0, 0, k) for k in range(4)]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    whole = generate_rollout(model, prompts, eos, pad, 10, row_seeds=seeds)
    alone = [generate_rollout(model, [p], eos, pad, 10, row_seeds=[s]) for p, s in zip(prompts, seeds)]
    for k, r in enumerate(alone):
        n = int(r.response_lengths()[0])
        assert whole.responses[k, :n].tolist() == r.responses[0, :n].tolist()
        assert int(whole.response_lengths()[k]) == n
    other = generate_rollout(model, prompts, eos, pad, 10, row_seeds=[row_seed(1, 0, k) for k in range(4)])
    assert other.responses.tolist() != whole.responses.tolist()  # another seed: other samples
