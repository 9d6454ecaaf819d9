"""Tests for align.data.rows: the strict row loop, alone and under every loader that runs it."""

from __future__ import annotations

from collections import Counter

import pytest

from align.data import (
    HELD_OUT,
    DataError,
    Several,
    Skip,
    check_rows,
    load_preferences,
    load_prompts,
    load_sft_dataset,
    load_text_dataset,
)
from align.data.errors import LoadReport
from align.ppo.ptx import load_demonstrations
from tests.unit.data.helpers import write_lines


def user_assistant(user: str, assistant: str, role: str = "assistant") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": role, "content": assistant}]}


# Per loader: how to call it with on_bad_row="skip", a good row, and a bad row with its code.
LOADERS = {
    "sft": (lambda path, tok: load_sft_dataset(path, on_bad_row="skip"),
            user_assistant("hi", "hello"), user_assistant("hi", "hello", role="bot"), "unknown_role"),
    "text": (lambda path, tok: load_text_dataset(path, on_bad_row="skip"), {"text": "a document"}, {"text": " "},
             "empty_text"),
    "preferences": (lambda path, tok: load_preferences(path, on_bad_row="skip"),
                    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
                    {"prompt": "2+2?", "chosen": "4", "rejected": "4"}, "identical_responses"),
    "prompts": (lambda path, tok: load_prompts(path, on_bad_row="skip"), {"prompt": "hi"}, {"prompt": ""}, "bad_prompt"),
    "demonstrations": (lambda path, tok: load_demonstrations(path, tok, 64, on_bad_row="skip"),
                       user_assistant("hi", "hello"), user_assistant("hi", ""), "empty_content"),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_counts_each_row_once(tmp_path, tokenizer, name):
    load, good, bad, code = LOADERS[name]
    path = write_lines(tmp_path / "x.jsonl", [good, bad, "", "{not json", good, bad, bad])
    rows, report = load(str(path), tokenizer)
    assert len(rows) == 2 == report.rows_kept
    assert report.skipped == Counter({code: 3, "malformed_json": 1})
    assert (report.rows_read, report.blank_lines) == (6, 1)
    assert report.rows_read == report.rows_kept + report.rows_skipped
    metrics = report.as_metrics("data/x/")
    assert metrics["data/x/rows_read"] == 6 and metrics[f"data/x/skipped/{code}"] == 3


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_raises_the_first_bad_row_by_default(tmp_path, tokenizer, name):
    _, good, bad, code = LOADERS[name]
    path = write_lines(tmp_path / "x.jsonl", [good, good, bad])
    calls = {
        "sft": lambda: load_sft_dataset(str(path)),
        "text": lambda: load_text_dataset(str(path)),
        "preferences": lambda: load_preferences(str(path)),
        "prompts": lambda: load_prompts(str(path)),
        "demonstrations": lambda: load_demonstrations(str(path), tokenizer, 64),
    }
    with pytest.raises(DataError) as info:
        calls[name]()
    assert (info.value.source, info.value.row, info.value.code) == (str(path), 3, code)
    assert str(info.value).startswith(f"{path}, line 3, field ")


# ----------------------------------------------------------------------------- the loop itself


def check_number(raw, bad):
    """Keep ``n``; a negative ``n`` is a bad row, zero a row always skipped."""
    n = raw["n"]
    if n < 0:
        raise bad("n", "negative", f"{n} is negative")
    if n == 0:
        return Skip(bad("n", "zero", "nothing to keep"))
    return n


def run(path, **kwargs):
    report = LoadReport(str(path))
    return check_rows(str(path), "train", check_number, report, **kwargs), report


def test_loop_keeps_order_and_a_skip_verdict_is_counted_whatever_on_bad_row(tmp_path):
    path = write_lines(tmp_path / "n.jsonl", [{"n": 3}, {"n": 0}, "", {"n": 1}])
    kept, report = run(path)  # on_bad_row="error": a Skip is not an error
    assert kept == [3, 1] and report.skipped == Counter({"zero": 1})
    assert (report.rows_read, report.rows_kept, report.blank_lines) == (3, 2, 1)


def test_loop_bad_rows_raise_or_are_counted(tmp_path):
    path = write_lines(tmp_path / "n.jsonl", [{"n": 3}, {"n": -1}, {"n": 2}])
    with pytest.raises(DataError, match=r"n\.jsonl, line 2, field 'n': -1 is negative\. Fix the row"):
        run(path)
    kept, report = run(path, on_bad_row="skip")
    assert kept == [3, 2] and report.skipped == Counter({"negative": 1}) and report.rows_read == 3


def test_loop_stops_at_the_limit_without_reading_on(tmp_path):
    path = write_lines(tmp_path / "n.jsonl", [{"n": 0}, {"n": 5}, {"n": 6}, "{not json"])
    kept, report = run(path, limit=2)
    assert kept == [5, 6] and report.limit_hit
    assert (report.rows_read, report.rows_kept, report.rows_skipped) == (3, 2, 1)  # line 4 never read


def test_loop_too_long_hook_follows_on_too_long(tmp_path):
    path = write_lines(tmp_path / "n.jsonl", [{"n": 3}, {"n": 50}, {"n": 4}])

    def too_long(n, bad):
        return bad("n", "too_long", f"{n} > 10") if n > 10 else None

    kept, report = run(path, too_long=too_long, on_too_long="truncate")
    assert kept == [3, 50, 4] and report.truncated == 1 and report.rows_skipped == 0
    kept, report = run(path, too_long=too_long, on_too_long="skip")
    assert kept == [3, 4] and report.skipped == Counter({"too_long": 1}) and report.rows_read == 3
    with pytest.raises(DataError, match=r"line 2, field 'n': 50 > 10"):
        run(path, too_long=too_long, on_too_long="error")


def check_items(raw, bad):
    """``{"n": ...}`` as in check_number; ``{"ns": [...]}`` a row of several items; ``{"out": n}`` held out."""
    if "out" in raw:
        return HELD_OUT
    if "ns" in raw:
        return Several(raw["ns"], "number", Counter(numbers_seen=len(raw["ns"])))
    return check_number(raw, bad)


def test_loop_counts_held_out_rows_apart(tmp_path):
    path = write_lines(tmp_path / "n.jsonl", [{"n": 3}, {"out": 1}, {"n": -1}, {"out": 2}, {"n": 4}])
    report = LoadReport(str(path))
    kept = check_rows(str(path), "train", check_items, report, on_bad_row="skip")
    assert kept == [3, 4] and report.held_out == 2 and report.skipped == Counter(negative=1)
    assert report.rows_read == 5 == report.rows_kept + report.rows_skipped + report.held_out
    assert report.as_metrics()["data/rows_held_out"] == 2


def test_loop_keeps_the_items_of_a_several_row_one_by_one(tmp_path):
    path = write_lines(tmp_path / "n.jsonl", [{"ns": [1, 50, 2]}, {"n": 3}, {"ns": [60, 70]}, {"ns": [5, 6]}])

    def too_long(n, bad):
        return bad("n", "too_long", f"{n} > 10") if n > 10 else None

    report = LoadReport(str(path))
    kept = check_rows(str(path), "train", check_items, report, too_long=too_long, on_too_long="skip")
    # Row 1 kept without 50; row 3 has no item left: a skipped row. Counts of kept Several rows only.
    assert kept == [1, 2, 3, 5, 6]
    assert (report.rows_read, report.rows_kept, report.skipped) == (4, 3, Counter(too_long=1))
    assert report.inner == Counter(numbers=4, numbers_seen=5, **{"numbers_skipped/too_long": 3})
    assert report.as_metrics()["data/numbers_skipped/too_long"] == 3
    report = LoadReport(str(path))
    kept = check_rows(str(path), "train", check_items, report, limit=2)  # the limit counts items
    assert kept == [1, 50] and report.limit_hit and report.rows_read == 1 and report.inner["numbers"] == 2
