"""Tests for align.data.source (the readers) and align.data.errors (errors and the report)."""

from __future__ import annotations

import json
import logging
import pickle
from collections import Counter

import datasets
import pytest

from align.data import DataError, LoadReport, SourceRef, handle_bad, iter_rows
from tests.unit.data.helpers import write_lines


def read_all(*args, **kwargs):
    report = kwargs.setdefault("report", LoadReport("test"))
    rows = list(iter_rows(*args, **kwargs))
    return rows, report


# ----------------------------------------------------------------------------- strict JSON Lines


def test_jsonl_rows_have_one_based_line_numbers_and_blank_lines_are_counted(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"a": 1}, "", "   ", {"a": 2}, ""])
    rows, report = read_all(str(path))
    assert [(str(where), where.row_kind, row, raw) for where, row, raw in rows] == [
        (str(path), "line", 1, {"a": 1}),
        (str(path), "line", 4, {"a": 2}),
    ]
    # Lines 2, 3 and 5 are blank: ignored, never an error, but counted.
    assert report.blank_lines == 3
    assert report.rows_read == 2


def test_jsonl_with_utf8_bom_and_crlf_reads(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a": "x"}\r\n{"a": "y"}\r\n')
    rows, _ = read_all(str(path))
    assert [raw["a"] for _, _, raw in rows] == ["x", "y"]


def test_malformed_json_line_names_file_line_and_json_error(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [{"a": 1}, {"a": 2}, '{"a": 3,,}'])
    with pytest.raises(DataError) as info:
        read_all(str(path))
    err = info.value
    assert (err.source, err.row, err.code) == (str(path), 3, "malformed_json")
    msg = str(err)
    assert f"{path}, line 3:" in msg
    assert "not valid JSON" in msg and "column" in msg
    assert "on_bad_row=skip" in msg


def test_json_array_on_a_line_is_a_bad_row(tmp_path):
    path = write_lines(tmp_path / "arr.jsonl", [{"a": 1}, "[1, 2]"])
    with pytest.raises(
        DataError, match=r"arr\.jsonl, line 2: expected a JSON object .* got a JSON array"
    ):
        read_all(str(path))


def test_invalid_utf8_line_is_a_bad_row(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl, line 2: line is not valid UTF-8") as info:
        read_all(str(path))
    assert info.value.code == "not_utf8"


def test_skip_counts_each_reason_and_keeps_good_rows(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [{"a": 1}, "{oops", "[1]", '"str"', {"a": 2}, "{"])
    rows, report = read_all(str(path), on_bad_row="skip")
    assert [row for _, row, _ in rows] == [1, 5]
    assert report.skipped == Counter(malformed_json=2, not_an_object=2)
    # Every row read is either kept (by the caller) or counted as skipped.
    assert report.rows_read == len(rows) + report.rows_skipped == 6


def test_on_bad_row_is_validated():
    with pytest.raises(
        ValueError, match=r"on_bad_row='drop' is not supported; pass one of error, skip"
    ):
        iter_rows("x.jsonl", on_bad_row="drop")


def test_json_file_holding_an_array_is_read_by_item(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"a": 1}, 7, {"a": 3}], indent=2))
    with pytest.raises(
        DataError, match=r"alpaca\.json, item 1 \(0-based\): expected each array item"
    ):
        read_all(str(path))
    rows, report = read_all(str(path), on_bad_row="skip")
    assert [(w.row_kind, row, raw) for w, row, raw in rows] == [
        ("item", 0, {"a": 1}),
        ("item", 2, {"a": 3}),
    ]
    assert report.skipped == Counter(not_an_object=1)


def test_pretty_printed_json_is_read_whole_and_a_wrapped_list_is_refused_with_the_fix(tmp_path):
    # One pretty-printed object is one row; a pretty-printed array (leading blank lines and all) is
    # one row per item. Neither is "not valid JSON".
    one = tmp_path / "pretty.json"
    one.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}, indent=2))
    rows, report = read_all(str(one))
    assert [(w.row_kind, row, raw) for w, row, raw in rows] == [
        ("item", 0, {"messages": [{"role": "user", "content": "hi"}]})
    ]
    assert report.rows_read == 1
    arr = tmp_path / "arr.json"
    arr.write_text("\n\n" + json.dumps([{"a": 1}, {"a": 2}], indent=4))
    assert [raw for _, _, raw in read_all(str(arr))[0]] == [{"a": 1}, {"a": 2}]
    # {"data": [...]}: datasets reads it only with field="data"; we say how to unwrap it.
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"a": 1}, {"a": 2}]}, indent=2))
    with pytest.raises(DataError, match=r"wrapped\.json, line 1, field 'data': the file is one JSON object whose "
                       r"only key 'data' holds a list of 2 objects.*jq -c '\.data\[\]' wrapped\.json"):
        read_all(str(wrapped), on_bad_row="skip")  # no row to skip
    # Two pretty-printed objects one after the other: where it breaks.
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"a": 1}, indent=2) + "\n" + json.dumps({"a": 2}, indent=2))
    with pytest.raises(DataError, match=r"two\.json, line 4: the file is neither one JSON value .* nor JSON Lines"):
        read_all(str(two))
    # A .json file of JSON Lines is still read line by line.
    lines = write_lines(tmp_path / "lines.json", [{"a": 1}, {"a": 2}])
    assert [(row, raw) for _, row, raw in read_all(str(lines))[0]] == [(1, {"a": 1}), (2, {"a": 2})]


def test_pretty_printed_jsonl_says_so(tmp_path):
    path = tmp_path / "pretty.jsonl"
    path.write_text(json.dumps({"a": 1}, indent=2))
    with pytest.raises(DataError, match=r"pretty\.jsonl, line 1: not valid JSON .* looks pretty-printed"):
        read_all(str(path))


def test_gzipped_jsonl_json_and_txt_are_read_by_the_same_strict_readers(tmp_path):
    import gzip

    jl = tmp_path / "hh.jsonl.gz"
    with gzip.open(jl, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"a": 1}) + "\n\n" + "nope\n" + json.dumps({"a": 3}) + "\n")
    with pytest.raises(DataError, match=r"hh\.jsonl\.gz, line 3: not valid JSON"):
        read_all(str(jl))
    rows, report = read_all(str(jl), on_bad_row="skip")
    assert [(row, raw) for _, row, raw in rows] == [(1, {"a": 1}), (4, {"a": 3})]
    assert (report.rows_read, report.blank_lines, report.skipped) == (3, 1, Counter(malformed_json=1))
    arr = tmp_path / "alpaca.json.gz"
    arr.write_bytes(gzip.compress(json.dumps([{"a": 1}, {"a": 2}], indent=2).encode()))
    assert [raw for _, _, raw in read_all(str(arr))[0]] == [{"a": 1}, {"a": 2}]
    txt = tmp_path / "corpus.txt.gz"
    txt.write_bytes(gzip.compress(b"one\n\ntwo\n"))
    assert [raw for _, _, raw in read_all(str(txt))[0]] == [{"text": "one"}, {"text": "two"}]
    assert [raw for _, _, raw in read_all("json", data_files=str(jl), on_bad_row="skip")[0]] == [{"a": 1}, {"a": 3}]
    # A truncated download is an error whatever on_bad_row says, named as such.
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(("".join(json.dumps({"a": i}) + "\n" for i in range(500))).encode())[:200])
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz, line \d+: the gzip file is truncated or corrupt.*gzip -t"):
        read_all(str(cut), on_bad_row="skip")


def test_other_compressions_and_unknown_suffixes_name_a_fix_a_stage_can_use(tmp_path):
    # No stage takes data_files: the messages must not suggest it.
    xz = tmp_path / "d.jsonl.xz"
    xz.write_bytes(b"\xfd7zXZ")
    with pytest.raises(ValueError, match=r"\.xz files are not read directly .* Decompress it first \(e\.g\. `unxz d\.jsonl\.xz`\)") as info:
        iter_rows(str(xz))
    assert "data_files" not in str(info.value)
    odd = tmp_path / "d.xml"
    odd.write_text("<a/>")
    with pytest.raises(ValueError, match=r"from its suffix '\.xml'.*convert it to JSON Lines") as info:
        iter_rows(str(odd))
    assert "data_files" not in str(info.value)


def test_json_builder_with_local_data_files_uses_the_strict_reader(tmp_path):
    write_lines(tmp_path / "a.jsonl", [{"a": 1}])
    write_lines(tmp_path / "b.jsonl", [{"a": 2}, "nope"])
    rows, report = read_all("json", data_files=str(tmp_path / "*.jsonl"), on_bad_row="skip")
    assert [(str(w), row) for w, row, _ in rows] == [
        (str(tmp_path / "a.jsonl"), 1),
        (str(tmp_path / "b.jsonl"), 1),
    ]
    assert report.skipped == Counter(malformed_json=1)


def test_data_files_mapping_picks_the_split(tmp_path):
    write_lines(tmp_path / "tr.jsonl", [{"s": "train"}])
    write_lines(tmp_path / "va.jsonl", [{"s": "val"}])
    files = {"train": str(tmp_path / "tr.jsonl"), "validation": str(tmp_path / "va.jsonl")}
    rows, _ = read_all("json", "validation", data_files=files)
    assert [raw for _, _, raw in rows] == [{"s": "val"}]
    with pytest.raises(
        ValueError, match=r"data_files has no split 'test' \(it has \['train', 'validation'\]\)"
    ):
        iter_rows("json", "test", data_files=files)


# ----------------------------------------------------------------------------- plain text


def test_txt_file_yields_one_text_row_per_non_blank_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc\n\nsecond doc  \n   \n")
    rows, report = read_all(str(path))
    assert [(row, raw) for _, row, raw in rows] == [
        (1, {"text": "first doc"}),
        (3, {"text": "second doc  "}),
    ]
    assert report.blank_lines == 2


# ------------------------------------------------------------------- datasets.load_dataset


def test_parquet_path_goes_through_load_dataset(tmp_path):
    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list([{"text": "a"}, {"text": "b"}]).to_parquet(str(path))
    rows, report = read_all(str(path))
    assert [(str(w), w.row_kind, row, raw) for w, row, raw in rows] == [
        (str(path), "row", 0, {"text": "a"}),
        (str(path), "row", 1, {"text": "b"}),
    ]
    assert report.rows_read == 2


def test_csv_builder_with_data_files(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\nHi,Hello\nA,B\n")
    rows, _ = read_all("csv", data_files=str(path))
    assert [raw for _, _, raw in rows] == [
        {"prompt": "Hi", "completion": "Hello"},
        {"prompt": "A", "completion": "B"},
    ]
    assert "row 1 (0-based)" in str(DataError(rows[1][0], rows[1][1], "prompt", "bad"))


def test_save_to_disk_folder_reads_the_split(tmp_path):
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_list([{"text": "t"}]),
        test=datasets.Dataset.from_list([{"text": "e"}]),
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    rows, _ = read_all(str(tmp_path / "saved"), "test")
    assert [raw for _, _, raw in rows] == [{"text": "e"}]
    with pytest.raises(
        ValueError, match=r"has no split 'validation' \(it has \['test', 'train'\]\)"
    ):
        iter_rows(str(tmp_path / "saved"), "validation")


# ----------------------------------------------------------------------------- argument errors


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nope" / "sft_train.jsonl"
    with pytest.raises(
        FileNotFoundError, match=r"data file not found: .*nope/sft_train\.jsonl.*Check the path"
    ):
        iter_rows(str(missing))
    with pytest.raises(FileNotFoundError, match=r"nope/x\.csv"):
        iter_rows("csv", data_files=str(tmp_path / "nope" / "x.csv"))
    with pytest.raises(FileNotFoundError, match=r"no data file matches the pattern: .*\*\.jsonl"):
        iter_rows("json", data_files=str(tmp_path / "*.jsonl"))


def test_argument_mistakes_say_how_to_fix(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"a": 1}])
    with pytest.raises(ValueError, match=r"is a file, so data_files=.* Drop data_files"):
        iter_rows(str(path), data_files=str(path))
    with pytest.raises(ValueError, match=r"takes no load_dataset arguments; got \['revision'\]"):
        iter_rows(str(path), revision="main")
    with pytest.raises(
        ValueError, match=r"source='json' names a datasets builder and needs data_files"
    ):
        iter_rows("json")
    odd = tmp_path / "d.xml"
    odd.write_text("<a/>")
    with pytest.raises(
        ValueError, match=r"cannot tell how to read .*d\.xml.* from its suffix '\.xml'"
    ):
        iter_rows(str(odd))


# ----------------------------------------------------------------------------- errors and report


def test_data_error_message_and_fields():
    reason = "unknown role 'bot' (expected one of system, user, assistant)"
    err = DataError(
        SourceRef("data/farm/sft_train.jsonl"), 17, "messages[1].role", reason, code="unknown_role"
    )
    assert str(err) == (
        "data/farm/sft_train.jsonl, line 17, field 'messages[1].role': unknown role 'bot' "
        "(expected one of system, user, assistant). "
        "Fix the row or pass on_bad_row=skip to skip bad rows."
    )
    assert isinstance(err, ValueError)
    assert (err.reason, err.code) == (reason, "unknown_role")
    # The four positional arguments alone make a valid error (code defaults to "bad_row").
    plain = DataError("p.jsonl", 2, "prompt", "expected a non-empty string")
    assert (str(plain), plain.code) == (
        "p.jsonl, line 2, field 'prompt': expected a non-empty string. "
        "Fix the row or pass on_bad_row=skip to skip bad rows.",
        "bad_row",
    )
    hub = DataError(SourceRef("org/ds (split 'train')", "row"), 0, None, "bad", hint="Fix it.")
    assert str(hub) == "org/ds (split 'train'), row 0 (0-based): bad. Fix it."
    back = pickle.loads(pickle.dumps(hub))
    assert (str(back), back.row_kind, back.code) == (str(hub), "row", "bad_row")


def test_load_report_metrics_and_summary():
    report = LoadReport(
        "d.jsonl",
        rows_read=10,
        rows_kept=7,
        skipped=Counter(too_long=2, unknown_role=1),
        truncated=1,
        blank_lines=4,
        format="messages",
        dropped_keys={"id"},
    )
    assert report.as_metrics() == {
        "data/rows_read": 10,
        "data/rows_kept": 7,
        "data/rows_skipped": 3,
        "data/rows_truncated": 1,
        "data/blank_lines": 4,
        "data/skipped/too_long": 2,
        "data/skipped/unknown_role": 1,
    }
    assert report.as_metrics(prefix="sft/data/")["sft/data/skipped/too_long"] == 2
    assert report.summary() == (
        "d.jsonl: read 10 rows, kept 7 (format messages), "
        "skipped 3 (too_long: 2, unknown_role: 1), "
        "1 longer than max_length kept for the trainer to truncate, "
        "4 blank lines ignored, keys not kept: id"
    )


def test_handle_bad_raises_or_counts_and_warns_for_the_first_few(caplog):
    report = LoadReport("d.jsonl")
    err = DataError("d.jsonl", 3, "text", "empty", code="empty_text")
    with pytest.raises(DataError):
        handle_bad(report, err, "error")
    assert report.rows_skipped == 0
    with caplog.at_level(logging.WARNING, logger="align.data.errors"):
        for _ in range(8):
            handle_bad(report, err, "skip")
    assert report.skipped == Counter(empty_text=8)
    # 5 rows logged one by one, then one line saying the rest are only counted.
    assert sum("Skipping bad row" in r.message for r in caplog.records) == 5
    assert sum("counted, not logged" in r.message for r in caplog.records) == 1
