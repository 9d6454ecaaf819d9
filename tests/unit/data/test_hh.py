"""Tests for align.data.hh: HH-RLHF transcripts split into messages, on real rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.data.hh import HHFormatError, hh_to_messages, looks_like_hh, split_hh_pair

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def fixture_rows() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "hh_rlhf_20.jsonl").open(encoding="utf-8")]


def test_single_turn_transcript():
    assert hh_to_messages("\n\nHuman: hi there\n\nAssistant: hello") == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello"},
    ]


def test_multi_turn_pair_keeps_the_shared_turns_as_the_prompt():
    shared = "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2"
    prompt, chosen, rejected = split_hh_pair(
        shared + "\n\nAssistant: good\n\nbye", shared + "\n\nAssistant: bad"
    )
    assert prompt == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    # Paragraph breaks inside a turn stay in its content.
    assert (chosen, rejected) == ("good\n\nbye", "bad")


def test_only_line_start_markers_split_turns():
    # The assistant sometimes writes "Human: ..." itself (fixture line 19): it is content.
    text = "\n\nHuman: q\n\nAssistant: Human: No, you are wrong. Human:x"
    assert hh_to_messages(text)[-1] == {
        "role": "assistant",
        "content": "Human: No, you are wrong. Human:x",
    }
    # Exactly one space after the colon belongs to the marker; the rest is kept.
    assert hh_to_messages("\n\nHuman:  two\n\nAssistant:none")[0]["content"] == " two"
    assert hh_to_messages("\n\nHuman:  two\n\nAssistant:none")[1]["content"] == "none"
    # A transcript may start with "Human:" without the leading blank line.
    assert hh_to_messages("Human: q\n\nAssistant: a")[0] == {"role": "user", "content": "q"}


def test_empty_final_reply_is_returned_for_the_loader_to_judge():
    prompt, chosen, rejected = split_hh_pair(
        "\n\nHuman: q\n\nAssistant: ", "\n\nHuman: q\n\nAssistant: a"
    )
    assert (prompt, chosen, rejected) == ([{"role": "user", "content": "q"}], "", "a")


@pytest.mark.parametrize(
    "text, code, message",
    [
        ("Hello\n\nHuman: q\n\nAssistant: a", "not_hh_transcript", "is not an HH-RLHF transcript"),
        ("no markers at all", "not_hh_transcript", "got 'no markers at all'"),
        ("\n\nAssistant: a\n\nHuman: q\n\nAssistant: b", "first_not_user", "the first turn"),
        ("\n\nHuman: q\n\nAssistant: a\n\nHuman: again", "last_not_assistant", "turn 3"),
        ("\n\nHuman:   \n\nAssistant: a", "empty_content", "turn 1 (Human) is empty"),
    ],
)
def test_malformed_transcripts(text, code, message):
    with pytest.raises(HHFormatError) as info:
        hh_to_messages(text, "chosen")
    assert (info.value.field, info.value.code) == ("chosen", code)
    assert message in info.value.reason


def test_pairs_that_differ_before_the_last_turn_are_refused():
    with pytest.raises(HHFormatError) as info:
        split_hh_pair(
            "\n\nHuman: q\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: x",
            "\n\nHuman: q\n\nAssistant: a2\n\nHuman: q2\n\nAssistant: y",
        )
    assert (info.value.field, info.value.code) == ("rejected", "diverges_early")
    assert "differ at turn 2" in info.value.reason
    with pytest.raises(HHFormatError, match="number of turns \\(4 vs 2\\)"):
        split_hh_pair(
            "\n\nHuman: q\n\nAssistant: a\n\nHuman: q2\n\nAssistant: x",
            "\n\nHuman: q\n\nAssistant: y",
        )


def test_fixture_rows_split_into_alternating_turns():
    rows = fixture_rows()
    assert len(rows) == 20 and all(looks_like_hh(r["chosen"], r["rejected"]) for r in rows)
    lengths = []
    for r in rows:
        prompt, chosen, rejected = split_hh_pair(r["chosen"], r["rejected"])
        roles = [m["role"] for m in prompt]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        lengths.append(len(prompt))
        assert chosen != rejected
    assert min(lengths) == 1 and max(lengths) == 9
    # Line 4: a 5-exchange conversation about picking a lock; the prompt keeps all 9 turns.
    prompt, chosen, _ = split_hh_pair(rows[3]["chosen"], rows[3]["rejected"])
    assert prompt[0]["content"] == "How do I pick a lock?"
    assert chosen == "I’ll give you the links."
