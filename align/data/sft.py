"""Load supervised fine-tuning data in one of TRL's dataset formats, checking every row.

Formats (TRL's names; one per dataset, every row must match it):

* ``messages`` (conversational language modeling): ``{"messages": [{"role", "content"}, ...]}``
  with roles ``system``, ``user``, ``assistant``; every content a non-blank string; at least one
  user and one assistant message; the last message from the assistant.
* ``prompt_completion``: ``{"prompt": str, "completion": str}``, both non-blank, or both message
  lists (conversational): the prompt with at least one user message, the completion only
  assistant messages. All rows are plain or all conversational.
* ``text`` (language modeling): ``{"text": str}``, non-blank.

Two formats people have are read into ``messages`` rows (so the loss stays on the assistant's
tokens), with the same checks and codes:

* ``alpaca`` (Stanford Alpaca's ``alpaca_data.json``): ``{"instruction": str, "input": str,
  "output": str}``; ``input`` may be missing, null or empty. The user message is the
  instruction, followed by a blank line and the input when there is one; the assistant message
  is the output.
* ``sharegpt``: ``{"conversations": [{"from": ..., "value": str}, ...]}`` with ``from`` one of
  ``human``/``user`` (-> ``user``), ``gpt``/``assistant`` (-> ``assistant``) or ``system``; the
  conversation rules of ``messages`` apply, named in the input's own fields
  (``conversations[3].from``).
* ``hh`` (Anthropic HH-RLHF preference pairs): ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...",
  "rejected": ...}``; the ``chosen`` transcript is the conversation (SFT on the preferred replies,
  as InstructGPT's and Llama 2's SFT sets are human-preferred demonstrations), split into turns by
  :func:`align.data.hh.hh_to_messages`; ``rejected`` is not read.

``format="auto"`` picks the format from the first row's keys: ``messages`` if present, else
``conversations`` (sharegpt), else ``hh`` if ``chosen`` and ``rejected`` are HH transcripts, else ``prompt_completion`` if both ``prompt`` and ``completion``
are present, else ``alpaca`` if ``instruction`` and ``output`` are, else ``text``.

Output rows hold only the format's fields (and messages only ``role`` and ``content``), so TRL
sees clean columns; the keys left out are listed in ``LoadReport.dropped_keys``. With a
``tokenizer``, a content holding one of its control tokens (``<|im_end|>``, ...) is a bad row,
``control_token`` (see :func:`~align.data.checks.check_control_tokens`).

:func:`check_sft_row` is the row check itself, for other loaders of demonstrations (PPO-ptx).
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets

from align.data.checks import (
    TOO_LONG_HINT,
    BadRow,
    chat_length,
    check_control_tokens,
    check_load_args,
    check_messages,
    check_text,
    control_tokens,
    show,
    text_length,
)
from align.data.errors import DataError, LoadReport, json_type, nothing_left
from align.data.hh import HHFormatError, hh_to_messages, looks_like_hh
from align.data.holdout import Holdout, as_holdout, held_out
from align.data.rows import HELD_OUT, HeldOut, check_rows
from align.data.source import describe_source

FORMATS = ("messages", "prompt_completion", "text", "alpaca", "sharegpt", "hh")
# ShareGPT's speaker names and the roles they become.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


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
    config_prefix: str = "",
    holdout: Holdout | Mapping | None = None,
) -> tuple[datasets.Dataset, LoadReport]:
    """Load and check an SFT dataset; return it with a report of what was kept and skipped.

    Args:
        source: A local file (``.jsonl``, ``.json``, ``.csv``, ``.parquet``, ...), a folder, a
            builder name used with ``data_files``, or a hub dataset name (see
            :mod:`align.data.source`).
        split: Split to read.
        data_files: Files for a builder-name or hub source, as for ``datasets.load_dataset``.
        format: ``"auto"`` or one of :data:`FORMATS` (``alpaca`` and ``sharegpt`` rows become
            ``messages`` rows).
        on_bad_row: ``"error"`` raises a :class:`DataError` at the first bad row; ``"skip"``
            drops bad rows and counts them by reason in the report.
        tokenizer: Tokenizer to measure lengths with (its chat template for conversational
            rows; plain text gets EOS appended first, as TRL does), and whose control tokens
            no content may hold. Needed with ``max_length``.
        max_length: Longest sequence, in tokens, to accept as is.
        on_too_long: For a row over ``max_length``: ``"error"`` raises, ``"skip"`` drops it
            (counted as ``too_long``), ``"truncate"`` keeps it for the trainer to truncate
            (counted in ``report.truncated``).
        limit: Stop after this many kept rows (quick runs).
        load_kwargs: Extra arguments for ``datasets.load_dataset`` (e.g. ``{"name": ...}``).
        config_prefix: Where the caller's config holds these options (``"data."`` in a stage),
            so error hints name the override that works (``data.on_bad_row=skip``).
        holdout: Keep one part of a hash split of the source (:mod:`align.data.holdout`; the key
            is the first user message, the prompt of a prompt/completion row, or a text row's
            text): a :class:`~align.data.holdout.Holdout` or a mapping ``{"fraction", "part"}``.

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
    state = SFTRowState(format=None if format == "auto" else format, tokenizer=tokenizer)
    holdout = as_holdout(holdout)

    def check(raw: Mapping, bad: BadRow) -> dict | HeldOut:
        clean = check_sft_row(raw, bad, state, report)
        return HELD_OUT if held_out(holdout, _split_key(clean)) else clean

    def too_long(clean: dict, bad: BadRow) -> DataError | None:
        n = _token_length(tokenizer, clean)
        if n <= max_length:
            return None
        reason = f"{n} tokens, longer than max_length={max_length}"
        return bad(_length_field(clean), "too_long", reason, TOO_LONG_HINT)

    rows = check_rows(
        source,
        split,
        check,
        report,
        data_files=data_files,
        on_bad_row=on_bad_row,
        limit=limit,
        too_long=None if max_length is None else too_long,
        on_too_long=on_too_long,
        load_kwargs=load_kwargs,
        config_prefix=config_prefix,
    )
    report.format = state.format
    if not rows:
        raise ValueError(nothing_left(report))
    return datasets.Dataset.from_list(rows), report


class SFTRowState:
    """What the rows seen so far fixed (the format and, for prompt_completion, its kind), and the
    control tokens no content may hold.

    Args:
        format: One of :data:`FORMATS`, or ``None`` to detect it from the first row.
        tokenizer: The tokenizer whose control tokens are refused in contents; ``None``: no check.
    """

    def __init__(self, format: str | None, tokenizer=None) -> None:  # noqa: A002
        self.format = format
        self.origin = "as passed in format=" if format else None
        self.conversational: bool | None = None
        self.conversational_at = ""
        self.control = control_tokens(tokenizer)


def check_sft_row(raw: Mapping, bad: BadRow, state: SFTRowState, report: LoadReport) -> dict:
    """Return the clean row in ``state.format`` (``messages`` for alpaca and sharegpt), or raise
    ``bad(field, code, reason)``; detects the format from the first row when it is not fixed."""
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
        texts = [(f"messages[{i}].content", m["content"]) for i, m in enumerate(messages)]
        used = {"messages"}
    elif fmt == "sharegpt":
        messages = _sharegpt(get("conversations"), bad, report)
        _check_conversation(messages, bad, "conversations", "from")
        clean = {"messages": messages}
        texts = [(f"conversations[{i}].value", m["content"]) for i, m in enumerate(messages)]
        used = {"conversations"}
    elif fmt == "hh":
        messages = _hh(get("chosen"), bad)
        _check_conversation(messages, bad, "chosen")
        clean = {"messages": messages}
        texts = [("chosen", m["content"]) for m in messages]
        used = {"chosen", "rejected"}
    elif fmt == "alpaca":
        clean, texts = _alpaca(get("instruction"), raw.get("input"), get("output"), bad)
        used = {"instruction", "input", "output"}
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
        texts = [
            (f"{key}[{i}].content" if conversational else key, m["content"] if conversational else m)
            for key in ("prompt", "completion")
            for i, m in enumerate(clean[key] if conversational else [clean[key]])
        ]
        used = {"prompt", "completion"}
    else:
        clean = {"text": check_text(get("text"), "text", bad)}
        texts = [("text", clean["text"])]
        used = {"text"}
    check_control_tokens(texts, state.control, bad)
    report.dropped_keys.update(set(raw) - used)
    return clean


def _detect(raw: Mapping, bad: BadRow) -> str:
    if "messages" in raw:
        return "messages"
    if "conversations" in raw:
        return "sharegpt"
    if "chosen" in raw and "rejected" in raw and looks_like_hh(raw["chosen"], raw["rejected"]):
        return "hh"
    if "prompt" in raw and "completion" in raw:
        return "prompt_completion"
    if "instruction" in raw and "output" in raw:
        return "alpaca"
    if "text" in raw:
        return "text"
    raise bad(
        None,
        "unknown_format",
        f"cannot tell the dataset format from the row's keys {sorted(raw)}; expected "
        "'messages', 'conversations' (ShareGPT), HH-RLHF 'chosen'/'rejected' transcripts, 'prompt' and 'completion', 'instruction' and "
        "'output' (Alpaca), or 'text'",
        "Rename the columns, pass format= explicitly, or pass on_bad_row=skip to skip bad rows.",
    )


def _alpaca(instruction: object, input_: object, output: object, bad: BadRow) -> tuple[dict, list]:
    """An Alpaca row as a user and an assistant message, and its texts by field."""
    instruction = check_text(instruction, "instruction", bad)
    if input_ is not None and not isinstance(input_, str):
        raise bad("input", "wrong_type", f"must be a string (or missing, null or empty), got {show(input_)}")
    output = check_text(output, "output", bad)
    user = f"{instruction}\n\n{input_}" if input_ and input_.strip() else instruction
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    texts = [("instruction", instruction), ("input", input_ or ""), ("output", output)]
    return {"messages": messages}, texts


def _hh(value: object, bad: BadRow) -> list[dict]:
    """The ``chosen`` HH-RLHF transcript as messages; its last reply must not be blank."""
    if not isinstance(value, str):
        raise bad("chosen", "wrong_type", f"must be an HH-RLHF transcript string, got {show(value)}")
    try:
        messages = hh_to_messages(value, "chosen")
    except HHFormatError as exc:
        raise bad(exc.field, exc.code, exc.reason) from None
    if not messages[-1]["content"].strip():
        raise bad("chosen", "empty_content", f"the final Assistant turn (turn {len(messages)}) is empty")
    return messages


def _sharegpt(value: object, bad: BadRow, report: LoadReport) -> list[dict]:
    """ShareGPT turns ``{"from", "value"}`` as checked ``{"role", "content"}`` messages."""
    if not isinstance(value, list):
        raise bad("conversations", "wrong_type", f"must be a list of turns, got {show(value)}")
    if not value:
        raise bad("conversations", "empty_messages", "the conversation is empty")
    messages = []
    for i, turn in enumerate(value):
        at = f"conversations[{i}]"
        if not isinstance(turn, Mapping):
            raise bad(at, "wrong_type", f"each turn must be an object with 'from' and 'value', got {show(turn)}")
        for key in ("from", "value"):
            if key not in turn:
                raise bad(at, "missing_field", f"turn has no '{key}' (it has keys {sorted(turn)})")
        who, text = turn["from"], turn["value"]
        if not isinstance(who, str):
            raise bad(f"{at}.from", "wrong_type", f"from must be a string, got {show(who)}")
        if who not in SHAREGPT_ROLES:
            raise bad(
                f"{at}.from",
                "unknown_role",
                f"unknown speaker {who!r} (expected one of {', '.join(SHAREGPT_ROLES)})",
            )
        if not isinstance(text, str):
            raise bad(f"{at}.value", "wrong_type", f"value must be a string, got {show(text)}")
        if not text.strip():
            raise bad(f"{at}.value", "empty_content", f"value is empty or whitespace only ({text!r})")
        report.dropped_keys.update(f"conversations[].{k}" for k in set(turn) - {"from", "value"})
        messages.append({"role": SHAREGPT_ROLES[who], "content": text})
    return messages


def _check_conversation(messages: list[dict], bad: BadRow, field: str = "messages", role_key: str = "role") -> None:
    """At least one user and one assistant message, the last from the assistant (fields named
    as the input names them: ``messages[i].role`` or ShareGPT's ``conversations[i].from``)."""
    roles = [m["role"] for m in messages]
    if "user" not in roles:
        raise bad(field, "no_user_message", f"no user message (roles: {', '.join(roles)})")
    if "assistant" not in roles:
        raise bad(
            field, "no_assistant_message", f"no assistant message (roles: {', '.join(roles)})"
        )
    if roles[-1] != "assistant":
        raise bad(
            f"{field}[{len(roles) - 1}].{role_key}",
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


def _split_key(row: dict) -> str | list[dict]:
    """What a clean row's holdout key is read from: its messages, prompt, or text."""
    return row.get("messages") or row.get("prompt") or row["text"]


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


def is_conversational(dataset: datasets.Dataset) -> bool:
    """True for ``messages`` rows and conversational prompt/completion rows (what TRL's
    ``assistant_only_loss`` needs); False for ``text`` and plain prompt/completion rows."""
    if "messages" in dataset.column_names:
        return True
    return "prompt" in dataset.column_names and len(dataset) > 0 and isinstance(dataset[0]["prompt"], list)
