"""Tests for align.data.sft: TRL-format checks on real files and a real (tiny) tokenizer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
from transformers import PreTrainedTokenizerFast

from align.data import DataError, load_sft_dataset
from tests.unit.data.helpers import write_lines

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"





def chat(*turns: tuple[str, object]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


GOOD = chat(("user", "hello"), ("assistant", "hi there"))


def assert_names(err: DataError, path: Path, line: int, field: str | None) -> None:
    """The message names the file, the 1-based line and the field."""
    msg = str(err)
    assert msg.startswith(f"{path}, line {line}"), msg
    assert (err.source, err.row, err.field) == (str(path), line, field)
    if field is not None:
        assert f"field '{field}'" in msg, msg


def load_error(path: Path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_sft_dataset(str(path), **kwargs)
    return info.value


# ----------------------------------------------------------------------------- happy paths


def test_messages_format_loads_and_keeps_only_role_and_content(tmp_path):
    rows = [
        {"id": 1, **chat(("system", "be nice"), ("user", "hi"), ("assistant", "hello"))},
        {
            "id": 2,
            "messages": [
                {"role": "user", "content": "q", "name": "bob"},
                {"role": "assistant", "content": "a"},
            ],
        },
    ]
    path = write_lines(tmp_path / "sft.jsonl", rows)
    ds, report = load_sft_dataset(str(path))
    assert ds.column_names == ["messages"]
    assert ds[1]["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    assert (report.format, report.rows_read, report.rows_kept, report.rows_skipped) == (
        "messages",
        2,
        2,
        0,
    )
    # Keys left out of the output are reported, not dropped silently.
    assert report.dropped_keys == {"id", "messages[].name"}


def test_prompt_completion_plain_and_conversational(tmp_path):
    plain = write_lines(
        tmp_path / "pc.jsonl",
        [{"prompt": "2+2=", "completion": "4"}, {"prompt": "a", "completion": "b"}],
    )
    ds, report = load_sft_dataset(str(plain))
    assert ds.column_names == ["prompt", "completion"] and ds[0] == {
        "prompt": "2+2=",
        "completion": "4",
    }
    assert report.format == "prompt_completion"
    conv = write_lines(
        tmp_path / "pcc.jsonl",
        [
            {
                "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
                "completion": [{"role": "assistant", "content": "a"}],
            }
        ],
    )
    ds, _ = load_sft_dataset(str(conv), format="prompt_completion")
    assert ds[0]["completion"] == [{"role": "assistant", "content": "a"}]


def test_text_format(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [{"text": "one"}, {"text": "two", "meta": 1}])
    ds, report = load_sft_dataset(str(path))
    assert (
        ds["text"] == ["one", "two"] and report.format == "text" and report.dropped_keys == {"meta"}
    )


def test_parquet_through_load_dataset(tmp_path):
    path = tmp_path / "sft.parquet"
    datasets.Dataset.from_list([GOOD, chat(("user", "x"), ("assistant", "y"))]).to_parquet(
        str(path)
    )
    ds, report = load_sft_dataset(str(path))
    assert len(ds) == 2 and report.format == "messages"
    bad = tmp_path / "bad.parquet"
    datasets.Dataset.from_list([GOOD, chat(("user", "x"), ("bot", "y"))]).to_parquet(str(bad))
    with pytest.raises(
        DataError,
        match=r"bad\.parquet, row 1 \(0-based\), field 'messages\[1\]\.role': unknown role 'bot'",
    ):
        load_sft_dataset(str(bad))


def test_csv_prompt_completion_through_builder_name(tmp_path):
    path = tmp_path / "pc.csv"
    path.write_text("prompt,completion,source\nWhat is 2+2?,4,math\nCapital of France?,Paris,geo\n")
    ds, report = load_sft_dataset("csv", data_files=str(path))
    assert ds["completion"] == ["4", "Paris"] and report.dropped_keys == {"source"}


def test_self_instruct_fixture_loads(tokenizer):
    path = FIXTURES / "self_instruct_20.jsonl"
    ds, report = load_sft_dataset(str(path), tokenizer=tokenizer, max_length=100_000)
    assert len(ds) == 20 and report.rows_skipped == 0 and report.truncated == 0
    assert report.dropped_keys == {"id"}
    assert ds[1]["messages"][0]["content"].startswith(
        "What is the relation between the given pairs?\n\nNight"
    )


def test_limit_caps_kept_rows(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [GOOD] * 5)
    ds, report = load_sft_dataset(str(path), limit=3)
    assert len(ds) == 3 and report.rows_read == 3 and report.limit_hit
    assert "stopped at limit=3" in report.summary()


# ----------------------------------------------------------------------------- bad rows


@pytest.mark.parametrize(
    "bad_row, field, code, message",
    [
        (
            {"conversation": []},
            None,
            "unknown_format",
            "cannot tell the dataset format from the row's keys ['conversation']",
        ),
        (
            {"messages": "hi"},
            "messages",
            "wrong_type",
            "must be a list of messages, got a JSON string ('hi')",
        ),
        ({"messages": []}, "messages", "empty_messages", "the message list is empty"),
        ({"messages": ["hi"]}, "messages[0]", "wrong_type", "each message must be an object"),
        (
            {"messages": [{"role": "user"}]},
            "messages[0]",
            "missing_field",
            "message has no 'content'",
        ),
        (
            chat(("user", "q"), ("bot", "a")),
            "messages[1].role",
            "unknown_role",
            "unknown role 'bot' (expected one of system, user, assistant)",
        ),
        (
            chat(("user", "q"), ("assistant", "  ")),
            "messages[1].content",
            "empty_content",
            "content is empty",
        ),
        (
            chat(("user", "q"), ("assistant", 42)),
            "messages[1].content",
            "wrong_type",
            "content must be a string, got a JSON number (42)",
        ),
        (
            chat(("user", "q"), ("assistant", "a"), ("user", "again")),
            "messages[2].role",
            "last_not_assistant",
            "the last message is from the 'user'",
        ),
        (
            chat(("system", "s"), ("user", "q")),
            "messages",
            "no_assistant_message",
            "no assistant message",
        ),
        (chat(("assistant", "a")), "messages", "no_user_message", "no user message"),
    ],
)
def test_bad_messages_row_names_file_line_and_field(tmp_path, bad_row, field, code, message):
    path = write_lines(
        tmp_path / "sft.jsonl", [bad_row] if field is None else [GOOD, GOOD, bad_row]
    )
    err = load_error(path)
    assert_names(err, path, 1 if field is None else 3, field)
    assert err.code == code
    assert message in str(err)
    assert str(err).endswith("pass on_bad_row=skip to skip bad rows.")


def test_malformed_and_array_lines_through_the_sft_loader(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [GOOD, '{"messages": [', GOOD])
    assert_names(load_error(path), path, 2, None)
    path = write_lines(tmp_path / "arr.jsonl", [GOOD, GOOD, GOOD, "[]"])
    err = load_error(path)
    assert_names(err, path, 4, None)
    assert "got a JSON array" in str(err)


def test_missing_messages_field_names_it(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [GOOD, {"msgs": GOOD["messages"]}])
    err = load_error(path)
    assert_names(err, path, 2, "messages")
    assert (
        "missing field 'messages' (the row has keys ['msgs']; "
        "the dataset format is 'messages', detected from line 1)" in str(err)
    )


def test_mixed_formats_are_bad_rows(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [GOOD, {"prompt": "p", "completion": "c"}])
    err = load_error(path)
    assert_names(err, path, 2, "messages")
    assert err.code == "missing_field"
    # Plain and conversational prompt_completion rows do not mix either.
    conv = {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
    }
    path = write_lines(tmp_path / "pc.jsonl", [{"prompt": "p", "completion": "c"}, conv])
    err = load_error(path)
    assert_names(err, path, 2, "prompt")
    assert "conversational (message lists) but the first row (line 1) is plain text" in str(err)


@pytest.mark.parametrize(
    "bad_row, field, code, message",
    [
        (
            {"prompt": "p", "completion": ""},
            "completion",
            "empty_completion",
            "is empty or whitespace only",
        ),
        (
            {"prompt": "p", "completion": 3},
            "completion",
            "wrong_type",
            "must be a string or a list of messages",
        ),
        (
            {"prompt": "p", "completion": [{"role": "assistant", "content": "a"}]},
            "completion",
            "wrong_type",
            "the prompt is a JSON string but the completion is a JSON array",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "q"}],
                "completion": [{"role": "user", "content": "a"}],
            },
            "completion[0].role",
            "completion_not_assistant",
            "completion messages must be from the assistant",
        ),
    ],
)
def test_bad_prompt_completion_rows(tmp_path, bad_row, field, code, message):
    path = write_lines(tmp_path / "pc.jsonl", [bad_row])
    err = load_error(path, format="prompt_completion")
    assert_names(err, path, 1, field)
    assert err.code == code and message in str(err)


def test_skip_counts_per_reason_and_keeps_good_rows(tmp_path):
    lines = [
        GOOD,
        "{bad json",
        chat(("user", "q"), ("bot", "a")),
        GOOD,
        chat(("user", "q"), ("bot", "a")),
        chat(("user", "q")),
        "",
        GOOD,
    ]
    path = write_lines(tmp_path / "sft.jsonl", lines)
    ds, report = load_sft_dataset(str(path), on_bad_row="skip")
    assert len(ds) == 3
    assert report.skipped == Counter(malformed_json=1, unknown_role=2, no_assistant_message=1)
    assert (report.rows_read, report.rows_kept, report.blank_lines) == (7, 3, 1)
    assert report.as_metrics()["data/skipped/unknown_role"] == 2


def test_auto_detection_skips_unrecognised_first_rows_when_skipping(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [{"junk": 1}, GOOD])
    ds, report = load_sft_dataset(str(path), on_bad_row="skip")
    assert len(ds) == 1 and report.skipped == Counter(unknown_format=1)


# ----------------------------------------------------------------------------- too long


def test_too_long_error_skip_and_truncate(tmp_path, tokenizer):
    short = chat(("user", "hi"), ("assistant", "yo"))
    long = chat(("user", "the quick brown fox " * 20), ("assistant", "jumps"))
    path = write_lines(tmp_path / "sft.jsonl", [short, long, short])
    n_short = len(
        tokenizer.apply_chat_template(short["messages"], tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    n_long = len(
        tokenizer.apply_chat_template(long["messages"], tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    limit = n_short + 5
    assert n_long > limit

    err = load_error(path, tokenizer=tokenizer, max_length=limit)
    assert_names(err, path, 2, "messages")
    assert err.code == "too_long"
    assert f"{n_long} tokens, longer than max_length={limit}" in str(err)
    assert "Raise max_length, or pass on_too_long=skip" in str(err)
    # on_bad_row does not cover length: on_too_long does.
    with pytest.raises(DataError, match="too_long|longer than max_length"):
        load_sft_dataset(str(path), tokenizer=tokenizer, max_length=limit, on_bad_row="skip")

    ds, report = load_sft_dataset(
        str(path), tokenizer=tokenizer, max_length=limit, on_too_long="skip"
    )
    assert len(ds) == 2 and report.skipped == Counter(too_long=1) and report.truncated == 0

    ds, report = load_sft_dataset(
        str(path), tokenizer=tokenizer, max_length=limit, on_too_long="truncate"
    )
    assert len(ds) == 3 and report.truncated == 1 and report.rows_skipped == 0
    assert report.as_metrics()["data/rows_truncated"] == 1


def test_plain_text_length_counts_the_eos_trl_appends(tmp_path, tokenizer):
    path = write_lines(tmp_path / "pc.jsonl", [{"prompt": "hello ", "completion": "world"}])
    n = len(tokenizer("hello world")["input_ids"]) + 1  # + the EOS TRL's SFTTrainer appends
    load_sft_dataset(str(path), tokenizer=tokenizer, max_length=n)
    err = load_error(path, tokenizer=tokenizer, max_length=n - 1)
    assert_names(err, path, 1, "prompt+completion")


# ----------------------------------------------------------------------------- arguments, empty


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data file not found: .*missing\.jsonl"):
        load_sft_dataset(str(tmp_path / "missing.jsonl"))


def test_nothing_left_says_why(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [chat(("user", "q")), "{"])
    with pytest.raises(
        ValueError,
        match=r"Nothing is left to train on: .*read 2 rows, kept 0.*"
        r"malformed_json: 1, no_assistant_message: 1.*Every row was skipped",
    ):
        load_sft_dataset(str(path), on_bad_row="skip")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"read 0 rows.*The source has no rows"):
        load_sft_dataset(str(empty))


def test_arguments_are_validated(tmp_path, tokenizer):
    path = write_lines(tmp_path / "sft.jsonl", [GOOD])
    with pytest.raises(
        ValueError, match=r"format='chatml' is not supported; pass one of auto, messages"
    ):
        load_sft_dataset(str(path), format="chatml")
    with pytest.raises(ValueError, match=r"on_too_long='cut' is not supported"):
        load_sft_dataset(str(path), on_too_long="cut")
    with pytest.raises(ValueError, match=r"max_length=8 needs a tokenizer"):
        load_sft_dataset(str(path), max_length=8)
    with pytest.raises(ValueError, match=r"limit must be a positive integer or None, got 0"):
        load_sft_dataset(str(path), limit=0)
    plain = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>"
    )
    with pytest.raises(ValueError, match=r"has no chat_template"):
        load_sft_dataset(str(path), tokenizer=plain, max_length=100)


# ----------------------------------------------------------------------------- formats people have


def test_alpaca_rows_become_user_and_assistant_messages(tmp_path):
    path = tmp_path / "alpaca_data.json"  # Stanford Alpaca ships one pretty-printed JSON array
    path.write_text(json.dumps([
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
        {"instruction": "Say bye.", "output": "bye", "id": 7},
    ], indent=4))
    ds, report = load_sft_dataset(str(path))
    assert report.format == "alpaca" and report.dropped_keys == {"id"} and ds.column_names == ["messages"]
    assert ds[0]["messages"] == [{"role": "user", "content": "Add the numbers.\n\n2 and 3"},
                                 {"role": "assistant", "content": "5"}]
    assert ds[1]["messages"][0]["content"] == "Say hi." and ds[2]["messages"][1]["content"] == "bye"
    bad = write_lines(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}, {"instruction": "x", "output": " "},
                                             {"instruction": "x", "input": 3, "output": "y"}])
    err = load_error(bad)
    assert_names(err, bad, 2, "output")
    assert err.code == "empty_output"
    ds, report = load_sft_dataset(str(bad), on_bad_row="skip")
    assert len(ds) == 1 and report.skipped == Counter(empty_output=1, wrong_type=1)


def test_sharegpt_rows_become_messages_with_their_own_fields_in_errors(tmp_path):
    conv = {"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"},
                              {"from": "gpt", "value": "hello", "weight": 1}]}
    path = write_lines(tmp_path / "sharegpt.jsonl", [
        conv,
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"text": "x"}]},
    ])
    err = load_error(path)
    assert_names(err, path, 2, "conversations[1].from")
    assert err.code == "unknown_role"
    assert "unknown speaker 'bot' (expected one of human, user, gpt, assistant, system)" in str(err)
    ds, report = load_sft_dataset(str(path), on_bad_row="skip")
    assert report.format == "sharegpt" and len(ds) == 1
    assert ds[0]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "hello"}]
    assert report.skipped == Counter(unknown_role=1, empty_content=1, last_not_assistant=1, missing_field=1)
    assert report.dropped_keys == {"conversations[].weight"}
    assert report.rows_read == 5 == report.rows_kept + report.rows_skipped


def test_gzipped_jsonl_loads_like_the_plain_file(tmp_path):
    import gzip

    path = tmp_path / "sft.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in [GOOD, GOOD]).encode()))
    ds, report = load_sft_dataset(str(path))
    assert len(ds) == 2 and report.source == str(path)


def test_control_tokens_in_content_are_bad_rows_in_every_format(tmp_path, tokenizer):
    # <|im_end|> typed by a user must not become the real end-of-turn token.
    rows = [
        (chat(("user", "hi <|im_end|>"), ("assistant", "yo")), "messages[0].content"),
        ({"prompt": "p", "completion": "c<|im_start|>assistant"}, "completion"),
        ({"text": "a<|pad|>b"}, "text"),
        ({"instruction": "x", "input": "<|im_end|>", "output": "y"}, "input"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<|im_end|>"}]},
         "conversations[1].value"),
    ]
    for i, (row, field) in enumerate(rows):
        path = write_lines(tmp_path / f"c{i}.jsonl", [row])
        err = load_error(path, tokenizer=tokenizer)
        assert (err.field, err.code) == (field, "control_token"), str(err)
        assert "a control token of the tokenizer" in str(err)
        # Without a tokenizer there is nothing to check against.
        assert len(load_sft_dataset(str(path))[0]) == 1
    path = write_lines(tmp_path / "mix.jsonl", [GOOD, rows[0][0]])
    ds, report = load_sft_dataset(str(path), tokenizer=tokenizer, on_bad_row="skip")
    assert len(ds) == 1 and report.skipped == Counter(control_token=1)


def test_config_prefix_makes_hints_name_the_stage_key(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [GOOD, chat(("user", "q"), ("bot", "a"))])
    err = load_error(path, config_prefix="data.")
    assert str(err).endswith("pass data.on_bad_row=skip to skip bad rows.") and err.code == "unknown_role"
    junk = write_lines(tmp_path / "junk.jsonl", ["{nope"])
    assert "pass data.on_bad_row=skip" in str(load_error(junk, config_prefix="data."))


def test_is_conversational(tmp_path):
    from align.data import is_conversational

    kinds = {"m": GOOD, "pc": {"prompt": "p", "completion": "c"}, "t": {"text": "t"},
             "cpc": {"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": "c"}]}}
    got = {k: is_conversational(load_sft_dataset(str(write_lines(tmp_path / f"{k}.jsonl", [row])))[0])
           for k, row in kinds.items()}
    assert got == {"m": True, "pc": False, "t": False, "cpc": True}


# ----------------------------------------------------------------------------- HH-RLHF chosen transcripts


def test_hh_pairs_train_on_the_chosen_transcript_turn_by_turn(tmp_path):
    ds, report = load_sft_dataset(str(FIXTURES / "hh_rlhf_20.jsonl"), on_bad_row="skip")
    # Row 20's chosen reply is empty: counted, not trained on.
    assert report.format == "hh" and len(ds) == report.rows_kept == 19 and ds.column_names == ["messages"]
    assert report.skipped == Counter({"empty_content": 1})
    rows = [json.loads(line) for line in (FIXTURES / "hh_rlhf_20.jsonl").read_text().splitlines()]
    for raw, row in zip(rows, ds):
        msgs = row["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2)
        assert raw["chosen"].endswith(msgs[-1]["content"]) and msgs[-1]["content"].strip()
        assert raw["chosen"].lstrip().startswith("Human: " + msgs[0]["content"])
    assert ds[0]["messages"][0]["content"] == "what are some pranks with a pen i can do?"


def test_hh_rows_with_a_blank_final_reply_or_a_broken_transcript_are_named(tmp_path):
    good = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    path = write_lines(tmp_path / "hh.jsonl", [good, {"chosen": "\n\nHuman: hi\n\nAssistant: ", "rejected": "x"}])
    err = load_error(path, format="hh")
    assert_names(err, path, 2, "chosen")
    assert err.code == "empty_content"
    path = write_lines(tmp_path / "hh2.jsonl", [good, {"chosen": "\n\nHuman: hi\n\nHuman: again", "rejected": "x"}])
    err = load_error(path)  # detected from row 1
    assert_names(err, path, 2, "chosen")
    assert err.code == "last_not_assistant"
    ds, report = load_sft_dataset(str(path), on_bad_row="skip")
    assert len(ds) == 1 and report.skipped == Counter({"last_not_assistant": 1})
