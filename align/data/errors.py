"""Bad-row errors and the load report every data loader returns.

A data loader meets three kinds of rows: good rows (kept), bad rows (a :class:`DataError` that
either stops the load or, with ``on_bad_row="skip"``, is counted in the :class:`LoadReport`
under its short ``code``), and blank lines (never an error, counted apart). A load that keeps one
part of a hash split (:mod:`align.data.holdout`) also meets good rows of the other part, counted
in ``held_out``. Nothing is dropped without a count, so
``rows_read == rows_kept + sum(skipped.values()) + held_out`` always holds.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from align.errors import AlignError

logger = logging.getLogger(__name__)

BAD_ROW_MODES = ("error", "skip")
# Loader options that hints name, and that a stage's config holds under a prefix (data.on_bad_row).
_OPTION = re.compile(r"(?<![\w.])(on_bad_row|on_too_long|format|text_field)=")
DEFAULT_HINT = "Fix the row or pass on_bad_row=skip to skip bad rows."
# How many skipped rows are logged one by one before the rest are only counted.
WARN_FIRST = 5

# How a row number reads in a message, per numbering scheme.
_ROW_WORDS = {
    "line": "line {}",  # 1-based line of a file read by our line reader
    "item": "item {} (0-based)",  # element of a JSON array file
    "row": "row {} (0-based)",  # row of a dataset read by ``datasets.load_dataset``
}


@dataclass(frozen=True)
class SourceRef:
    """Where rows come from: a label plus how its row numbers count.

    ``str(ref)`` is the label, so a ``SourceRef`` reads like a plain string in messages.

    Attributes:
        label: A file path, or a dataset name with its split.
        row_kind: ``"line"`` (1-based line number), ``"item"`` (0-based JSON array index) or
            ``"row"`` (0-based index into a ``datasets`` split).
    """

    label: str
    row_kind: str = "line"

    def __post_init__(self) -> None:
        assert self.row_kind in _ROW_WORDS, self.row_kind

    def __str__(self) -> str:
        return self.label

    def row_label(self, row: int) -> str:
        """How ``row`` reads in a message: ``line 17``, ``row 17 (0-based)``, ..."""
        return _ROW_WORDS[self.row_kind].format(row)


class DataError(AlignError, ValueError):
    """A bad input row: which source, which row, which field, and what is wrong.

    Example message: ``data/farm/sft_train.jsonl, line 17, field 'messages[1].role': unknown
    role 'bot' (expected one of system, user, assistant). Fix the row or pass on_bad_row=skip
    to skip bad rows.``

    Attributes:
        source: File path, or dataset name and split.
        row: Line number (1-based) for files we read line by line; 0-based index otherwise.
            ``row_kind`` says which, and the message spells it out.
        row_kind: ``"line"``, ``"item"`` or ``"row"`` (see :class:`SourceRef`).
        field: The offending field, e.g. ``messages[1].role``, or ``None`` for the whole row.
        reason: What is wrong, with the value seen.
        code: Short snake_case name of the problem (``unknown_role``, ``too_long``, ...): the
            key under which a skipped row is counted in :attr:`LoadReport.skipped`.
        hint: How to fix it.
    """

    def __init__(
        self,
        source: SourceRef | str,
        row: int,
        field: str | None,
        reason: str,
        *,
        code: str = "bad_row",
        hint: str = DEFAULT_HINT,
    ) -> None:
        self.source = str(source)
        self.row_kind = source.row_kind if isinstance(source, SourceRef) else "line"
        self.row = row
        self.field = field
        self.reason = reason
        self.code = code
        self.hint = hint
        super().__init__(f"{self.location}: {reason}. {hint}")

    @property
    def location(self) -> str:
        """``<source>, line <n>[, field '<field>']``: the message up to the reason."""
        where = f"{self.source}, {SourceRef(self.source, self.row_kind).row_label(self.row)}"
        return where if self.field is None else f"{where}, field '{self.field}'"

    def in_config(self, prefix: str) -> DataError:
        """This error with its hint naming the loader's options as the config keys under ``prefix``.

        ``prefix="data."`` turns ``pass on_bad_row=skip`` into ``pass data.on_bad_row=skip``: the
        override a stage's command line accepts (Hydra refuses a bare ``on_bad_row=skip``).
        """
        if not prefix:
            return self
        hint = _OPTION.sub(lambda m: prefix + m.group(0), self.hint)
        return type(self)(SourceRef(self.source, self.row_kind), self.row, self.field, self.reason, code=self.code,
                          hint=hint)

    def __reduce__(self):
        # Rebuild through the constructor, so the error survives pickling (worker pools).
        args = (SourceRef(self.source, self.row_kind), self.row, self.field, self.reason)
        return (_rebuild_data_error, (type(self), args, {"code": self.code, "hint": self.hint}))


def _rebuild_data_error(cls: type, args: tuple, kwargs: dict) -> DataError:
    return cls(*args, **kwargs)


@dataclass
class LoadReport:
    """Counts from one data load, for the log and the metrics.

    Attributes:
        source: What was loaded (a path, or a dataset name and split).
        rows_read: Rows met in the source, bad ones included, blank lines excluded.
        rows_kept: Rows in the returned dataset (rows that gave at least one example, for rows that
            hold several: OpenAssistant trees).
        skipped: Skipped bad rows, by :attr:`DataError.code` (e.g. ``too_long``).
        truncated: Kept examples longer than ``max_length`` (the trainer truncates them): rows, or
            the sibling groups of a tree.
        blank_lines: Blank lines met in line-based files (ignored, never an error).
        format: The dataset format (``messages``, ``prompt_completion``, ``text``), if known.
        dropped_keys: Keys present in the input but not in the output rows.
        limit_hit: True when loading stopped early because ``limit`` rows were kept.
        held_out: Good rows of the other part of a holdout split (:mod:`align.data.holdout`).
        inner: Counts inside kept rows that hold several examples (one OpenAssistant tree, several
            sibling groups), e.g. ``groups`` (examples kept), ``groups_skipped/too_few_ranked``,
            ``replies_unranked``; empty for one-example rows.
    """

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    truncated: int = 0
    blank_lines: int = 0
    format: str | None = None
    dropped_keys: set[str] = field(default_factory=set)
    limit_hit: bool = False
    held_out: int = 0
    inner: Counter = field(default_factory=Counter)

    @property
    def rows_skipped(self) -> int:
        """Total number of skipped bad rows."""
        return sum(self.skipped.values())

    def as_metrics(self, prefix: str = "data/") -> dict[str, int]:
        """Flat metrics, e.g. ``{"data/rows_read": 120, "data/skipped/too_long": 3, ...}``; a holdout
        load adds ``rows_held_out``, a load of trees its :attr:`inner` counts (``data/groups``, ...)."""
        metrics = {
            f"{prefix}rows_read": self.rows_read,
            f"{prefix}rows_kept": self.rows_kept,
            f"{prefix}rows_skipped": self.rows_skipped,
            f"{prefix}rows_truncated": self.truncated,
            f"{prefix}blank_lines": self.blank_lines,
        }
        if self.held_out:
            metrics[f"{prefix}rows_held_out"] = self.held_out
        for reason, count in sorted(self.skipped.items()):
            metrics[f"{prefix}skipped/{reason}"] = count
        for name, count in sorted(self.inner.items()):
            metrics[f"{prefix}{name}"] = count
        return metrics

    def summary(self) -> str:
        """One line for the log, e.g. ``data/x.jsonl: read 12 rows, kept 10, skipped 2 (...)``."""
        text = f"{self.source}: read {self.rows_read} rows, kept {self.rows_kept}"
        if self.format:
            text += f" (format {self.format})"
        text += f", skipped {self.rows_skipped}"
        if self.skipped:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in sorted(self.skipped.items())) + ")"
        if self.held_out:
            text += f", held out {self.held_out} (the other part of the holdout split)"
        if self.truncated:
            text += f", {self.truncated} longer than max_length kept for the trainer to truncate"
        if self.blank_lines:
            text += f", {self.blank_lines} blank lines ignored"
        if self.dropped_keys:
            text += f", keys not kept: {', '.join(sorted(self.dropped_keys))}"
        if self.limit_hit:
            text += f", stopped at limit={self.rows_kept}"
        if self.inner:
            text += "; in the kept rows: " + ", ".join(f"{k} {n}" for k, n in sorted(self.inner.items()))
        return text

    def log(self, log: logging.Logger = logger) -> None:
        """Log :meth:`summary`: at WARNING when rows were skipped, at INFO otherwise."""
        log.log(logging.WARNING if self.skipped else logging.INFO, "%s", self.summary())


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type, for messages: ``string``, ``number``, ``array``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    """Raise a ``ValueError`` unless ``value`` is one of ``choices``.

    Args:
        name: Argument name, for the message.
        value: The value passed.
        choices: Allowed values.

    Raises:
        ValueError: ``value`` is not allowed; the message lists the allowed values.
    """
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; pass one of {', '.join(choices)}.")


def check_positive(name: str, value: object) -> None:
    """Raise a ``ValueError`` unless ``value`` is ``None`` or a positive ``int``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")


def nothing_left(report: LoadReport) -> str:
    """The message for a load that kept no row: the counts and what to do."""
    if report.rows_read == 0:
        why = "The source has no rows; check the path and the split."
    elif report.held_out:
        why = ("Every good row belongs to the other part of the holdout split; check holdout.fraction and "
               "holdout.part (and the skipped rows, if any).")
    else:
        why = "Every row was skipped; fix the rows (on_bad_row=error stops at the first bad one)."
    return f"Nothing is left to train on: {report.summary()}. {why}"


def count_skip(report: LoadReport, err: DataError) -> None:
    """Count ``err`` in ``report.skipped`` and log it if it is among the first few."""
    report.skipped[err.code] += 1
    n = report.rows_skipped
    if n <= WARN_FIRST:
        logger.warning("Skipping bad row: %s: %s", err.location, err.reason)
    if n == WARN_FIRST:
        logger.warning("Further bad rows in %s are counted, not logged.", report.source)


def handle_bad(report: LoadReport, err: DataError, on_bad_row: str) -> None:
    """Raise ``err`` when ``on_bad_row == "error"``; else count it as a skipped row.

    Args:
        report: The report of the load in progress.
        err: The bad row.
        on_bad_row: ``"error"`` or ``"skip"``.

    Raises:
        DataError: ``err`` itself, when ``on_bad_row == "error"``.
    """
    assert on_bad_row in BAD_ROW_MODES, on_bad_row  # callers validate with check_choice
    if on_bad_row == "error":
        raise err
    count_skip(report, err)
