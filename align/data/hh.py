"""Parse Anthropic HH-RLHF transcripts into a conversational prompt and two final replies.

HH-RLHF (Bai et al. 2022, "Training a Helpful and Harmless Assistant with RLHF",
arXiv:2204.05862) stores each comparison as two whole transcripts::

    {"chosen":   "\\n\\nHuman: q1\\n\\nAssistant: a1\\n\\nHuman: q2\\n\\nAssistant: good",
     "rejected": "\\n\\nHuman: q1\\n\\nAssistant: a1\\n\\nHuman: q2\\n\\nAssistant: bad"}

How a transcript becomes messages (:func:`hh_to_messages`):

* Turns start at ``"\\n\\nHuman:"`` (role ``user``) and ``"\\n\\nAssistant:"`` (role
  ``assistant``); one space after the colon belongs to the marker. A transcript may also start
  with ``"Human:"`` directly (the leading blank line left out, as some copies of the data do),
  after any whitespace. Nothing but whitespace may come before the first marker.
* Only these markers split turns: a ``"Human:"`` written inside a turn stays in its content (the
  assistant sometimes writes ``"...\\n\\nAssistant: Human: ..."``; 7 of the 256 rows of the
  shared harmless-base sample do). Content is kept verbatim otherwise.
* The first turn must be the human's, the last the assistant's. Every turn but the last must
  be non-blank; the last (the reply being compared) is checked by the loader
  (``empty_response``).

How a pair becomes a prompt and two replies (:func:`split_hh_pair`): all turns but the last must
be identical in both transcripts; they are the prompt (multi-turn kept), and the two final
assistant turns are the responses. In the data the transcripts are identical up to the final
``Assistant:`` turn. A pair that differs earlier (``diverges_early``) is a bad row: TRL's
``examples/datasets/hh-rlhf-helpful-base.py`` cuts at the last ``"\\n\\nAssistant: "`` before the
first differing character and keeps the whole rest of each transcript, later ``Human:`` turns
included, as one response string; OpenRLHF scores the whole transcripts with an empty prompt.
Neither fits a prompt ending in a user turn plus one final reply each, and none of the 256
sample rows needs it.
"""

from __future__ import annotations

import re

HH_PREFIX = "\n\nHuman:"
_HUMAN = HH_PREFIX.lstrip()
_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


class HHFormatError(ValueError):
    """A transcript pair that cannot be read as HH-RLHF.

    Attributes:
        field: ``"chosen"`` or ``"rejected"``: the transcript at fault.
        code: Short snake_case name of the problem (the loader's skip-count key).
        reason: What is wrong, with the turn it is in.
    """

    def __init__(self, field: str, code: str, reason: str) -> None:
        self.field, self.code, self.reason = field, code, reason
        super().__init__(f"{field}: {reason}")


def looks_like_hh(chosen: object, rejected: object) -> bool:
    """True when both values are strings in the transcript form: ``"\\n\\nHuman: ..."``, or
    ``"Human: ..."`` with the leading blank line left out (leading whitespace is ignored)."""
    return all(isinstance(v, str) and v.lstrip().startswith(_HUMAN) for v in (chosen, rejected))


def hh_to_messages(text: str, field: str = "transcript") -> list[dict]:
    """Split one HH-RLHF transcript into ``{"role", "content"}`` messages.

    Args:
        text: The transcript, e.g. ``"\\n\\nHuman: hi\\n\\nAssistant: hello"``.
        field: The transcript's column, for errors.

    Returns:
        The messages, ``user`` first and ``assistant`` last; the last content may be empty.

    Raises:
        HHFormatError: Text before the first turn, no turn at all, a first turn that is not the
            human's, a last turn that is not the assistant's, or a blank turn before the last.
    """
    parts = _MARKER.split(text.lstrip())
    # parts = [before_first_marker, role, content, role, content, ...]
    if parts[0].strip() or len(parts) < 3:
        start = text.lstrip()[:30]
        raise HHFormatError(
            field,
            "not_hh_transcript",
            f"is not an HH-RLHF transcript: it must start with '\\n\\nHuman:' and hold "
            f"'\\n\\nHuman:'/'\\n\\nAssistant:' turns, got {start!r}...",
        )
    messages = [
        {"role": _ROLES[role], "content": content}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if messages[0]["role"] != "user":
        reason = "the first turn is the Assistant's, not the Human's"
        raise HHFormatError(field, "first_not_user", reason)
    if messages[-1]["role"] != "assistant":
        raise HHFormatError(
            field,
            "last_not_assistant",
            f"the last turn (turn {len(messages)}) is the Human's; the transcript must end with "
            "the Assistant reply being compared",
        )
    for i, m in enumerate(messages[:-1]):
        if not m["content"].strip():
            who = "Human" if m["role"] == "user" else "Assistant"
            raise HHFormatError(field, "empty_content", f"turn {i + 1} ({who}) is empty")
    return messages


def split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """Split an HH-RLHF pair into the shared prompt and the two final assistant replies.

    Args:
        chosen: The preferred transcript.
        rejected: The other transcript.

    Returns:
        ``(prompt, chosen_reply, rejected_reply)``: the prompt is every turn before the final
        assistant turn (it ends with a user turn when the transcript alternates); the replies
        are the final turns' text, possibly empty (the loader checks that).

    Raises:
        HHFormatError: Either transcript is malformed (see :func:`hh_to_messages`), or the two
            differ before their final assistant turns (``diverges_early``).
    """
    c = hh_to_messages(chosen, "chosen")
    r = hh_to_messages(rejected, "rejected")
    prompt, rest = c[:-1], r[:-1]
    if prompt != rest:
        turn = next((i for i, (a, b) in enumerate(zip(prompt, rest)) if a != b), None)
        where = (
            f"at turn {turn + 1}"
            if turn is not None
            else f"in their number of turns ({len(c)} vs {len(r)})"
        )
        raise HHFormatError(
            "rejected",
            "diverges_early",
            f"chosen and rejected differ {where}, before their final Assistant turns; the "
            "prompt must be every turn but the last, shared by both",
        )
    return prompt, c[-1]["content"], r[-1]["content"]
