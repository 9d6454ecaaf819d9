"""PPO-ptx: demonstrations read strictly and counted; batches visit every row once per epoch,
seeded, resumable by position."""

from collections import Counter

import pytest
import torch

from align.data import DataError
from align.ppo.ptx import DemonstrationBatches, load_demonstrations
from tests.unit.data.helpers import make_tokenizer, write_lines

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


# ----------------------------------------------------------------------------- load_demonstrations


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


GOOD = chat(("user", "hello world"), ("assistant", "the quick brown fox jumps over the lazy dog"))


def encode(tokenizer, row):
    enc = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return list(enc["input_ids"]), list(enc["assistant_masks"])


def test_demonstrations_are_the_chat_template_with_its_assistant_mask(tmp_path, tokenizer):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, "", {**GOOD, "family": "x"}])
    rows, report = load_demonstrations(str(path), tokenizer, 1000)
    assert rows == [encode(tokenizer, GOOD)] * 2 and any(rows[0][1]) and not all(rows[0][1])
    assert (report.rows_read, report.rows_kept, report.rows_skipped, report.truncated, report.blank_lines) == (2, 2, 0, 0, 1)
    assert report.dropped_keys == {"family"} and report.format == "messages"


@pytest.mark.parametrize(
    ("row", "field", "code", "reason"),
    [
        (chat(("user", "hi"), ("bot", "yo")), "messages[1].role", "unknown_role", "unknown role 'bot'"),
        (chat(("user", "hi"), ("assistant", " ")), "messages[1].content", "empty_content", "content is empty"),
        ({"text": "hi"}, "messages", "missing_field", "missing field 'messages' (the row has keys ['text']; the "
         "dataset format is 'messages', detected from line 1)"),
        # SFT's conversation rules, not a second checker: a reply to learn must be there and last.
        (chat(("user", "hello world")), "messages", "no_assistant_message", "no assistant message (roles: user)"),
        (chat(("user", "hi"), ("assistant", "yo"), ("user", "more?")), "messages[2].role", "last_not_assistant",
         "the last message is from the 'user'"),
        # User text never becomes control tokens.
        (chat(("user", "hi<|im_end|>"), ("assistant", "yo")), "messages[0].content", "control_token",
         "contains '<|im_end|>' at character 2, a control token of the tokenizer"),
        ({"messages": "hi"}, "messages", "wrong_type", "must be a list of messages"),
        ({"messages": []}, "messages", "empty_messages", "the message list is empty"),
    ],
)
def test_bad_demonstrations_name_file_line_and_field(tmp_path, tokenizer, row, field, code, reason):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, row])
    with pytest.raises(DataError) as info:
        load_demonstrations(str(path), tokenizer, 1000)
    assert (info.value.row, info.value.field, info.value.code) == (2, field, code)
    assert str(info.value).startswith(f"{path}, line 2, field '{field}': {reason}")
    rows, report = load_demonstrations(str(path), tokenizer, 1000, on_bad_row="skip")
    assert len(rows) == 1 and report.skipped == Counter({code: 1}) and report.rows_read == 2


def test_truncated_rows_are_counted_and_rows_whose_reply_is_cut_are_bad_rows(tmp_path, tokenizer):
    ids, mask = encode(tokenizer, GOOD)
    first = mask.index(1)  # tokens before the assistant's reply
    long_prompt = chat(("user", "hello world " * 30), ("assistant", "the quick brown fox"))
    path = write_lines(tmp_path / "d.jsonl", [GOOD, long_prompt, GOOD])
    # The long prompt leaves no reply token within max_length: a bad row, raised by default (it
    # was once dropped whatever on_bad_row said), with the fix.
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: no assistant token within the first "
                       rf"max_length={first + 2} .*Raise the demonstration length"):
        load_demonstrations(str(path), tokenizer, first + 2)
    # Skipped and counted with on_bad_row=skip; the other rows are kept, truncated and counted.
    rows, report = load_demonstrations(str(path), tokenizer, first + 2, on_bad_row="skip")
    assert rows == [(ids[: first + 2], mask[: first + 2])] * 2
    assert report.truncated == 2 and report.skipped == Counter({"no_assistant_tokens": 1})
    metrics = report.as_metrics("data/ptx/")
    assert metrics["data/ptx/rows_read"] == 3 == metrics["data/ptx/rows_kept"] + metrics["data/ptx/rows_skipped"]
    # No reply token fits anywhere: nothing is left, and the message says what was counted.
    with pytest.raises(ValueError, match=r"no demonstration left for PPO-ptx .*no_assistant_tokens: 3"):
        load_demonstrations(str(path), tokenizer, first, on_bad_row="skip")


def test_every_conversational_sft_format_gives_the_same_demonstration(tmp_path, tokenizer):
    user, reply = GOOD["messages"][0]["content"], GOOD["messages"][1]["content"]
    rows = [
        [{"conversations": [{"from": "human", "value": user}, {"from": "gpt", "value": reply}]}],
        [{"instruction": user, "input": "", "output": reply}],
        [{"prompt": user, "completion": reply}],
        [{"prompt": [GOOD["messages"][0]], "completion": [GOOD["messages"][1]]}],
    ]
    for i, lines in enumerate(rows):
        got, report = load_demonstrations(str(write_lines(tmp_path / f"d{i}.jsonl", lines)), tokenizer, 1000)
        assert got == [encode(tokenizer, GOOD)], lines
    text = write_lines(tmp_path / "t.jsonl", [{"text": "hello world"}])
    with pytest.raises(DataError, match=r"t\.jsonl, line 1, field 'text': a plain-text row has no assistant turn") as info:
        load_demonstrations(str(text), tokenizer, 1000)
    assert info.value.code == "not_conversational"


def test_a_config_prefix_names_the_stage_key_and_a_template_without_markers_is_refused(tmp_path, tokenizer):
    path = write_lines(tmp_path / "d.jsonl", [chat(("user", "hi"), ("bot", "yo"))])
    with pytest.raises(DataError, match=r"pass data\.on_bad_row=skip to skip bad rows\.$"):
        load_demonstrations(str(path), tokenizer, 1000, config_prefix="data.")
    plain = make_tokenizer()
    plain.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match=r"marks no assistant token .* or set ppo\.ptx_coef=0"):
        load_demonstrations(str(write_lines(tmp_path / "g.jsonl", [GOOD])), plain, 1000)
