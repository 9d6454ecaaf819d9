"""Row checks shared by the data loaders: bad-row errors, text and message checks, lengths.

A loader wraps each row in a :class:`BadRow` and raises ``bad(field, code, reason)`` for the first
problem it finds; :func:`check_text` and :func:`check_messages` are the checks every
conversational format shares (``wrong_type``, ``missing_field``, ``unknown_role``,
``empty_content``, ...); :func:`check_control_tokens` refuses text holding the tokenizer's
control tokens (``control_token``). :func:`text_length` and :func:`chat_length` measure a sequence in tokens
as TRL's trainers build it, for the ``max_length`` checks (:data:`TOO_LONG_MODES`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from align.data.errors import (
    BAD_ROW_MODES,
    DEFAULT_HINT,
    DataError,
    LoadReport,
    SourceRef,
    check_choice,
    check_positive,
    count_skip,
    json_type,
)

ROLES = ("system", "user", "assistant")
TOO_LONG_MODES = ("error", "skip", "truncate")
TOO_LONG_HINT = (
    "Raise max_length, or pass on_too_long=skip to skip such rows or on_too_long=truncate to "
    "keep them for the trainer to truncate."
)


class BadRow:
    """Builds the :class:`DataError` for one row: ``raise bad(field, code, reason)``.

    Attributes:
        where: The row's source.
        row: The row's number, counted as ``where.row_kind`` says.
    """

    def __init__(self, where: SourceRef, row: int) -> None:
        self.where, self.row = where, row

    def __call__(self, field: str | None, code: str, reason: str, hint: str = DEFAULT_HINT):
        """The :class:`DataError` for ``field`` of this row (``None``: the whole row)."""
        return DataError(self.where, self.row, field, reason, code=code, hint=hint)

    def at(self) -> str:
        """``line 3`` or ``row 3 (0-based)``: this row, for messages about other rows."""
        return self.where.row_label(self.row)


def show(value: object) -> str:
    """``a JSON number (42)``: the type and a short repr of a wrong value."""
    text = repr(value)
    return f"a JSON {json_type(value)} ({text if len(text) <= 40 else text[:37] + '...'})"


def check_text(value: object, field: str, bad: BadRow) -> str:
    """``value`` if it is a non-blank string; else raise ``wrong_type`` or ``empty_<field>``."""
    if not isinstance(value, str):
        raise bad(field, "wrong_type", f"must be a string, got {show(value)}")
    if not value.strip():
        raise bad(field, f"empty_{field}", f"is empty or whitespace only ({value!r})")
    return value


def check_messages(value: object, field: str, bad: BadRow, report: LoadReport) -> list[dict]:
    """Check a list of ``{"role", "content"}`` messages; return copies with only those keys.

    Every role must be one of :data:`ROLES` and every content a non-blank string. Other keys of
    a message are left out and listed in ``report.dropped_keys`` as ``<field>[].<key>``.
    """
    if not isinstance(value, list):
        raise bad(field, "wrong_type", f"must be a list of messages, got {show(value)}")
    if not value:
        raise bad(field, "empty_messages", "the message list is empty")
    messages = []
    for i, message in enumerate(value):
        at = f"{field}[{i}]"
        if not isinstance(message, Mapping):
            raise bad(
                at,
                "wrong_type",
                "each message must be an object with 'role' and "
                f"'content', got {show(message)}",
            )
        for key in ("role", "content"):
            if key not in message:
                raise bad(
                    at, "missing_field", f"message has no '{key}' (it has keys {sorted(message)})"
                )
        role, content = message["role"], message["content"]
        if not isinstance(role, str):
            raise bad(f"{at}.role", "wrong_type", f"role must be a string, got {show(role)}")
        if role not in ROLES:
            raise bad(
                f"{at}.role",
                "unknown_role",
                f"unknown role {role!r} (expected one of {', '.join(ROLES)})",
            )
        if not isinstance(content, str):
            raise bad(
                f"{at}.content", "wrong_type", f"content must be a string, got {show(content)}"
            )
        if not content.strip():
            raise bad(
                f"{at}.content",
                "empty_content",
                f"content is empty or whitespace only ({content!r})",
            )
        extra = set(message) - {"role", "content"}
        report.dropped_keys.update(f"{field}[].{k}" for k in extra)
        messages.append({"role": role, "content": content})
    return messages


def control_tokens(tokenizer) -> re.Pattern | None:
    """A pattern matching the tokenizer's control tokens in text, or ``None`` (no tokenizer, none).

    Control tokens are the tokenizer's special tokens (``all_special_tokens``), its added tokens
    marked special, and added tokens written as markup (``<...>``, e.g. Qwen's ``<tool_call>``):
    a tokenizer matches each of them in raw text as one token, so a user's ``<|im_end|>`` would
    become the real end-of-turn id. Added tokens that are ordinary words stay allowed.
    """
    if tokenizer is None:
        return None
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        text = getattr(added, "content", str(added))
        if getattr(added, "special", False) or (text.startswith("<") and text.endswith(">") and len(text) > 2):
            tokens.add(text)
    tokens = sorted((t for t in tokens if t and t.strip()), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None


CONTROL_TOKEN_HINT = (
    "User text must never become control tokens: remove or rewrite the markup in the data, or pass "
    "on_bad_row=skip to skip such rows."
)


def check_control_tokens(texts: Iterable[tuple[str, str]], control: re.Pattern | None, bad: BadRow) -> None:
    """Raise ``control_token`` for the first ``(field, text)`` holding one of the control tokens.

    Args:
        texts: ``(field, text)`` pairs: every text of the row that will be tokenised.
        control: From :func:`control_tokens`; ``None`` checks nothing.
        bad: The row's :class:`BadRow`.
    """
    if control is None:
        return
    for field, text in texts:
        found = control.search(text) if isinstance(text, str) else None
        if found:
            raise bad(
                field,
                "control_token",
                f"contains {found.group()!r} at character {found.start()}, a control token of the "
                "tokenizer: it would be tokenised as the real token, not as text",
                CONTROL_TOKEN_HINT,
            )


def text_length(tokenizer, text: str) -> int:
    """Tokens in plain ``text`` plus the EOS that TRL's trainers append to it."""
    eos = tokenizer.eos_token
    if eos and not text.endswith(eos):  # TRL's SFTTrainer appends EOS to plain text
        text += eos
    return len(tokenizer(text=text)["input_ids"])


def chat_length(tokenizer, messages: list[dict]) -> int:
    """Tokens in ``messages`` rendered by the tokenizer's chat template.

    Raises:
        ValueError: The tokenizer has no chat template.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"the tokenizer ({type(tokenizer).__name__}) has no chat_template, so conversational "
            "rows cannot be measured. Set tokenizer.chat_template, or use a chat model's "
            "tokenizer."
        )
    # transformers 5 returns a BatchEncoding by default; ask for the dict explicitly (as TRL does).
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    return len(out["input_ids"])


def check_load_args(
    format: str,  # noqa: A002 - TRL's own word for it
    formats: tuple[str, ...],
    on_bad_row: str,
    on_too_long: str,
    max_length: int | None,
    limit: int | None,
    tokenizer,
) -> None:
    """Validate the arguments every row-checking loader shares, before any row is read.

    Raises:
        ValueError: An unknown choice, a non-positive number, or ``max_length`` without a tokenizer.
    """
    check_choice("format", format, ("auto", *formats))
    check_choice("on_bad_row", on_bad_row, BAD_ROW_MODES)
    check_choice("on_too_long", on_too_long, TOO_LONG_MODES)
    check_positive("max_length", max_length)
    check_positive("limit", limit)
    if max_length is not None and tokenizer is None:
        raise ValueError(
            f"max_length={max_length} needs a tokenizer to count tokens; pass tokenizer=, or "
            "drop max_length to skip the length check."
        )


def handle_too_long(report: LoadReport, err: DataError, on_too_long: str, inner: str | None = None) -> bool:
    """Apply ``on_too_long`` to an over-long row: raise ``err`` (``error``), count it as a skip and
    return False (``skip``), or count it as truncated and return True to keep it (``truncate``).

    With ``inner`` (an example inside a row that holds several, e.g. ``"groups_skipped/too_long"``),
    a skip is counted in ``report.inner[inner]`` instead: the row itself may still be kept.
    """
    if on_too_long == "error":
        raise err
    if on_too_long == "skip":
        if inner is None:
            count_skip(report, err)
        else:
            report.inner[inner] += 1
        return False
    report.truncated += 1
    return True
