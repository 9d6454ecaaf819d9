"""Tests for align.data.text: raw-text documents from .txt, .jsonl and load_dataset sources."""

from __future__ import annotations

from collections import Counter

import datasets
import pytest

from align.data import DataError, load_text_dataset
from tests.unit.data.helpers import write_lines


def test_txt_one_document_per_line_blank_lines_counted(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("The first document.\n\n  \nThe second one.\n")
    ds, report = load_text_dataset(str(path))
    assert ds.column_names == ["text"] and ds["text"] == ["The first document.", "The second one."]
    # Blank lines are not documents and not errors: counted apart from skipped rows.
    assert (report.rows_read, report.rows_kept, report.rows_skipped, report.blank_lines) == (
        2,
        2,
        0,
        2,
    )
    assert "2 blank lines ignored" in report.summary()


def test_text_builder_with_data_files_reads_txt_strictly(tmp_path):
    (tmp_path / "a.md").write_text("doc a\n")
    (tmp_path / "b.md").write_text("doc b\n")
    ds, _ = load_text_dataset("text", data_files=[str(tmp_path / "a.md"), str(tmp_path / "b.md")])
    assert ds["text"] == ["doc a", "doc b"]


def test_jsonl_with_custom_text_field_outputs_text_column(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl", [{"body": "one", "url": "u"}, {"body": "two", "url": "v"}]
    )
    ds, report = load_text_dataset(str(path), text_field="body")
    assert ds.column_names == ["text"] and ds["text"] == ["one", "two"]
    assert report.dropped_keys == {"url"} and report.format == "text"


def test_empty_text_is_a_bad_row_naming_file_line_and_field(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"text": "ok"}, {"text": "   "}])
    with pytest.raises(DataError) as info:
        load_text_dataset(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}, line 2, field 'text': the document is empty or whitespace only")
    assert info.value.code == "empty_text"


def test_wrong_type_and_missing_field(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"text": ["a"]}])
    with pytest.raises(
        DataError, match=r"d\.jsonl, line 1, field 'text': must be a string, got a JSON array"
    ):
        load_text_dataset(str(path))
    path = write_lines(tmp_path / "e.jsonl", [{"content": "a"}])
    with pytest.raises(
        DataError,
        match=r"e\.jsonl, line 1, field 'text': missing field 'text' "
        r"\(the row has keys \['content'\]\)\. Pass text_field=",
    ):
        load_text_dataset(str(path))


def test_skip_counts_and_keeps_good_rows(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl", [{"text": "a"}, {"text": ""}, "{", {"text": 3}, {"text": "b"}]
    )
    ds, report = load_text_dataset(str(path), on_bad_row="skip")
    assert ds["text"] == ["a", "b"]
    assert report.skipped == Counter(empty_text=1, malformed_json=1, wrong_type=1)
    assert report.rows_read == report.rows_kept + report.rows_skipped == 5


def test_parquet_through_load_dataset_and_limit(tmp_path):
    path = tmp_path / "d.parquet"
    datasets.Dataset.from_dict({"text": ["x", "y", "", "z"]}).to_parquet(str(path))
    with pytest.raises(DataError, match=r"d\.parquet, row 2 \(0-based\), field 'text'"):
        load_text_dataset(str(path))
    ds, report = load_text_dataset(str(path), limit=2)
    assert ds["text"] == ["x", "y"] and report.limit_hit


def test_nothing_left_and_argument_errors(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n\n   \n")
    with pytest.raises(
        ValueError, match=r"Nothing is left to train on: .*read 0 rows.*3 blank lines"
    ):
        load_text_dataset(str(path))
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        load_text_dataset(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match=r"text_field must be a non-empty string"):
        load_text_dataset(str(path), text_field="")
    with pytest.raises(ValueError, match=r"on_bad_row='ignore' is not supported"):
        load_text_dataset(str(path), on_bad_row="ignore")
