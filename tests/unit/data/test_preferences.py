"""Tests for align.data.preferences: five preference formats, real files, a real tokenizer."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import datasets
import pytest

from align.data import DataError, RankedExample, load_preferences
from tests.unit.data.helpers import write_lines

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"
# CI checks shared/ out beside the repository.
SHARED_HH = REPO.parent / "shared" / "data" / "hh_rlhf_harmless_sample.jsonl"





def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def assert_names(err: DataError, path: Path, line: int, field: str | None) -> None:
    """The message names the file, the 1-based line and the field."""
    msg_ = str(err)
    assert msg_.startswith(f"{path}, line {line}"), msg_
    assert (err.source, err.row, err.field) == (str(path), line, field)
    if field is not None:
        assert f"field '{field}'" in msg_, msg_


def load_error(path: Path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_preferences(str(path), **kwargs)
    return info.value


PAIR = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}
RANKED = {"prompt": "name a colour", "responses": ["red", "blue", "mud"], "ranks": [1, 1, 3]}
UF = {
    "instruction": "say hi",
    "completions": [
        {"response": "hi!", "overall_score": 8, "model": "m1"},
        {"response": "go away", "overall_score": 2.5, "model": "m2"},
    ],
}
OASST = {
    "prompt": "joke?",
    "replies": [
        {"text": "knock knock", "rank": 1},
        {"text": "no", "rank": 2},
        {"text": "ha", "rank": 0},
    ],
}
HH = {
    "chosen": "\n\nHuman: q\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: good",
    "rejected": "\n\nHuman: q\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: bad",
}


# ----------------------------------------------------------------------------- happy paths


def test_pairwise_explicit_plain_text_with_margin(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [{**PAIR, "margin": 1.5, "id": 7}, PAIR])
    examples, report = load_preferences(str(path))
    assert examples[0] == RankedExample(
        prompt=[msg("user", "2+2?")],
        responses=["4", "5"],
        scores=[1.0, 0.0],
        origin=f"{path}, line 1",
        margin=1.5,
    )
    assert examples[1].margin is None
    assert report.format == "pairwise" and report.dropped_keys == {"id"}
    assert (report.rows_read, report.rows_kept) == (2, 2)


def test_pairwise_conversational_explicit_implicit_and_repeated_prompt(tmp_path):
    prompt = [msg("system", "be brief"), msg("user", "q")]
    yes, no = msg("assistant", "yes"), msg("assistant", "no")
    rows = [
        # Explicit prompt, one assistant message each (TRL's conversational preference format).
        {"prompt": prompt, "chosen": [yes], "rejected": [no]},
        # Implicit prompt: the shared messages before the last.
        {"chosen": [*prompt, yes], "rejected": [*prompt, no]},
        # Explicit string prompt repeated in whole conversations (ultrafeedback_binarized).
        {"prompt": "q", "chosen": [msg("user", "q"), yes], "rejected": [msg("user", "q"), no]},
    ]
    path = write_lines(tmp_path / "p.jsonl", rows)
    examples, report = load_preferences(str(path))
    assert [e.prompt for e in examples] == [prompt, prompt, [msg("user", "q")]]
    assert all(e.responses == ["yes", "no"] for e in examples)
    assert report.format == "pairwise"


def test_ranked_with_ranks_and_with_scores(tmp_path):
    rows = [RANKED, {"prompt": [msg("user", "x")], "responses": ["a", "b"], "scores": [0.2, 0.9]}]
    path = write_lines(tmp_path / "r.jsonl", rows)
    examples, report = load_preferences(str(path))
    # Ranks 1, 1, 3 (lower is better) -> scores 3-1, 3-1, 3-3: higher is better, tie kept.
    assert examples[0].scores == [2.0, 2.0, 0.0]
    assert examples[1].scores == [0.2, 0.9] and examples[1].prompt == [msg("user", "x")]
    assert report.format == "ranked"


def test_ultrafeedback_overall_score_and_fine_grained_fallback(tmp_path):
    fine = {
        "prompt": "p",
        "completions": [
            {"response": "x", "fine-grained_score": 4.25},
            {"response": "y", "fine-grained_score": 1.75},
            {"response": "z", "fine-grained_score": 3},
        ],
    }
    path = write_lines(tmp_path / "uf.jsonl", [UF, fine])
    examples, report = load_preferences(str(path))
    assert examples[0].prompt == [msg("user", "say hi")]
    assert examples[0].responses == ["hi!", "go away"] and examples[0].scores == [8.0, 2.5]
    assert examples[1].scores == [4.25, 1.75, 3.0]
    assert report.format == "ultrafeedback"
    assert report.dropped_keys == {"completions[].model"}


def test_oasst_ranked_replies_and_thin_variant(tmp_path):
    thin = {"prompt": [msg("user", "hi")], "replies": ["best", "middle", "worst"]}
    path = write_lines(tmp_path / "o.jsonl", [OASST, thin])
    examples, report = load_preferences(str(path))
    # Ranks 1, 2, 0 (0 is best) -> scores 2-1, 2-2, 2-0.
    assert examples[0].responses == ["knock knock", "no", "ha"]
    assert examples[0].scores == [1.0, 0.0, 2.0]
    assert examples[1].scores == [2.0, 1.0, 0.0]
    assert report.format == "oasst"


def test_hh_fixture_loads_with_multi_turn_prompts():
    path = FIXTURES / "hh_rlhf_20.jsonl"
    # Line 20 has an empty final chosen reply: a bad row.
    err = load_error(path)
    assert_names(err, path, 20, "chosen")
    assert err.code == "empty_response"
    examples, report = load_preferences(str(path), on_bad_row="skip")
    assert len(examples) == 19 and report.skipped == Counter(empty_response=1)
    assert report.format == "hh"
    lock = examples[3]  # line 4: the prompt keeps 9 turns, user first and last
    assert len(lock.prompt) == 9 and lock.prompt[0] == msg("user", "How do I pick a lock?")
    assert lock.responses[0] == "I’ll give you the links." and lock.origin == f"{path}, line 4"
    # Line 19: the assistant's own "Human: ..." stays inside its reply.
    assert examples[18].responses[0].startswith("Human: No, you are racist.")


@pytest.mark.skipif(not SHARED_HH.exists(), reason=f"{SHARED_HH} not present")
def test_hh_full_shared_sample():
    examples, report = load_preferences(str(SHARED_HH), on_bad_row="skip")
    # All 256 rows parse; only line 87 (chosen ends with an empty "Assistant: " turn) is bad.
    assert (report.rows_read, report.rows_kept) == (256, 255)
    assert report.skipped == Counter(empty_response=1)
    assert "line 87" not in {e.origin.rsplit(", ", 1)[1] for e in examples}
    assert all(e.prompt[-1]["role"] == "user" and len(e.prompt) % 2 == 1 for e in examples)
    assert all(r.strip() for e in examples for r in e.responses)
    assert sum(len(e.prompt) > 1 for e in examples) == 181  # multi-turn prompts kept
    assert max(len(e.prompt) for e in examples) == 19
    assert examples[0].prompt[0] == msg("user", "what are some pranks with a pen i can do?")


def test_parquet_through_load_dataset(tmp_path):
    path = tmp_path / "r.parquet"
    datasets.Dataset.from_list([RANKED, {**RANKED, "ranks": [1, 2, 3]}]).to_parquet(str(path))
    examples, report = load_preferences(str(path))
    assert len(examples) == 2 and examples[1].scores == [2.0, 1.0, 0.0]
    assert examples[1].origin == f"{path}, row 1 (0-based)"
    bad = tmp_path / "bad.parquet"
    datasets.Dataset.from_list([RANKED, {**RANKED, "ranks": [1, 2]}]).to_parquet(str(bad))
    with pytest.raises(
        DataError,
        match=r"bad\.parquet, row 1 \(0-based\), field 'ranks': has 2 entries but responses has 3",
    ):
        load_preferences(str(bad))


def test_limit_and_explicit_format(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [PAIR] * 5)
    examples, report = load_preferences(str(path), limit=2, format="pairwise")
    assert len(examples) == 2 and report.limit_hit and report.rows_read == 2


# ----------------------------------------------------------------------------- bad rows


def with_(row: dict, path: str, value) -> dict:
    """A deep copy of ``row`` with the item at ``path`` (keys/indices split by '/') set."""
    row = copy.deepcopy(row)
    *parents, last = [int(k) if k.isdigit() else k for k in path.split("/")]
    target = row
    for key in parents:
        target = target[key]
    target[last] = value
    return row


CONV = {"prompt": [msg("user", "q")], "chosen": [msg("assistant", "a")], "rejected": [msg("assistant", "b")]}


# (good row, bad row, field named, code, part of the message). The bad row is line 3.
BAD_ROWS = [
    # pairwise
    (PAIR, {**PAIR, "rejected": " 4 "}, "rejected", "identical_responses", "are the same text"),
    (PAIR, {**PAIR, "chosen": ""}, "chosen", "empty_response", "the response is empty"),
    (PAIR, {**PAIR, "chosen": 4}, "chosen", "wrong_type", "got a JSON number (4)"),
    (PAIR, {"prompt": "p", "chosen": "c"}, "rejected", "missing_field", "field 'rejected'"),
    (PAIR, {**PAIR, "margin": "big"}, "margin", "wrong_type", "must be a number"),
    (PAIR, {"chosen": "a", "rejected": "b"}, "prompt", "missing_field", "without one, chosen"),
    (
        PAIR,
        {"prompt": [msg("assistant", "x")], "chosen": "a", "rejected": "b"},
        "prompt",
        "last_not_user",
        "the prompt ends with a message from the 'assistant'",
    ),
    (
        PAIR,
        {**PAIR, "chosen": [msg("user", "other"), msg("assistant", "a")], "rejected": [msg("assistant", "b")]},
        "chosen",
        "prompt_mismatch",
        "differ from the prompt at message 0",
    ),
    (
        PAIR,
        {**PAIR, "chosen": [msg("assistant", "4")], "rejected": [msg("user", "nope")]},
        "rejected[0].role",
        "last_not_assistant",
        "the last message is from the 'user'",
    ),
    (
        CONV,
        {**CONV, "rejected": "b"},
        "rejected",
        "mixed_formats",
        "chosen is a JSON array ([{'role': 'assistant', 'content': 'a'}]) but rejected is a JSON string ('b')",
    ),
    (
        PAIR,
        {**PAIR, "chosen": [msg("assistant", "a")]},
        "rejected",
        "mixed_formats",
        "both must be strings or both lists of messages",
    ),
    (
        CONV,
        {**CONV, "rejected": [msg("assistant", " ")]},
        "rejected[0].content",
        "empty_response",
        "the reply is empty",
    ),
    (
        PAIR,
        {
            "chosen": [msg("user", "q"), msg("assistant", "a")],
            "rejected": [msg("user", "Q"), msg("assistant", "b")],
        },
        "rejected",
        "diverges_early",
        "differ at message 0",
    ),
    # ranked
    (RANKED, with_(RANKED, "responses/2", "  "), "responses[2]", "empty_response", "is empty"),
    (
        RANKED,
        with_(RANKED, "responses/2", "red"),
        "responses[2]",
        "duplicate_responses",
        "same text as responses[0]",
    ),
    (
        RANKED,
        {**RANKED, "responses": ["a"], "ranks": [1]},
        "responses",
        "too_few_responses",
        "has 1 responses; a ranking needs at least 2",
    ),
    (
        RANKED,
        {**RANKED, "responses": list("abcdefghij"), "ranks": list(range(1, 11))},
        "responses",
        "too_many_responses",
        "has 10 responses; at most 9 are supported",
    ),
    (RANKED, {**RANKED, "ranks": [1, 2]}, "ranks", "length_mismatch", "has 2 entries"),
    (RANKED, {**RANKED, "ranks": [2, 2, 2]}, "ranks", "all_tied", "all 3 responses have the same"),
    (RANKED, with_(RANKED, "ranks/1", 0), "ranks[1]", "bad_rank", "rank 0 is below 1"),
    (RANKED, with_(RANKED, "ranks/1", 99), "ranks[1]", "bad_rank", "rank 99 is above 3, the worst rank among 3"),
    (RANKED, with_(RANKED, "ranks/1", "2"), "ranks[1]", "wrong_type", "must be a whole number"),
    (RANKED, {**RANKED, "scores": [1, 2, 3]}, "scores", "conflicting_fields", "both 'ranks'"),
    (RANKED, {"prompt": "p", "responses": ["a", "b"]}, "ranks", "missing_field", "or 'scores'"),
    (
        RANKED,
        {"responses": ["a", "b"], "ranks": [1, 2]},
        "prompt",
        "missing_field",
        "the dataset format is 'ranked', detected from line 1",
    ),
    (
        RANKED,
        {**RANKED, "prompt": [msg("user", "q"), msg("bot", "a")]},
        "prompt[1].role",
        "unknown_role",
        "unknown role 'bot'",
    ),
    # ultrafeedback
    (
        UF,
        with_(UF, "completions/1/overall_score", "high"),
        "completions[1].overall_score",
        "wrong_type",
        "must be a number",
    ),
    (
        UF,
        with_(UF, "completions/1", {"response": "x"}),
        "completions[1].overall_score",
        "missing_field",
        "missing field 'overall_score'",
    ),
    (
        UF,
        with_(UF, "completions/0/response", ""),
        "completions[0].response",
        "empty_response",
        "the response is empty",
    ),
    (UF, with_(UF, "completions/1/overall_score", 8), "completions", "all_tied", "score (8)"),
    (
        UF,
        with_(UF, "completions/0/overall_score", float("nan")),
        "completions[0].overall_score",
        "bad_score",
        "must be a finite number",
    ),
    # oasst
    (OASST, with_(OASST, "replies/1", "no"), "replies[1]", "wrong_type", "must be an object"),
    (OASST, with_(OASST, "replies/2/rank", -1), "replies[2].rank", "bad_rank", "below 0"),
    (OASST, with_(OASST, "replies/2/rank", 3), "replies[2].rank", "bad_rank", "rank 3 is above 2"),
    (OASST, with_(OASST, "replies/2", {"text": "x"}), "replies[2].rank", "missing_field", "'rank'"),
    # hh
    (HH, {**HH, "rejected": HH["chosen"]}, "rejected", "identical_responses", "the same text"),
    (
        HH,
        {**HH, "rejected": HH["rejected"].replace("a1", "A1")},
        "rejected",
        "diverges_early",
        "differ at turn 2",
    ),
    (
        HH,
        {**HH, "chosen": HH["chosen"] + "\n\nHuman: more?"},
        "chosen",
        "last_not_assistant",
        "the last turn (turn 5) is the Human's",
    ),
    (
        HH,
        {**HH, "chosen": "Q: hi\n\nHuman: q\n\nAssistant: a"},
        "chosen",
        "not_hh_transcript",
        "is not an HH-RLHF transcript",
    ),
    (HH, {**HH, "rejected": [msg("user", "q")]}, "rejected", "wrong_type", "a transcript string"),
]


@pytest.mark.parametrize("good, bad_row, field, code, message", BAD_ROWS)
def test_bad_rows_name_file_line_and_field(tmp_path, good, bad_row, field, code, message):
    path = write_lines(tmp_path / "prefs.jsonl", [good, good, bad_row])
    err = load_error(path)
    assert_names(err, path, 3, field)
    assert err.code == code
    assert message in str(err), str(err)


def test_unknown_format_and_rows_of_another_format(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}])
    err = load_error(path)
    assert_names(err, path, 1, None)
    assert err.code == "unknown_format" and "expected 'chosen' and 'rejected'" in str(err)
    # The first row fixes the format; an ultrafeedback row in a ranked file is a bad row.
    path = write_lines(tmp_path / "mixed.jsonl", [RANKED, UF])
    err = load_error(path)
    assert_names(err, path, 2, "prompt")
    assert err.code == "missing_field"
    # HH transcripts in a file declared pairwise: the hint says which format to use.
    path = write_lines(tmp_path / "hh.jsonl", [HH])
    assert "pass format=hh" in str(load_error(path, format="pairwise"))


def test_skip_counts_per_code_and_keeps_good_rows(tmp_path):
    lines = [
        RANKED,
        "{not json",
        {**RANKED, "ranks": [3, 3, 3]},
        RANKED,
        with_(RANKED, "responses/1", ""),
        "",
        {**RANKED, "ranks": [3, 3, 3]},
        {"junk": 1},
        RANKED,
    ]
    path = write_lines(tmp_path / "r.jsonl", lines)
    examples, report = load_preferences(str(path), on_bad_row="skip")
    assert [e.origin for e in examples] == [f"{path}, line {n}" for n in (1, 4, 9)]
    assert report.skipped == Counter(
        malformed_json=1, all_tied=2, empty_response=1, missing_field=1
    )
    assert (report.rows_read, report.rows_kept, report.blank_lines) == (8, 3, 1)
    assert report.as_metrics()["data/skipped/all_tied"] == 2


def test_nothing_left_is_a_value_error(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [{**RANKED, "ranks": [1, 1, 1]}])
    with pytest.raises(ValueError, match="nothing is left to train on|Every row was skipped"):
        load_preferences(str(path), on_bad_row="skip")


def test_bad_arguments(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [PAIR])
    with pytest.raises(ValueError, match="format='dpo' is not supported"):
        load_preferences(str(path), format="dpo")
    with pytest.raises(ValueError, match="max_length=8 needs a tokenizer"):
        load_preferences(str(path), max_length=8)


# ----------------------------------------------------------------------------- too long


def chat_length(tokenizer, messages) -> int:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    return len(out["input_ids"])


def test_too_long_error_skip_and_truncate(tmp_path, tokenizer):
    short = {"prompt": "hi", "responses": ["yo", "hey", "hello"], "scores": [1, 2, 3]}
    long = {**short, "responses": ["yo", "the quick brown fox " * 20, "hello"]}
    path = write_lines(tmp_path / "r.jsonl", [short, long, short])
    user = [msg("user", "hi")]
    n_short = max(chat_length(tokenizer, [*user, msg("assistant", r)]) for r in short["responses"])
    n_long = chat_length(tokenizer, [*user, msg("assistant", long["responses"][1])])
    limit = n_short + 3
    assert n_long > limit

    err = load_error(path, tokenizer=tokenizer, max_length=limit)
    assert_names(err, path, 2, "responses[1]")  # the longest sequence is named
    assert err.code == "too_long"
    assert f"{n_long} tokens (prompt + reply), longer than max_length={limit}" in str(err)
    assert "Raise max_length, or pass on_too_long=skip" in str(err)

    examples, report = load_preferences(
        str(path), tokenizer=tokenizer, max_length=limit, on_too_long="skip"
    )
    assert len(examples) == 2 and report.skipped == Counter(too_long=1) and report.truncated == 0

    examples, report = load_preferences(
        str(path), tokenizer=tokenizer, max_length=limit, on_too_long="truncate"
    )
    assert len(examples) == 3 and report.truncated == 1 and report.rows_skipped == 0
    # A limit that fits every sequence exactly keeps everything.
    _, report = load_preferences(str(path), tokenizer=tokenizer, max_length=n_long)
    assert report.rows_kept == 3 and report.truncated == 0


def test_length_without_chat_template_is_text_plus_eos(tmp_path, tokenizer):
    plain = copy.copy(tokenizer)
    plain.chat_template = None
    row = {"prompt": "hello ", "chosen": "world", "rejected": "you"}
    path = write_lines(tmp_path / "p.jsonl", [row])
    n = len(tokenizer("hello world")["input_ids"]) + 1  # + EOS, as TRL's RewardTrainer appends
    load_preferences(str(path), tokenizer=plain, max_length=n)
    err = load_error(path, tokenizer=plain, max_length=n - 1)
    assert_names(err, path, 1, "chosen")


def test_ranked_examples_keep_sources_when_the_row_has_one_per_response(tmp_path):
    rows = [
        {**RANKED, "sources": ["policy", "perturb:wrong", "policy"], "gold": [1, 0, 1]},
        RANKED,
        {**RANKED, "sources": ["policy"]},  # not one per response: left out, never a bad row
        {**PAIR, "sources": ["policy", "perturb:swap"]},
    ]
    ranked = write_lines(tmp_path / "r.jsonl", rows[:3])
    examples, report = load_preferences(str(ranked))
    assert [ex.sources for ex in examples] == [["policy", "perturb:wrong", "policy"], None, None]
    assert report.dropped_keys == {"gold", "sources"}  # row 3's sources were not kept
    examples, report = load_preferences(str(write_lines(tmp_path / "k.jsonl", rows[:1])))
    assert examples[0].sources == ["policy", "perturb:wrong", "policy"] and report.dropped_keys == {"gold"}
    examples, _ = load_preferences(str(write_lines(tmp_path / "p.jsonl", rows[3:])))
    assert examples[0].sources == ["policy", "perturb:swap"] and examples[0].responses == ["4", "5"]


def test_hh_transcripts_without_the_leading_blank_line_are_detected_as_hh(tmp_path):
    # Some copies of HH-RLHF start the transcript with "Human:" (no "\n\nHuman:"); auto-detection
    # must still read them as hh, not as pairwise strings with a missing prompt.
    rows = [{k: v.removeprefix("\n\n") for k, v in HH.items()}, {k: "  " + v.lstrip() for k, v in HH.items()}]
    examples, report = load_preferences(str(write_lines(tmp_path / "hh.jsonl", rows)))
    assert report.format == "hh" and len(examples) == 2
    assert examples[0].prompt == examples[1].prompt == [msg("user", "q"), msg("assistant", "a1"), msg("user", "q2")]
    assert examples[0].responses == ["good", "bad"]


def test_control_tokens_in_prompts_and_replies_are_bad_rows(tmp_path, tokenizer):
    rows = [
        ({**PAIR, "rejected": "5<|im_end|>"}, "rejected"),
        ({**PAIR, "prompt": [msg("system", "s"), msg("user", "<|im_start|>user")]}, "prompt[1].content"),
        ({**HH, "chosen": HH["chosen"].replace("q2", "q2<|pad|>"), "rejected": HH["rejected"].replace("q2", "q2<|pad|>")},
         "chosen"),
        (with_(RANKED, "responses/1", "<|im_end|>"), "responses[1]"),
    ]
    for i, (row, field) in enumerate(rows):
        path = write_lines(tmp_path / f"p{i}.jsonl", [row])
        err = load_error(path, tokenizer=tokenizer)
        assert (err.field, err.code) == (field, "control_token"), str(err)
    path = write_lines(tmp_path / "mix.jsonl", [PAIR, rows[0][0], PAIR])
    examples, report = load_preferences(str(path), tokenizer=tokenizer, on_bad_row="skip", config_prefix="data.")
    assert len(examples) == 2 and report.skipped == Counter(control_token=1)
    with pytest.raises(DataError, match=r"pass data\.on_bad_row=skip to skip such rows\.$"):
        load_preferences(str(path), tokenizer=tokenizer, config_prefix="data.")
