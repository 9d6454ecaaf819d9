"""Load supervised fine-tuning data in one of TRL's dataset formats, checking every row.

Formats (TRL's names; one per dataset, every row must match it):

* ``messages`` (conversational language modeling): ``{"messages": [{"role", "content"}, ...]}``
  with roles ``system``, ``user``, ``assistant``; every content a non-blank string; at least one
  user and one assistant message; the last message from the assistant.
* ``prompt_completion``: ``{"prompt": str, "completion": str}``, both non-blank, or both message
  lists (conversational): the prompt with at least one user message, the completion only
  assistant messages. All rows are plain or all conversational.
* ``text`` (language modeling): ``{"text": str}``, non-blank.

``format="auto"`` picks the format from the first row's keys: ``messages`` if present, else
``prompt_completion`` if both ``prompt`` and ``completion`` are present, else ``text``.

Output rows hold only the format's fields (and messages only ``role`` and ``content``), so TRL
sees clean columns; the keys left out are listed in ``LoadReport.dropped_keys``.
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets

from align.data.checks import (
    TOO_LONG_HINT,
    BadRow,
    chat_length,
    check_load_args,
    check_messages,
    check_text,
    show,
    text_length,
)
from align.data.errors import DataError, LoadReport, json_type, nothing_left
from align.data.rows import check_rows
from align.data.source import describe_source

FORMATS = ("messages", "prompt_completion", "text")


def load_sft_dataset(
    source: str,
    split: str = "train",
    *,
    data_files=None,
    format: str = "auto",  # noqa: A002 - TRL's own word for it
    on_bad_row: str = "error",
    tokenizer=None,
    max_length: int | None = None,
    on_too_long: str = "error",
    limit: int | None = None,
    load_kwargs: dict | None = None,
) -> tuple[datasets.Dataset, LoadReport]:
    """Load and check an SFT dataset; return it with a report of what was kept and skipped.

    Args:
        source: A local file (``.jsonl``, ``.json``, ``.csv``, ``.parquet``, ...), a folder, a
            builder name used with ``data_files``, or a hub dataset name (see
            :mod:`align.data.source`).
        split: Split to read.
        data_files: Files for a builder-name or hub source, as for ``datasets.load_dataset``.
        format: ``"auto"``, ``"messages"``, ``"prompt_completion"`` or ``"text"``.
        on_bad_row: ``"error"`` raises a :class:`DataError` at the first bad row; ``"skip"``
            drops bad rows and counts them by reason in the report.
        tokenizer: Tokenizer to measure lengths with (its chat template for conversational
            rows; plain text gets EOS appended first, as TRL does). Needed with ``max_length``.
        max_length: Longest sequence, in tokens, to accept as is.
        on_too_long: For a row over ``max_length``: ``"error"`` raises, ``"skip"`` drops it
            (counted as ``too_long``), ``"truncate"`` keeps it for the trainer to truncate
            (counted in ``report.truncated``).
        limit: Stop after this many kept rows (quick runs).
        load_kwargs: Extra arguments for ``datasets.load_dataset`` (e.g. ``{"name": ...}``).

    Returns:
        ``(dataset, report)``: a ``datasets.Dataset`` with only the format's columns, and the
        :class:`LoadReport`.

    Raises:
        DataError: A bad row with ``on_bad_row="error"``, or a too-long row with
            ``on_too_long="error"``; the message names the source, row, field and the fix.
        FileNotFoundError: The source file does not exist.
        ValueError: Bad arguments, or no row is left after loading.
    """
    check_load_args(format, FORMATS, on_bad_row, on_too_long, max_length, limit, tokenizer)
    report = LoadReport(describe_source(source, split, data_files))
    state = _State(format=None if format == "auto" else format)

    def too_long(clean: dict, bad: BadRow) -> DataError | None:
        n = _token_length(tokenizer, clean)
        if n <= max_length:
            return None
        reason = f"{n} tokens, longer than max_length={max_length}"
        return bad(_length_field(clean), "too_long", reason, TOO_LONG_HINT)

    rows = check_rows(
        source,
        split,
        lambda raw, bad: _check_row(raw, bad, state, report),
        report,
        data_files=data_files,
        on_bad_row=on_bad_row,
        limit=limit,
        too_long=None if max_length is None else too_long,
        on_too_long=on_too_long,
        load_kwargs=load_kwargs,
    )
    report.format = state.format
    if not rows:
        raise ValueError(nothing_left(report))
    return datasets.Dataset.from_list(rows), report


class _State:
    """What the rows seen so far fixed: the format and, for prompt_completion, its kind."""

    def __init__(self, format: str | None) -> None:  # noqa: A002
        self.format = format
        self.origin = "as passed in format=" if format else None
        self.conversational: bool | None = None
        self.conversational_at = ""


def _check_row(raw: Mapping, bad: BadRow, state: _State, report: LoadReport) -> dict:
    """Return the clean row in ``state.format``, or raise ``bad(field, code, reason)``."""
    assert isinstance(raw, Mapping), type(raw)  # iter_rows yields only objects
    if state.format is None:
        state.format = _detect(raw, bad)
        state.origin = f"detected from {bad.at()}"
    fmt = state.format

    def get(name: str):
        if name not in raw:
            raise bad(
                name,
                "missing_field",
                f"missing field '{name}' (the row has keys "
                f"{sorted(raw)}; the dataset format is '{fmt}', {state.origin})",
            )
        return raw[name]

    if fmt == "messages":
        messages = check_messages(get("messages"), "messages", bad, report)
        _check_conversation(messages, bad)
        clean = {"messages": messages}
    elif fmt == "prompt_completion":
        clean = _check_prompt_completion(get("prompt"), get("completion"), bad, report)
        conversational = isinstance(clean["prompt"], list)
        kind = {True: "conversational (message lists)", False: "plain text (strings)"}
        if state.conversational is None:
            state.conversational, state.conversational_at = conversational, bad.at()
        elif conversational != state.conversational:
            raise bad(
                "prompt",
                "mixed_formats",
                f"this row is {kind[conversational]} but the "
                f"first row ({state.conversational_at}) is {kind[state.conversational]}; "
                "all rows must match",
            )
    else:
        clean = {"text": check_text(get("text"), "text", bad)}
    report.dropped_keys.update(set(raw) - set(clean))
    return clean


def _detect(raw: Mapping, bad: BadRow) -> str:
    if "messages" in raw:
        return "messages"
    if "prompt" in raw and "completion" in raw:
        return "prompt_completion"
    if "text" in raw:
        return "text"
    raise bad(
        None,
        "unknown_format",
        f"cannot tell the dataset format from the row's keys {sorted(raw)}; expected "
        "'messages', or 'prompt' and 'completion', or 'text'",
        "Rename the columns, pass format= explicitly, or pass on_bad_row=skip to skip bad rows.",
    )


def _check_conversation(messages: list[dict], bad: BadRow) -> None:
    roles = [m["role"] for m in messages]
    if "user" not in roles:
        raise bad("messages", "no_user_message", f"no user message (roles: {', '.join(roles)})")
    if "assistant" not in roles:
        raise bad(
            "messages", "no_assistant_message", f"no assistant message (roles: {', '.join(roles)})"
        )
    if roles[-1] != "assistant":
        raise bad(
            f"messages[{len(roles) - 1}].role",
            "last_not_assistant",
            f"the last message is from the {roles[-1]!r}, but a training conversation "
            "must end with the assistant's reply",
        )


def _check_prompt_completion(
    prompt: object, completion: object, bad: BadRow, report: LoadReport
) -> dict:
    if isinstance(prompt, str) and isinstance(completion, str):
        return {
            "prompt": check_text(prompt, "prompt", bad),
            "completion": check_text(completion, "completion", bad),
        }
    if isinstance(prompt, list) and isinstance(completion, list):
        prompt = check_messages(prompt, "prompt", bad, report)
        completion = check_messages(completion, "completion", bad, report)
        if not any(m["role"] == "user" for m in prompt):
            raise bad("prompt", "no_user_message", "the prompt has no user message")
        for i, m in enumerate(completion):
            if m["role"] != "assistant":
                raise bad(
                    f"completion[{i}].role",
                    "completion_not_assistant",
                    f"completion messages must be from the assistant, got {m['role']!r}",
                )
        return {"prompt": prompt, "completion": completion}
    for field, value in (("prompt", prompt), ("completion", completion)):
        if not isinstance(value, (str, list)):
            raise bad(
                field, "wrong_type", f"must be a string or a list of messages, got {show(value)}"
            )
    raise bad(
        "completion",
        "wrong_type",
        f"the prompt is a JSON {json_type(prompt)} but the completion is a JSON "
        f"{json_type(completion)}; both must be strings or both lists of messages",
    )


def _length_field(row: dict) -> str:
    return "prompt+completion" if "prompt" in row else next(iter(row))


def _token_length(tokenizer, row: dict) -> int:
    """Tokens TRL's SFT would build from ``row`` before truncation."""
    if "messages" in row:
        return chat_length(tokenizer, row["messages"])
    if "prompt" in row:
        if isinstance(row["prompt"], list):
            return chat_length(tokenizer, row["prompt"] + row["completion"])
        return text_length(tokenizer, row["prompt"] + row["completion"])
    return text_length(tokenizer, row["text"])
