"""Tests for align.data.holdout: the hash split of one file, under every loader that takes it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from align.data import DataError, Holdout, load_preferences, load_prompts, load_sft_dataset
from align.data.holdout import as_holdout, in_validation, prompt_key
from tests.unit.data.helpers import write_lines

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HH = FIXTURES / "hh_rlhf_20.jsonl"  # 19 good rows, line 20 a bad one (empty_response)


def test_the_rule_is_sha256_of_the_stripped_key():
    # sha256(b"hello") starts 2cf24dba5fb0a30e: 0x2cf24dba5fb0a30e / 2**64 = 0.17557..., so "hello" is in
    # validation for any fraction above that, and in train below it. Python's hash() would differ per run.
    assert in_validation("hello", 0.18) and not in_validation("hello", 0.17)
    assert in_validation("  hello\n", 0.18)  # surrounding whitespace is not part of the key
    # sha256(b"a") starts ca978112ca1bbdca: 0.79137...
    assert in_validation("a", 0.8) and not in_validation("a", 0.79)
    assert Holdout(0.18, "validation").keeps("hello") and not Holdout(0.18, "train").keeps("hello")


def test_the_key_is_the_first_user_turn():
    assert prompt_key(" plain prompt ") == "plain prompt"
    convo = [{"role": "system", "content": "be nice"}, {"role": "user", "content": " q1 "},
             {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    assert prompt_key(convo) == "q1"


@pytest.mark.parametrize("value,message", [
    ({"fraction": 0, "part": "train"}, "strictly between 0 and 1"),
    ({"fraction": 1.0, "part": "train"}, "strictly between 0 and 1"),
    ({"fraction": True, "part": "train"}, "strictly between 0 and 1"),
    ({"fraction": 0.1, "part": "test"}, "pass one of train, validation"),
    ({"fraction": 0.1}, "needs exactly fraction and part"),
    ({"fraction": 0.1, "part": "train", "seed": 1}, "needs exactly fraction and part"),
])
def test_bad_holdouts_are_refused_before_any_row_is_read(tmp_path, value, message):
    with pytest.raises(ValueError, match=message):
        load_preferences(str(tmp_path / "missing.jsonl"), holdout=value)  # refused before the file is looked at


def test_a_holdout_is_a_mapping_or_none():
    assert as_holdout(None) is None and as_holdout({"part": "train", "fraction": 0.5}) == Holdout(0.5, "train")
    with pytest.raises(TypeError, match="must be a mapping"):
        as_holdout(0.1)


def _parts(path: Path, fraction: float = 0.3):
    """Train and validation loads of ``path`` with their reports."""
    return [load_preferences(str(path), on_bad_row="skip", holdout={"fraction": fraction, "part": part})
            for part in ("train", "validation")]


def _first_turns(examples) -> set[str]:
    return {e.prompt[0]["content"].strip() for e in examples}


def test_hh_split_is_a_disjoint_partition_that_adds_up():
    (train, tr), (val, vr) = _parts(HH)
    everything, _ = load_preferences(str(HH), on_bad_row="skip")
    assert len(train) + len(val) == len(everything) == 19
    assert train and val and not _first_turns(train) & _first_turns(val)
    assert sorted(e.origin for e in train + val) == sorted(e.origin for e in everything)
    for report, kept, other in ((tr, train, val), (vr, val, train)):
        # Each load reads every row, keeps its part, counts the other part and the one bad row (both loads).
        assert (report.rows_read, report.rows_kept, report.held_out, report.rows_skipped) == (20, len(kept), len(other), 1)
        assert report.rows_read == report.rows_kept + report.rows_skipped + report.held_out
        assert report.as_metrics("data/x/")["data/x/rows_held_out"] == len(other)
        assert f"held out {len(other)}" in report.summary()


def test_hh_split_does_not_depend_on_row_order(tmp_path):
    lines = HH.read_text().splitlines()
    random.Random(0).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines) + "\n")
    for (a, _), (b, _) in zip(_parts(HH), _parts(shuffled)):
        assert sorted(json.dumps(e.prompt) for e in a) == sorted(json.dumps(e.prompt) for e in b)
        assert a and [e.origin for e in a] != [e.origin for e in b]  # the rows did move


def test_a_larger_fraction_only_moves_rows_into_validation():
    (_, _), (small, _) = _parts(HH, 0.2)
    (_, _), (large, _) = _parts(HH, 0.6)
    assert _first_turns(small) < _first_turns(large)


def test_every_row_held_out_says_so(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "hello", "chosen": "a", "rejected": "b"}])
    with pytest.raises(ValueError, match="Every good row belongs to the other part of the holdout split"):
        load_preferences(str(path), holdout=Holdout(0.5, "train"))  # "hello" hashes to 0.1756 < 0.5
    examples, report = load_preferences(str(path), holdout=Holdout(0.5, "validation"))
    assert len(examples) == 1 and report.held_out == 0


def test_bad_rows_are_bad_in_both_parts(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "hello", "chosen": "a", "rejected": "a"}])
    for part in ("train", "validation"):
        with pytest.raises(DataError, match="line 1, field 'rejected': chosen and rejected are the same text"):
            load_preferences(str(path), holdout={"fraction": 0.5, "part": part})


def test_sft_and_prompt_loaders_split_by_the_same_key(tmp_path):
    users = [f"question {i}" for i in range(30)]
    sft = write_lines(tmp_path / "sft.jsonl", [
        {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": u},
                      {"role": "assistant", "content": "answer"}]} for u in users])
    prompts = write_lines(tmp_path / "prompts.jsonl", [{"prompt": u} for u in users])
    expected = {u for u in users if in_validation(u, 0.3)}
    assert 0 < len(expected) < len(users)
    for part in ("train", "validation"):
        want = expected if part == "validation" else set(users) - expected
        ds, report = load_sft_dataset(str(sft), holdout={"fraction": 0.3, "part": part})
        assert {m[1]["content"] for m in ds["messages"]} == want  # the system turn is not the key
        assert report.rows_kept + report.held_out == report.rows_read == 30
        kept, report = load_prompts(str(prompts), holdout=Holdout(0.3, part))
        assert set(kept) == want and report.held_out == 30 - len(want)
