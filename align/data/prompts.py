"""Prompt lists for generation and evaluation, and their lengths.

A prompt row is ``{"prompt": str, ...}``, or a conversation ending with the user turn to answer:
``{"prompt": [{"role", "content"}, ...]}`` or ``{"messages": [...]}``, or an Anthropic HH-RLHF pair
``{"chosen": "\\n\\nHuman: ...", "rejected": ...}`` whose turns before the final reply are the
conversation (:func:`align.data.hh.hh_to_messages`) (roles ``system``,
``user``, ``assistant``, contents non-blank, as in SFT). A one-message conversation is the plain
prompt string; a longer one is a :class:`ChatPrompt`, a string (its turns, one per line, for
logs and tables) that keeps the messages, which :func:`align.generation.chat_prompt_ids`
renders with the chat template.

:func:`load_prompts` reads the prompts through the strict row loop (a row without a non-empty
string prompt or a conversation is a bad row, code ``bad_prompt``; conversations get SFT's message
codes and ``last_not_user``; with a tokenizer, text holding one of its control tokens is
``control_token``); :func:`tokenize_prompts` turns them into chat prompt ids and applies the
prompt-length rule, counting too-long prompts in the same report.
"""

from __future__ import annotations

from collections.abc import Mapping

from align.data.checks import BadRow, check_control_tokens, check_messages, control_tokens
from align.data.errors import BAD_ROW_MODES, LoadReport, check_choice, check_positive
from align.data.hh import HHFormatError, hh_to_messages
from align.data.holdout import Holdout, as_holdout, held_out
from align.data.rows import HELD_OUT, HeldOut, check_rows
from align.data.source import describe_source

PROMPT_TOO_LONG_MODES = ("error", "skip")


class ChatPrompt(str):
    """A multi-turn prompt: the string is its turns (``role: content`` lines); ``messages`` holds them.

    Attributes:
        messages: The conversation, ending with the user turn to answer.
    """

    messages: list[dict]

    def __new__(cls, messages: list[dict]) -> ChatPrompt:
        self = super().__new__(cls, "\n".join(f"{m['role']}: {m['content']}" for m in messages))
        self.messages = [dict(m) for m in messages]
        return self

    def __reduce__(self):
        return (ChatPrompt, (self.messages,))


def load_prompts(
    source: str,
    split: str = "train",
    field: str = "prompt",
    limit: int | None = None,
    *,
    on_bad_row: str = "error",
    tokenizer=None,
    config_prefix: str = "",
    holdout: Holdout | Mapping | None = None,
) -> tuple[list[str], LoadReport]:
    """Read prompts from ``source`` (a JSONL file or anything ``iter_rows`` reads).

    Args:
        source: A file, folder, or dataset name (see :mod:`align.data.source`).
        split: Split to read.
        field: The field holding the prompt (a string or a message list); a row without it may
            hold the conversation in ``messages``.
        limit: Stop after this many kept prompts.
        on_bad_row: ``"error"`` raises at the first bad row; ``"skip"`` drops bad rows and counts
            them by code in the report.
        tokenizer: The tokenizer the prompts are for: text holding one of its control tokens is
            a bad row (``control_token``). ``None`` checks nothing.
        config_prefix: Where the caller's config holds ``on_bad_row`` (``"data."`` in a stage),
            so error hints name the override that works.
        holdout: Keep one part of a hash split of the source by prompt (:mod:`align.data.holdout`):
            a :class:`~align.data.holdout.Holdout` or a mapping ``{"fraction", "part"}``.

    Returns:
        ``(prompts, report)``: the prompts in source order (strings; a :class:`ChatPrompt` for
        a conversation of more than one message) and the :class:`LoadReport`.

    Raises:
        DataError: A row without ``field``, or with an empty or non-string value (the file, row
            and field are named), with ``on_bad_row="error"``.
        ValueError: Bad arguments, or no prompt was found.
    """
    check_choice("on_bad_row", on_bad_row, BAD_ROW_MODES)
    check_positive("limit", limit)
    report = LoadReport(describe_source(source, split))
    control = control_tokens(tokenizer)
    holdout = as_holdout(holdout)

    def check(raw: Mapping, bad: BadRow) -> str | HeldOut:
        key = next((k for k in (field, "messages", "chosen") if k in raw), field)
        value = raw.get(key)
        if key == "chosen" and isinstance(value, str):  # an HH-RLHF pair: its turns before the final reply
            value = _hh_prompt(value, bad)
        if isinstance(value, list):
            prompt = _conversation(value, key, bad, report)
            texts = [(f"{key}[{i}].content", m["content"]) for i, m in enumerate(value)]
        elif not isinstance(value, str) or not value.strip():
            seen = "missing" if key not in raw else f"{type(value).__name__} {value!r}"
            reason = f"expected a non-empty string or a list of messages, got {seen}"
            raise bad(key, "bad_prompt", reason, "Every prompt row needs a non-empty string, or pass on_bad_row=skip.")
        else:
            prompt, texts = value, [(key, value)]
        check_control_tokens(texts, control, bad)
        report.dropped_keys.update(k for k in raw if k != key)
        return HELD_OUT if held_out(holdout, value) else prompt

    prompts = check_rows(source, split, check, report, on_bad_row=on_bad_row, limit=limit, desc="Reading",
                         config_prefix=config_prefix)
    if not prompts:
        skipped = f" ({report.summary()})" if report.rows_skipped or report.held_out else ""
        raise ValueError(f"{source}: no prompts found.{skipped}")
    return prompts, report


def _hh_prompt(transcript: str, bad: BadRow) -> list[dict]:
    try:
        return hh_to_messages(transcript, "chosen")[:-1]
    except HHFormatError as exc:
        raise bad(exc.field, exc.code, exc.reason) from None


def _conversation(value: list, key: str, bad: BadRow, report: LoadReport) -> str:
    """A conversational prompt: checked messages ending with a user turn."""
    messages = check_messages(value, key, bad, report)
    if messages[-1]["role"] != "user":
        raise bad(
            f"{key}[{len(messages) - 1}].role",
            "last_not_user",
            f"the prompt ends with a message from the {messages[-1]['role']!r}; it must end with the user "
            "turn to answer",
        )
    return messages[0]["content"] if len(messages) == 1 else ChatPrompt(messages)


def tokenize_prompts(
    tokenizer,
    prompts: list[str],
    max_length: int,
    on_too_long: str = "error",
    source: str = "prompts",
    report: LoadReport | None = None,
) -> tuple[list[str], list[list[int]], LoadReport]:
    """Chat prompt ids (user turn + assistant header) of the prompts that fit ``max_length`` tokens.

    Args:
        tokenizer: The policy's tokenizer (its chat template).
        prompts: Prompts, e.g. from :func:`load_prompts` (strings or :class:`ChatPrompt`).
        max_length: Longest prompt, in tokens (PPO's ``max_prompt_length``).
        on_too_long: ``"error"`` raises at the first longer prompt; ``"skip"`` drops it and
            counts it as ``too_long``.
        source: Where the prompts come from, for messages.
        report: The report of the load that gave ``prompts`` (its ``rows_kept`` is
            ``len(prompts)``), counted into; a fresh one over ``prompts`` if ``None``.

    Returns:
        ``(kept, ids, report)``: the kept prompts in order, their token ids, and the report with
        too-long prompts moved from kept to ``skipped["too_long"]``.

    Raises:
        ValueError: A prompt longer than ``max_length`` with ``on_too_long="error"`` (it is named
            by its 1-based position in ``prompts``), or every prompt is longer.
    """
    # align.generation imports torch; align.data stays light until prompts are tokenized.
    from align.generation import chat_prompt_ids

    check_choice("on_too_long", on_too_long, PROMPT_TOO_LONG_MODES)
    check_positive("max_length", max_length)
    if report is None:
        report = LoadReport(str(source), rows_read=len(prompts), rows_kept=len(prompts))
    assert report.rows_kept == len(prompts), (report.rows_kept, len(prompts))
    kept, ids = [], []
    for row, q in enumerate(prompts, start=1):
        seq = chat_prompt_ids(tokenizer, q)
        if len(seq) > max_length:
            if on_too_long == "error":
                raise ValueError(f"{source}, row {row}, field 'prompt': {len(seq)} tokens > max_prompt_length="
                                 f"{max_length}; raise max_prompt_length or set on_too_long=skip (counted).")
            report.skipped["too_long"] += 1
            report.rows_kept -= 1
            continue
        kept.append(q)
        ids.append(seq)
    if not ids:
        raise ValueError(f"{source}: every prompt is longer than max_prompt_length={max_length}.")
    return kept, ids, report
