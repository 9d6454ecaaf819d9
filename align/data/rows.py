"""The strict row loop every data loader runs: read each row, check it, keep it or count it.

:func:`check_rows` reads a source with :func:`~align.data.source.iter_rows` and hands each row
to the loader's ``check(raw, bad)``, which returns the row's kept item, raises
``bad(field, code, reason)`` for a bad row (raised or counted as ``on_bad_row`` says), or
returns :class:`Skip` for a row dropped whatever ``on_bad_row`` says (counted under its code).
An optional ``too_long(item, bad)`` hook returns the ``too_long`` error of an over-long item,
which ``on_too_long`` raises, skips or keeps as truncated. The loop counts every kept row, stops
at ``limit``, shows a progress bar, and leaves the :class:`~align.data.errors.LoadReport` with
``rows_read == rows_kept + rows_skipped``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from tqdm.auto import tqdm

from align.data.checks import BadRow, handle_too_long
from align.data.errors import DataError, LoadReport, count_skip, handle_bad
from align.data.source import iter_rows

T = TypeVar("T")


@dataclass(frozen=True)
class Skip:
    """A check's verdict on a row that is dropped whatever ``on_bad_row`` says.

    The row is counted in ``report.skipped`` under ``err.code`` (and logged among the first few),
    never raised: it is well formed but gives the loader nothing to use (e.g. a demonstration
    with no assistant token left after truncation).
    """

    err: DataError


def check_rows(
    source: str,
    split: str,
    check: Callable[[Mapping, BadRow], T | Skip],
    report: LoadReport,
    *,
    data_files=None,
    on_bad_row: str = "error",
    limit: int | None = None,
    too_long: Callable[[T, BadRow], DataError | None] | None = None,
    on_too_long: str = "error",
    load_kwargs: dict | None = None,
    desc: str = "Checking",
    unit: str = " rows",
    config_prefix: str = "",
) -> list[T]:
    """Read ``source`` row by row through ``check``; return the kept items in source order.

    Args:
        source: As for :func:`~align.data.source.iter_rows`.
        split: Split to read.
        check: ``check(raw, bad)`` for one raw row (a mapping) and its
            :class:`~align.data.checks.BadRow`: the item to keep, a :class:`Skip`, or raises
            :class:`DataError` for a bad row.
        report: A fresh report of this load, counted into (``iter_rows`` counts rows read and
            blank lines; this loop counts kept, skipped and truncated rows).
        data_files: As for :func:`~align.data.source.iter_rows`.
        on_bad_row: ``"error"`` raises the first bad row; ``"skip"`` counts bad rows by code.
        limit: Stop after this many kept rows (``report.limit_hit`` says so).
        too_long: ``too_long(item, bad)``: the ``too_long`` error of an over-long item, or
            ``None``. Called on items ``check`` kept.
        on_too_long: What an over-long item gets: ``"error"``, ``"skip"`` or ``"truncate"``
            (kept, counted in ``report.truncated``); see
            :func:`~align.data.checks.handle_too_long`.
        load_kwargs: Extra arguments for ``datasets.load_dataset``.
        desc: The progress bar's verb, followed by the source.
        unit: The progress bar's unit.
        config_prefix: Where the caller's config holds the loader options (``"data."`` in a
            stage): a raised error's hint names ``data.on_bad_row=skip``, the override that works,
            instead of the argument ``on_bad_row=skip`` (see :meth:`DataError.in_config`).

    Returns:
        The kept items (possibly none: the caller says what an empty load means).

    Raises:
        DataError: A bad row with ``on_bad_row="error"``, or an over-long one with
            ``on_too_long="error"``.
    """
    kept: list[T] = []
    it = iter_rows(source, split, data_files, on_bad_row=on_bad_row, report=report, **(load_kwargs or {}))
    try:
        _loop(it, check, report, kept, on_bad_row, limit, too_long, on_too_long, desc, unit)
    except DataError as err:
        if not config_prefix:
            raise
        raise err.in_config(config_prefix) from None
    finally:
        it.close()
    assert report.rows_read == report.rows_kept + report.rows_skipped, report  # nothing dropped uncounted
    return kept


def _loop(it, check, report: LoadReport, kept: list, on_bad_row: str, limit, too_long, on_too_long: str, desc: str,
          unit: str) -> None:
    """Read every row through ``check`` into ``kept``, counting into ``report``."""
    for where, row, raw in tqdm(it, desc=f"{desc} {report.source}", unit=unit, disable=None):
        bad = BadRow(where, row)
        try:
            item = check(raw, bad)
        except DataError as err:
            handle_bad(report, err, on_bad_row)
            continue
        if isinstance(item, Skip):
            count_skip(report, item.err)
            continue
        if too_long is not None:
            err = too_long(item, bad)
            if err is not None and not handle_too_long(report, err, on_too_long):
                continue
        kept.append(item)
        report.rows_kept += 1
        if limit is not None and report.rows_kept >= limit:
            report.limit_hit = True
            break
