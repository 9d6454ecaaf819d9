"""The strict row loop every data loader runs: read each row, check it, keep it or count it.

:func:`check_rows` reads a source with :func:`~align.data.source.iter_rows` and hands each row
to the loader's ``check(raw, bad)``, which returns the row's kept item, raises
``bad(field, code, reason)`` for a bad row (raised or counted as ``on_bad_row`` says), returns
:class:`Skip` for a row dropped whatever ``on_bad_row`` says (counted under its code),
:data:`HELD_OUT` for a good row of the other part of a holdout split (counted in ``held_out``,
see :mod:`align.data.holdout`), or :class:`Several` for a row holding several items (an
OpenAssistant tree's sibling groups). An optional ``too_long(item, bad)`` hook returns the
``too_long`` error of an over-long item, which ``on_too_long`` raises, skips or keeps as
truncated. The loop counts every kept row, stops at ``limit`` kept items, shows a progress bar,
and leaves the :class:`~align.data.errors.LoadReport` with
``rows_read == rows_kept + rows_skipped + held_out``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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


@dataclass(frozen=True)
class HeldOut:
    """A check's verdict on a good row that belongs to the other part of a holdout split: counted
    in ``report.held_out``, neither kept nor skipped (use the one instance, :data:`HELD_OUT`)."""


HELD_OUT = HeldOut()


@dataclass(frozen=True)
class Several(Generic[T]):
    """A check's verdict on a row that holds several items (one OpenAssistant tree, several ranked
    sibling groups).

    Each item is measured (``too_long``) and kept on its own, and counts towards ``limit``. Kept
    items are counted in ``report.inner[unit + "s"]``, over-long ones skipped with
    ``on_too_long="skip"`` in ``report.inner[unit + "s_skipped/too_long"]``. The row is kept
    (``rows_kept``, and ``counts`` added to ``report.inner``) when at least one item is; otherwise
    it is a skipped row (``too_long``).

    Attributes:
        items: The row's items, in order (at least one).
        unit: What an item is, singular, for the counts: ``"group"``.
        counts: The row's own counts inside it (e.g. ``groups_skipped/too_few_ranked``), added to
            ``report.inner`` when the row is kept.
    """

    items: list[T]
    unit: str
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        assert self.items, "a Several verdict holds at least one item (else return a Skip)"


def check_rows(
    source: str,
    split: str,
    check: Callable[[Mapping, BadRow], T | Skip | HeldOut | Several[T]],
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
            :class:`~align.data.checks.BadRow`: the item to keep, a :class:`Skip`,
            :data:`HELD_OUT`, a :class:`Several`, or raises :class:`DataError` for a bad row.
        report: A fresh report of this load, counted into (``iter_rows`` counts rows read and
            blank lines; this loop counts kept, skipped and truncated rows).
        data_files: As for :func:`~align.data.source.iter_rows`.
        on_bad_row: ``"error"`` raises the first bad row; ``"skip"`` counts bad rows by code.
        limit: Stop after this many kept items (rows, or the items of :class:`Several` rows;
            ``report.limit_hit`` says so).
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
        The kept items, in source order, those of a :class:`Several` row one by one (possibly none:
        the caller says what an empty load means).

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
    # Nothing dropped uncounted.
    assert report.rows_read == report.rows_kept + report.rows_skipped + report.held_out, report
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
        if isinstance(item, HeldOut):
            report.held_out += 1
            continue
        if isinstance(item, Several):
            _keep_several(item, bad, report, kept, limit, too_long, on_too_long)
        elif too_long is None or (err := too_long(item, bad)) is None or handle_too_long(report, err, on_too_long):
            kept.append(item)
            report.rows_kept += 1
        if limit is not None and len(kept) >= limit:
            report.limit_hit = True
            break


def _keep_several(row: Several, bad: BadRow, report: LoadReport, kept: list, limit, too_long, on_too_long: str) -> None:
    """Keep the items of one :class:`Several` row into ``kept`` (up to ``limit``), counting them."""
    n, err = 0, None
    for item in row.items:
        if too_long is not None and (e := too_long(item, bad)) is not None:
            err = e
            if not handle_too_long(report, e, on_too_long, inner=f"{row.unit}s_skipped/too_long"):
                continue
        kept.append(item)
        n += 1
        report.inner[f"{row.unit}s"] += 1
        if limit is not None and len(kept) >= limit:
            break
    if n == 0:  # every item too long, and skipped
        count_skip(report, err)
        return
    report.rows_kept += 1
    report.inner.update(row.counts)
