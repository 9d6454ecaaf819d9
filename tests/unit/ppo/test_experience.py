"""The Experience batch: shape validation and minibatch iteration."""

import dataclasses

import pytest
import torch

from align.ppo.experience import Experience

B, P, T = 10, 2, 3


def make_experience(b=B):
    """Row ``i`` holds ``i`` in every field (its mask: ``i % T + 1`` real tokens), so a minibatch shows
    whether its fields stay aligned."""
    rows = torch.arange(b, dtype=torch.float32)
    per_token = rows[:, None].expand(b, T).clone()
    return Experience(
        query_responses=torch.arange(b)[:, None].expand(b, P + T).clone(),
        responses=per_token.long(),
        response_mask=torch.arange(T)[None, :] < (torch.arange(b)[:, None] % T + 1),
        old_logprobs=per_token.clone(),
        ref_logprobs=per_token.clone(),
        values=per_token.clone(),
        scores=rows.clone(),
        rewards=per_token.clone(),
        advantages=per_token.clone(),
        returns=per_token.clone(),
        context_length=P,
    )


def test_minibatches_cover_every_row_once_and_keep_last_partial():
    exp = make_experience()
    assert len(exp) == B
    batches = list(exp.minibatches(4, generator=torch.Generator().manual_seed(0)))
    assert [len(mb) for mb in batches] == [4, 4, 2]  # 10 = 4 + 4 + 2: the partial batch is kept
    seen = torch.cat([mb.scores for mb in batches]).long()
    assert sorted(seen.tolist()) == list(range(B))  # disjoint and complete
    assert seen.tolist() != list(range(B))  # shuffled (fixed seed)
    for mb in batches:  # every field indexed by the same rows
        for f in dataclasses.fields(mb):
            x = getattr(mb, f.name)
            if isinstance(x, torch.Tensor) and f.name not in ("scores", "response_mask"):
                assert (x.float() == mb.scores.view(-1, *([1] * (x.ndim - 1)))).all(), f.name
        torch.testing.assert_close(mb.response_mask.sum(1), mb.scores.long() % T + 1)
        assert mb.context_length == P and mb.query_responses.shape == (len(mb), P + T)


def test_minibatches_reproducible_with_seed_and_reshuffled_per_pass():
    exp = make_experience()
    order = lambda g: torch.cat([mb.scores for mb in exp.minibatches(3, generator=g)]).tolist()  # noqa: E731
    assert order(torch.Generator().manual_seed(1)) == order(torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    assert order(g) != order(g)  # the next epoch gets a new permutation
    assert [len(mb) for mb in exp.minibatches(B)] == [B]
    assert [len(mb) for mb in exp.minibatches(100)] == [B]
    with pytest.raises(ValueError, match="batch_size"):
        next(exp.minibatches(0))


def test_to_device():
    moved = make_experience().to("meta")
    for f in dataclasses.fields(moved):
        x = getattr(moved, f.name)
        assert not isinstance(x, torch.Tensor) or x.device.type == "meta"
    assert moved.context_length == P


def test_shape_validation_messages():
    exp = make_experience()
    with pytest.raises(ValueError, match=r"values has shape \(10, 4\) but responses is \(10, 3\)"):
        dataclasses.replace(exp, values=torch.zeros(B, T + 1))
    with pytest.raises(ValueError, match=r"scores must be \[B\]"):
        dataclasses.replace(exp, scores=torch.zeros(B, 1))
    with pytest.raises(ValueError, match="context_length"):
        dataclasses.replace(exp, context_length=P + 1)
    with pytest.raises(TypeError, match="bool"):
        dataclasses.replace(exp, response_mask=torch.ones(B, T))
    with pytest.raises(ValueError, match=r"responses must be \[B, T\]"):
        dataclasses.replace(exp, responses=torch.zeros(B, dtype=torch.long))
