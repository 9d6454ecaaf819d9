"""Read raw rows from a local file, a folder, or a hub dataset, strictly.

Which reader a source gets:

* A local ``.jsonl``/``.json`` file (or ``source="json"`` with local ``.jsonl``/``.json``
  ``data_files``): our strict JSON Lines reader. Every non-blank line must be a JSON object; a
  malformed line is a :class:`DataError` naming the file and the 1-based line. A ``.json`` file
  holding one JSON value over several lines (pretty-printed) is read whole instead: an array of
  objects gives one row per item (rows are 0-based items), a single object is one row. An object
  whose only key holds a list of objects (``{"data": [...]}``) is refused with the fix (save the
  list itself): ``datasets``' json builder too reads such a list only when told its key.
* A local ``.txt`` file (or ``source="text"`` with local ``data_files``): one row
  ``{"text": line}`` per non-blank line, numbered by line.
* The same files compressed with gzip (``.jsonl.gz``, ``.json.gz``, ``.txt.gz``: HH-RLHF ships
  as ``.jsonl.gz``) are read by the same readers, decompressed as they are read. Other
  compressions (``.bz2``, ``.xz``, ``.zst``, ``.zip``, ...) are refused with the fix.
* Anything else goes through ``datasets.load_dataset`` for real: a local ``.csv``/``.parquet``/
  ``.arrow`` file (the builder is picked from the suffix), a builder name with ``data_files``
  (``source="parquet", data_files="x.parquet"``), a folder, or a hub dataset name such as
  ``HuggingFaceH4/ultrachat_200k``. Rows are numbered by 0-based index. A folder written by
  ``Dataset.save_to_disk`` is read with ``datasets.load_from_disk``.

A ``.json`` file that does not parse as a whole or line by line, and a truncated or corrupt gzip
file, are errors whatever ``on_bad_row`` says: there is no row to skip.

Blank lines are never errors: they are counted in ``LoadReport.blank_lines`` and skipped.
``split`` picks the split of a hub dataset, a folder, or a ``data_files`` mapping; a single
file is read whole whatever the split.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import datasets

from align.data.errors import BAD_ROW_MODES, DEFAULT_HINT, DataError, LoadReport, SourceRef, check_choice, handle_bad, json_type

JSON_SUFFIXES = (".jsonl", ".json")
TEXT_SUFFIXES = (".txt",)
# Suffixes read by datasets.load_dataset, and the builder each one needs.
FILE_BUILDERS = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
# Builder names accepted as ``source`` together with ``data_files``.
BUILDERS = ("json", "text", "csv", "parquet", "arrow")
GZIP_SUFFIX = ".gz"  # read by our line readers, on top of a JSON or text suffix
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".7z", ".tgz")
_KNOWN_SUFFIXES = JSON_SUFFIXES + TEXT_SUFFIXES + tuple(FILE_BUILDERS)
_LINE_SUFFIXES = JSON_SUFFIXES + TEXT_SUFFIXES
# Keys of the row formats the loaders read: a single-object .json file with one of them is a row.
_ROW_KEYS = frozenset({
    "messages", "conversations", "prompt", "completion", "text", "instruction", "chosen", "rejected",
    "responses", "completions", "replies",
})

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
        source.lower().endswith(_KNOWN_SUFFIXES + _COMPRESSED)
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


def _file_kind(path: Path) -> str | None:
    """``"json"``/``"text"`` for the files our line readers read (gzipped or not), else ``None``."""
    name = path.name.lower().removesuffix(GZIP_SUFFIX)
    if name.endswith(JSON_SUFFIXES):
        return "json"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def _line_files(source: str, split: str, data_files) -> list[tuple[Path, str]] | None:
    """The ``(path, "json"|"text")`` files our line readers read, or ``None`` for datasets."""
    path = Path(source).expanduser()
    if path.is_file():
        if data_files is not None:
            raise ValueError(
                f"source={source!r} is a file, so data_files={data_files!r} has nothing to apply "
                f"to. Drop data_files, or pass a builder name such as source='json' with it."
            )
        kind = _file_kind(path)
        if kind is not None:
            return [(path, kind)]
        suffix = path.suffix.lower()
        if suffix in _COMPRESSED:
            inner = Path(path.stem).suffix.lower() or "(none)"
            raise ValueError(
                f"cannot read {source!r}: {suffix} files are not read directly (inner suffix "
                f"{inner}); only gzip-compressed JSON Lines, JSON and text files are "
                f"(.jsonl.gz, .json.gz, .txt.gz). Decompress it first (e.g. `{_DECOMPRESS.get(suffix, 'unpack')} "
                f"{path.name}`), or recompress it with gzip."
            )
        if suffix not in FILE_BUILDERS:
            raise ValueError(
                f"cannot tell how to read {source!r} from its suffix {suffix!r}; supported: "
                f"{', '.join(_KNOWN_SUFFIXES)}, and .jsonl.gz, .json.gz, .txt.gz. Rename the file if "
                "it is one of those, or convert it to JSON Lines (one object per line)."
            )
        return None
    if source in BUILDERS:
        files = _builder_files(source, split, data_files)
        if any("://" in f for f in files):
            return None  # remote: datasets fetches them
        if source == "json" and all(_file_kind(Path(f)) == "json" for f in files):
            return [(Path(f).expanduser(), "json") for f in files]
        plain = all(not f.lower().endswith(_COMPRESSED) or f.lower().endswith(GZIP_SUFFIX) for f in files)
        if source == "text" and plain:
            return [(Path(f).expanduser(), "text") for f in files]
        return None
    if not path.exists() and _looks_like_path(source):
        raise _missing(source)
    return None


_DECOMPRESS = {".bz2": "bunzip2", ".xz": "unxz", ".zst": "unzstd", ".zip": "unzip", ".lz4": "unlz4", ".7z": "7z x",
               ".tgz": "tar xzf"}


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
        elif path.name.lower().removesuffix(GZIP_SUFFIX).endswith(".json"):
            yield from _read_json_file(path, report, on_bad_row)
        else:
            yield from _read_json_lines(path, report, on_bad_row)


def _open(path: Path):
    """The file as bytes, decompressed when it is gzipped."""
    return gzip.open(path, "rb") if path.name.lower().endswith(GZIP_SUFFIX) else open(path, "rb")


def _bad_gzip(path: Path, line: int, e: Exception) -> DataError:
    reason = f"the gzip file is truncated or corrupt ({type(e).__name__}: {e})"
    hint = "Download or compress the file again (`gzip -t` tests it)."
    return DataError(SourceRef(str(path), "line"), line, None, reason, code="bad_gzip", hint=hint)


def _lines(path: Path, report: LoadReport, on_bad_row: str) -> Iterator[tuple[SourceRef, int, str]]:
    """Decoded non-blank lines with their 1-based numbers; undecodable lines are bad rows."""
    ref = SourceRef(str(path), "line")
    lineno = 0
    with _open(path) as f:
        raws = iter(f)
        while True:
            try:
                raw = next(raws)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
                raise _bad_gzip(path, lineno + 1, e) from e
            lineno += 1
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


_PRETTY_HINT = (
    "The file looks pretty-printed (one object over several lines); JSON Lines needs each object on "
    "one line: rewrite it (e.g. `jq -c '.[]' file.json` for an array, `jq -c . file` otherwise), or "
    "name it .json to read it as one JSON array."
)


def _read_json_lines(path: Path, report: LoadReport, on_bad_row: str) -> Iterator[Row]:
    for ref, lineno, line in _lines(path, report, on_bad_row):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            reason = f"not valid JSON ({e.msg} at column {e.colno}); each line must be one object"
            opens = line.strip() in ("{", "[") or (lineno == 1 and line.strip().startswith("[") and "{" not in line)
            err = DataError(ref, lineno, None, reason, code="malformed_json", hint=_PRETTY_HINT if opens else DEFAULT_HINT)
            handle_bad(report, err, on_bad_row)
            continue
        if not isinstance(value, dict):
            reason = f"expected a JSON object {{...}} on each line, got a JSON {json_type(value)}"
            err = DataError(ref, lineno, None, reason, code="not_an_object")
            handle_bad(report, err, on_bad_row)
            continue
        yield ref, lineno, value


def _first_line(path: Path) -> str:
    """The first non-blank line (its first MiB), decoded leniently: only its start is looked at."""
    with _open(path) as f:
        try:
            for raw in f:
                line = raw[: 1 << 20].removeprefix(codecs.BOM_UTF8).decode("utf-8", "replace")
                if line.strip():
                    return line
        except (OSError, EOFError, zlib.error) as e:
            raise _bad_gzip(path, 1, e) from e
    return ""


def _whole(path: Path) -> object:
    """The file parsed as one JSON value (for ``.json`` files)."""
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise _bad_gzip(path, 1, e) from e
    try:
        return json.loads(data.removeprefix(codecs.BOM_UTF8).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        lineno = getattr(e, "lineno", 1)
        reason = f"the file is neither one JSON value (array or object) nor JSON Lines ({e})"
        hint = "Fix the file, or write it as JSON Lines (one object per line)."
        raise DataError(SourceRef(str(path), "line"), lineno, None, reason, code="malformed_json", hint=hint) from e


def _read_json_file(path: Path, report: LoadReport, on_bad_row: str) -> Iterator[Row]:
    """A ``.json`` file: JSON Lines, or one JSON value over several lines (see the module docstring)."""
    first = _first_line(path).strip()
    if first.startswith("{"):
        try:
            json.loads(first)
        except json.JSONDecodeError:
            pass
        else:  # the first line is a whole object: JSON Lines
            yield from _read_json_lines(path, report, on_bad_row)
            return
    elif not first.startswith("["):
        yield from _read_json_lines(path, report, on_bad_row)  # blank or not JSON: the line reader says where
        return
    value = _whole(path)
    if isinstance(value, dict):
        wrapped = [k for k, v in value.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(value) == 1 and wrapped and wrapped[0] not in _ROW_KEYS:
            key = wrapped[0]
            reason = (f"the file is one JSON object whose only key {key!r} holds a list of {len(value[key])} objects, "
                      "not rows")
            hint = (f"If those are the rows, save the list itself as a JSON array or JSON Lines "
                    f"(e.g. `jq -c '.{key}[]' {path.name} > rows.jsonl`).")
            raise DataError(SourceRef(str(path), "line"), 1, key, reason, code="wrapped_rows", hint=hint)
        report.rows_read += 1
        yield SourceRef(str(path), "item"), 0, value
        return
    if not isinstance(value, list):
        reason = f"the file holds a JSON {json_type(value)}, not an array of row objects"
        raise DataError(SourceRef(str(path), "line"), 1, None, reason, code="not_an_object")
    ref = SourceRef(str(path), "item")
    for i, item in enumerate(value):
        report.rows_read += 1
        if not isinstance(item, dict):
            reason = f"expected each array item to be a JSON object, got a JSON {json_type(item)}"
            err = DataError(ref, i, None, reason, code="not_an_object")
            handle_bad(report, err, on_bad_row)
            continue
        yield ref, i, item
