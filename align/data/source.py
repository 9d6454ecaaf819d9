"""Read raw rows from a local file, a folder, or a hub dataset, strictly.

Which reader a source gets:

* A local ``.jsonl``/``.json`` file (or ``source="json"`` with local ``.jsonl``/``.json``
  ``data_files``): our strict JSON Lines reader. Every non-blank line must be a JSON object; a
  malformed line is a :class:`DataError` naming the file and the 1-based line. A ``.json`` file
  whose first character is ``[`` is read as one JSON array instead (rows are 0-based items).
* A local ``.txt`` file (or ``source="text"`` with local ``data_files``): one row
  ``{"text": line}`` per non-blank line, numbered by line.
* Anything else goes through ``datasets.load_dataset`` for real: a local ``.csv``/``.parquet``/
  ``.arrow`` file (the builder is picked from the suffix), a builder name with ``data_files``
  (``source="parquet", data_files="x.parquet"``), a folder, or a hub dataset name such as
  ``HuggingFaceH4/ultrachat_200k``. Rows are numbered by 0-based index. A folder written by
  ``Dataset.save_to_disk`` is read with ``datasets.load_from_disk``.

A ``.json`` array file that does not parse is an error whatever ``on_bad_row`` says: there is
no row to skip.

Blank lines are never errors: they are counted in ``LoadReport.blank_lines`` and skipped.
``split`` picks the split of a hub dataset, a folder, or a ``data_files`` mapping; a single
file is read whole whatever the split.
"""

from __future__ import annotations

import codecs
import glob
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import datasets

from align.data.errors import BAD_ROW_MODES, DataError, LoadReport, SourceRef, check_choice, handle_bad, json_type

JSON_SUFFIXES = (".jsonl", ".json")
TEXT_SUFFIXES = (".txt",)
# Suffixes read by datasets.load_dataset, and the builder each one needs.
FILE_BUILDERS = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
# Builder names accepted as ``source`` together with ``data_files``.
BUILDERS = ("json", "text", "csv", "parquet", "arrow")
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4")
_KNOWN_SUFFIXES = JSON_SUFFIXES + TEXT_SUFFIXES + tuple(FILE_BUILDERS)

Row = tuple[SourceRef, int, object]


def describe_source(source: str, split: str = "train", data_files=None) -> str:
    """A short label for log lines and reports: the file path, or the name and split."""
    if source in BUILDERS and data_files is not None:
        files = data_files.get(split, data_files) if isinstance(data_files, Mapping) else data_files
        if isinstance(files, (str, os.PathLike)):
            return str(files)
        return f"{source} files {', '.join(map(str, files))}"
    if Path(source).expanduser().is_file():
        return str(source)
    return f"{source} (split '{split}')"


def iter_rows(
    source: str,
    split: str = "train",
    data_files=None,
    *,
    on_bad_row: str = "error",
    report: LoadReport | None = None,
    **load_kwargs,
) -> Iterator[Row]:
    """Iterate over ``(where, row_number, raw_row)`` for every row of ``source``.

    The source is checked when this is called (missing files, bad arguments); rows are read as
    the iterator is consumed. ``where`` is a :class:`SourceRef`: ``str(where)`` is the file path
    or dataset label and ``where.row_kind`` says how ``row_number`` counts (1-based ``line``,
    0-based ``item`` or ``row``). Rows the line readers cannot parse are bad rows: raised, or
    counted in ``report`` with ``on_bad_row="skip"``. ``report.rows_read`` and
    ``report.blank_lines`` are counted here; the caller counts what it keeps.

    Args:
        source: Path to a file or folder, a builder name (``json``, ``text``, ``csv``,
            ``parquet``, ``arrow``) used with ``data_files``, or a hub dataset name.
        split: Split to read (hub datasets, folders, ``data_files`` mappings).
        data_files: As for ``datasets.load_dataset``: a path, a list of paths or globs, or a
            mapping from split to those.
        on_bad_row: ``"error"`` raises on an unparsable line; ``"skip"`` counts it and goes on.
        report: Report to count into; a fresh one if ``None``.
        **load_kwargs: Passed to ``datasets.load_dataset`` (e.g. ``name``, ``revision``,
            ``streaming``); refused for sources our line readers read.

    Returns:
        An iterator of ``(SourceRef, int, object)``.

    Raises:
        FileNotFoundError: A local file or ``data_files`` entry does not exist.
        ValueError: Bad arguments (unknown ``on_bad_row``, unsupported suffix, ...).
        DataError: From the iterator, for an unparsable line with ``on_bad_row="error"``.
    """
    check_choice("on_bad_row", on_bad_row, BAD_ROW_MODES)
    if report is None:
        report = LoadReport(describe_source(source, split, data_files))
    files = _line_files(source, split, data_files)
    if files is not None:
        if load_kwargs:
            raise ValueError(
                f"{source!r} is read by align's own line reader, which takes no load_dataset "
                f"arguments; got {sorted(load_kwargs)}. Drop them, or convert the file to parquet."
            )
        return _read_line_files(files, on_bad_row, report)
    ref, rows = _load_with_datasets(source, split, data_files, load_kwargs)
    return _count_rows(ref, rows, report)


def _missing(entry: str, what: str = "data file not found") -> FileNotFoundError:
    path = Path(entry).expanduser()
    return FileNotFoundError(
        f"{what}: {entry!r} (resolved to {path.resolve()}). Check the path; relative "
        f"paths are resolved from the working directory {Path.cwd()}."
    )


def _looks_like_path(source: str) -> bool:
    # Hub names are "name" or "owner/name"; anything else that does not exist is a typo'd path.
    return (
        source.lower().endswith(_KNOWN_SUFFIXES)
        or source.startswith(("/", "./", "../", "~"))
        or source.count("/") > 1
    )


def _builder_files(builder: str, split: str, data_files) -> list[str]:
    """Resolve ``data_files`` for ``split`` to a list: local files checked, globs expanded."""
    if data_files is None:
        raise ValueError(
            f"source={builder!r} names a datasets builder and needs data_files, e.g. "
            f"data_files='data/train.{builder}'; or pass the file's path itself as source."
        )
    if isinstance(data_files, Mapping):
        if split not in data_files:
            raise ValueError(
                f"data_files has no split {split!r} (it has {sorted(data_files)}); "
                "pass split= one of those."
            )
        data_files = data_files[split]
    if isinstance(data_files, (str, os.PathLike)):
        data_files = [data_files]
    files: list[str] = []
    for entry in map(str, data_files):
        if "://" in entry:
            files.append(entry)  # remote: datasets fetches it
        elif any(c in entry for c in "*?["):
            matches = sorted(glob.glob(os.path.expanduser(entry), recursive=True))
            if not matches:
                raise _missing(entry, "no data file matches the pattern")
            files.extend(matches)
        elif not Path(entry).expanduser().is_file():
            raise _missing(entry)
        else:
            files.append(entry)
    return files


def _line_files(source: str, split: str, data_files) -> list[tuple[Path, str]] | None:
    """The ``(path, "json"|"text")`` files our line readers read, or ``None`` for datasets."""
    path = Path(source).expanduser()
    if path.is_file():
        if data_files is not None:
            raise ValueError(
                f"source={source!r} is a file, so data_files={data_files!r} has nothing to apply "
                f"to. Drop data_files, or pass a builder name such as source='json' with it."
            )
        suffix = path.suffix.lower()
        if suffix in JSON_SUFFIXES:
            return [(path, "json")]
        if suffix in TEXT_SUFFIXES:
            return [(path, "text")]
        if suffix not in FILE_BUILDERS:
            raise ValueError(
                f"cannot tell how to read {source!r} from its suffix {suffix!r}; supported: "
                f"{', '.join(_KNOWN_SUFFIXES)}. Rename the file, or pass source=<builder> "
                f"(one of {', '.join(BUILDERS)}) with data_files={source!r}."
            )
        return None
    if source in BUILDERS:
        files = _builder_files(source, split, data_files)
        if source == "json" and all(f.lower().endswith(JSON_SUFFIXES) for f in files):
            return [(Path(f).expanduser(), "json") for f in files]
        local = not any("://" in f or f.lower().endswith(_COMPRESSED) for f in files)
        if source == "text" and local:
            return [(Path(f).expanduser(), "text") for f in files]
        return None
    if not path.exists() and _looks_like_path(source):
        raise _missing(source)
    return None


def _load_with_datasets(
    source: str, split: str, data_files, load_kwargs: dict
) -> tuple[SourceRef, Iterable]:
    label = describe_source(source, split, data_files)
    path = Path(source).expanduser()
    if path.is_file():
        builder = FILE_BUILDERS[path.suffix.lower()]
        files = {split: str(path)}
        rows = datasets.load_dataset(builder, data_files=files, split=split, **load_kwargs)
    elif path.is_dir() and any((path / f).exists() for f in ("state.json", "dataset_dict.json")):
        rows = datasets.load_from_disk(str(path))
        if isinstance(rows, datasets.DatasetDict):
            if split not in rows:
                raise ValueError(
                    f"{source!r} has no split {split!r} (it has {sorted(rows)}); "
                    "pass split= one of those."
                )
            rows = rows[split]
    else:
        rows = datasets.load_dataset(source, data_files=data_files, split=split, **load_kwargs)
    return SourceRef(label, "row"), rows


def _count_rows(ref: SourceRef, rows: Iterable, report: LoadReport) -> Iterator[Row]:
    for i, row in enumerate(rows):
        report.rows_read += 1
        yield ref, i, row


def _read_line_files(
    files: list[tuple[Path, str]], on_bad_row: str, report: LoadReport
) -> Iterator[Row]:
    for path, kind in files:
        if kind == "text":
            yield from _read_text(path, report, on_bad_row)
        elif path.suffix.lower() == ".json" and _starts_with(path, b"["):
            yield from _read_json_array(path, report, on_bad_row)
        else:
            yield from _read_json_lines(path, report, on_bad_row)


def _starts_with(path: Path, char: bytes) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    return head.startswith(char)


def _lines(path: Path, report: LoadReport, on_bad_row: str) -> Iterator[tuple[SourceRef, int, str]]:
    """Decoded non-blank lines with their 1-based numbers; undecodable lines are bad rows."""
    ref = SourceRef(str(path), "line")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                report.rows_read += 1
                reason = f"line is not valid UTF-8 ({e.reason} at byte {e.start})"
                hint = "Re-encode the file as UTF-8, or pass on_bad_row=skip to skip bad rows."
                err = DataError(ref, lineno, None, reason, code="not_utf8", hint=hint)
                handle_bad(report, err, on_bad_row)
                continue
            if not line.strip():
                report.blank_lines += 1
                continue
            report.rows_read += 1
            yield ref, lineno, line


def _read_text(path: Path, report: LoadReport, on_bad_row: str) -> Iterator[Row]:
    for ref, lineno, line in _lines(path, report, on_bad_row):
        yield ref, lineno, {"text": line.rstrip("\r\n")}


def _read_json_lines(path: Path, report: LoadReport, on_bad_row: str) -> Iterator[Row]:
    for ref, lineno, line in _lines(path, report, on_bad_row):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            reason = f"not valid JSON ({e.msg} at column {e.colno}); each line must be one object"
            err = DataError(ref, lineno, None, reason, code="malformed_json")
            handle_bad(report, err, on_bad_row)
            continue
        if not isinstance(value, dict):
            reason = f"expected a JSON object {{...}} on each line, got a JSON {json_type(value)}"
            err = DataError(ref, lineno, None, reason, code="not_an_object")
            handle_bad(report, err, on_bad_row)
            continue
        yield ref, lineno, value


def _read_json_array(path: Path, report: LoadReport, on_bad_row: str) -> Iterator[Row]:
    """A ``.json`` file holding one array of objects (e.g. Alpaca's ``alpaca_data.json``)."""
    try:
        items = json.loads(path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        lineno = getattr(e, "lineno", 1)
        reason = f"the file starts with '[' but is not a valid JSON array ({e})"
        hint = "Fix the file, or write it as JSON Lines (one object per line)."
        ref = SourceRef(str(path), "line")
        raise DataError(ref, lineno, None, reason, code="malformed_json", hint=hint) from e
    ref = SourceRef(str(path), "item")
    for i, value in enumerate(items):
        report.rows_read += 1
        if not isinstance(value, dict):
            reason = f"expected each array item to be a JSON object, got a JSON {json_type(value)}"
            err = DataError(ref, i, None, reason, code="not_an_object")
            handle_bad(report, err, on_bad_row)
            continue
        yield ref, i, value
