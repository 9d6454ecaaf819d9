"""Load raw text for continued pre-training, one document per row, checking every row.

Sources are read as in :mod:`align.data.source`:

* ``.txt`` files (or ``source="text"`` with local ``data_files``): one document per line.
  Blank and whitespace-only lines are ignored, never an error, and counted in
  ``LoadReport.blank_lines`` (so ``summary()`` shows them).
* ``.jsonl``/``.json`` files, read strictly, with the document in ``text_field``.
* Anything ``datasets.load_dataset`` reads (``.csv``/``.parquet`` files, builder names with
  ``data_files``, folders, hub datasets), with the document in ``text_field``.

A row whose ``text_field`` is missing, not a string, or empty/whitespace-only is a bad row: a
:class:`~align.data.errors.DataError`, or a counted skip with ``on_bad_row="skip"``. The
returned dataset has a single column ``text`` whatever ``text_field`` was, which is the column
TRL's SFT trainer reads for language modeling (``dataset_text_field="text"``).
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets

from align.data.checks import BadRow
from align.data.errors import (
    BAD_ROW_MODES,
    DataError,
    LoadReport,
    SourceRef,
    check_choice,
    check_positive,
    json_type,
    nothing_left,
)
from align.data.rows import check_rows
from align.data.source import describe_source


def load_text_dataset(
    source: str,
    split: str = "train",
    *,
    data_files=None,
    text_field: str = "text",
    on_bad_row: str = "error",
    limit: int | None = None,
    load_kwargs: dict | None = None,
    config_prefix: str = "",
) -> tuple[datasets.Dataset, LoadReport]:
    """Load raw-text documents; return them with a report of what was kept and skipped.

    Args:
        source: A ``.txt``/``.jsonl``/``.json``/``.csv``/``.parquet`` file, a folder, a builder
            name used with ``data_files``, or a hub dataset name.
        split: Split to read.
        data_files: Files for a builder-name or hub source, as for ``datasets.load_dataset``.
        text_field: Field holding the document (``.txt`` rows always have ``text``).
        on_bad_row: ``"error"`` raises at the first bad row; ``"skip"`` drops bad rows and counts
            them by reason in the report.
        limit: Stop after this many kept rows (quick runs).
        load_kwargs: Extra arguments for ``datasets.load_dataset``.
        config_prefix: Where the caller's config holds these options (``"data."`` in a stage),
            so error hints name the override that works (``data.on_bad_row=skip``).

    Returns:
        ``(dataset, report)``: a ``datasets.Dataset`` with one column ``text``, and the
        :class:`LoadReport`.

    Raises:
        DataError: A bad row with ``on_bad_row="error"``; the message names the source, the
            row, the field and the fix.
        FileNotFoundError: The source file does not exist.
        ValueError: Bad arguments, or no row is left after loading.
    """
    check_choice("on_bad_row", on_bad_row, BAD_ROW_MODES)
    check_positive("limit", limit)
    if not isinstance(text_field, str) or not text_field:
        raise ValueError(
            f"text_field must be a non-empty string naming a column, got {text_field!r}."
        )
    report = LoadReport(describe_source(source, split, data_files), format="text")

    def check(raw: Mapping, bad: BadRow) -> str:
        text = _check_document(raw, text_field, bad.where, bad.row)
        report.dropped_keys.update(k for k in raw if k != text_field)
        return text

    texts = check_rows(
        source,
        split,
        check,
        report,
        data_files=data_files,
        on_bad_row=on_bad_row,
        limit=limit,
        load_kwargs=load_kwargs,
        desc="Reading",
        unit=" docs",
        config_prefix=config_prefix,
    )
    if not texts:
        raise ValueError(nothing_left(report))
    return datasets.Dataset.from_dict({"text": texts}), report


def _check_document(raw: object, text_field: str, where: SourceRef, row: int) -> str:
    """Return the row's document, or raise a :class:`DataError` saying what is wrong."""
    assert isinstance(raw, Mapping), type(raw)  # iter_rows yields only objects
    if text_field not in raw:
        reason = f"missing field '{text_field}' (the row has keys {sorted(raw)})"
        hint = "Pass text_field= naming the column that holds the text, or on_bad_row=skip."
        raise DataError(where, row, text_field, reason, code="missing_field", hint=hint)
    value = raw[text_field]
    if not isinstance(value, str):
        reason = f"must be a string, got a JSON {json_type(value)} ({repr(value)[:40]})"
        raise DataError(where, row, text_field, reason, code="wrong_type")
    if not value.strip():
        reason = f"the document is empty or whitespace only ({value!r})"
        raise DataError(where, row, text_field, reason, code="empty_text")
    return value
