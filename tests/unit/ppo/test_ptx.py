"""PPO-ptx demonstration batches: every row once per epoch, seeded, resumable by position."""

import torch

from align.ppo.ptx import DemonstrationBatches

ROWS = [([10 + i, 20 + i, 30 + i][: 1 + i % 3], [0, 1, 1][: 1 + i % 3]) for i in range(7)]


def _firsts(batches, n):
    return [int(t) for _ in range(n) for t in batches.next("cpu")[0][:, 0]]


def test_each_epoch_visits_every_row_once_in_a_seeded_order():
    seen = _firsts(DemonstrationBatches(ROWS, 7, pad_token_id=0, seed=3), 2)
    assert sorted(seen[:7]) == sorted(seen[7:]) == [10 + i for i in range(7)]
    assert seen[:7] != seen[7:]  # a new permutation per epoch
    assert seen == _firsts(DemonstrationBatches(ROWS, 7, pad_token_id=0, seed=3), 2)


def test_a_restored_position_continues_the_same_sequence():
    straight = _firsts(DemonstrationBatches(ROWS, 3, pad_token_id=0, seed=1), 5)
    resumed = DemonstrationBatches(ROWS, 3, pad_token_id=0, seed=1)
    resumed.position = 6  # what a checkpoint after two batches stores
    assert _firsts(resumed, 3) == straight[6:]


def test_labels_cover_assistant_tokens_only_and_padding_is_masked():
    ids, attn, labels = DemonstrationBatches(ROWS, 7, pad_token_id=0, seed=0).next("cpu")
    assert (labels[attn == 0] == -100).all()  # padding
    assert (labels[:, 0] == -100).all()  # every row's first token is outside the assistant mask
    assert torch.equal(labels[labels != -100], ids[labels != -100]) and (labels != -100).any()
