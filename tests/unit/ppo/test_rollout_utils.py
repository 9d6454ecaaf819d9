"""EOS truncation, the response mask and the no-EOS penalty. EOS = 2, PAD = 0 unless said."""

import pytest
import torch

from align.ppo.rollout_utils import apply_no_eos_penalty, contains_eos, first_true_indices, truncate_after_eos

EOS, PAD = 2, 0
T, F = True, False


def test_first_true_indices():
    mask = torch.tensor([[F, T, T], [F, F, F], [T, F, F], [F, F, T]])
    torch.testing.assert_close(first_true_indices(mask), torch.tensor([1, 3, 0, 2]))  # none -> T = 3
    assert first_true_indices(torch.zeros(2, 0, dtype=torch.bool)).tolist() == [0, 0]
    with pytest.raises(TypeError, match="bool"):
        first_true_indices(torch.zeros(2, 3))


def test_truncate_after_eos():
    responses = torch.tensor(
        [
            [5, 2, 7, 8],  # EOS in the middle: 7, 8 become pad; mask covers 5 and the EOS
            [5, 6, 7, 2],  # EOS at the end: unchanged, mask all True
            [5, 6, 7, 8],  # never ends: unchanged, mask all True
            [2, 6, 2, 8],  # EOS first, a second EOS later: only the first counts
        ]
    )
    out, mask = truncate_after_eos(responses, EOS, PAD)
    torch.testing.assert_close(out, torch.tensor([[5, 2, 0, 0], [5, 6, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]]))
    assert mask.tolist() == [[T, T, F, F], [T, T, T, T], [T, T, T, T], [T, F, F, F]]
    assert mask.dtype == torch.bool
    assert responses[0].tolist() == [5, 2, 7, 8]  # input not modified


def test_truncate_when_pad_is_eos():
    # Many tokenizers pad with EOS: generate() then writes EOS after the end; the first one still ends it.
    out, mask = truncate_after_eos(torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8]]), eos_token_id=2, pad_token_id=2)
    torch.testing.assert_close(out, torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8]]))
    assert mask.tolist() == [[T, T, F, F], [T, T, T, T]]


def test_contains_eos():
    responses = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert contains_eos(responses, EOS).tolist() == [T, F, T]


def test_apply_no_eos_penalty_replaces_only_unended():
    scores = torch.tensor([0.5, 3.0, -2.0, 1.0])
    ended = torch.tensor([T, F, T, F])
    # Replaced, not subtracted: 3.0 -> -1.0 (not 2.0), 1.0 -> -1.0 (not 0.0).
    out = apply_no_eos_penalty(scores, ended, penalty=-1.0)
    torch.testing.assert_close(out, torch.tensor([0.5, -1.0, -2.0, -1.0]))
    assert scores.tolist() == [0.5, 3.0, -2.0, 1.0]  # input not modified
    assert apply_no_eos_penalty(scores, ended, penalty=None) is scores  # off


def test_apply_no_eos_penalty_errors():
    with pytest.raises(ValueError, match="squeeze"):
        apply_no_eos_penalty(torch.zeros(3, 1), torch.ones(3, dtype=torch.bool), -1.0)
    with pytest.raises(TypeError, match="bool"):
        apply_no_eos_penalty(torch.zeros(3), torch.ones(3), -1.0)
