"""Walk an OpenAssistant message tree into its ranked sibling groups.

An OpenAssistant export (Köpf et al. 2023, "OpenAssistant Conversations", arXiv:2304.07327) holds one
conversation tree per row: ``{"message_tree_id", "tree_state", "prompt": <root message>}``, where a
message is ``{"role": "prompter" | "assistant", "text", "replies": [<message>, ...], "rank",
"synthetic", ...}``. Roles alternate: the root and every reply to an assistant message are the
prompter's, every reply to a prompter message the assistant's. Annotators ranked the assistant
replies to one prompter message against each other (``rank`` 0 = best), so those siblings form one
ranked list, the K-wise shape a reward model trains on.

How a tree becomes sibling groups (:func:`sibling_groups`), depth first, replies in their order:

* A **group** is a prompter message with two or more assistant replies. Its prompt is the
  conversation from the root down to that message (``prompter`` -> ``user``), its candidates the
  replies that carry a rank; replies without one (``rank`` missing or null: added after the
  ranking, or never ranked) are left out and counted (``replies_unranked``).
* A group with fewer than two ranked replies compares nothing: it is counted
  (``groups_skipped/too_few_ranked``), not an error. A prompter message with one reply or none is
  no group at all.
* ``synthetic`` replies (written by a model, here ``chip20b``, in 5 wholly synthetic trees of the
  shared file) are kept: their ranks are human, as InstructGPT ranks model samples; they are
  counted (``replies_synthetic``). Ranks on prompter replies (OpenAssistant ranks those too) are
  not read: they compare user turns, not replies.
* Every message is checked, used or not: an object with a known ``role`` in the alternating
  order (``unknown_role``, ``wrong_role``), a non-blank string ``text`` (``missing_field``,
  ``wrong_type``, ``empty_content``), ``replies`` a list (or missing/null: a leaf). Fields are named
  by their path in the row, e.g. ``prompt.replies[2].replies[0].rank``. Other keys (``lang``,
  ``emojis``, ``deleted``, ...) are not read; they are listed as ``prompt.**.<key>``. Messages marked
  ``deleted`` are not left out: the shared file has none; filter a full export first.

The ranks themselves (whole numbers 0..K-1 among the K ranked replies, ties allowed) are checked by
the ``oasst_tree`` parser of :mod:`align.data.preference_formats`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from align.data.checks import BadRow, show
from align.data.errors import LoadReport

TREE_ROLES = {"prompter": "user", "assistant": "assistant"}
_READ = {"role", "text", "replies", "rank", "synthetic"}


@dataclass
class SiblingGroup:
    """The ranked assistant replies to one prompter message, with the conversation that led there.

    Attributes:
        prompt: The messages ``{"role", "content"}`` from the root to the prompter message (roles
            ``user``/``assistant``), ending with a user turn.
        prompt_fields: Each prompt message's text field, e.g. ``prompt.replies[1].replies[0].text``.
        replies: The ranked replies, as in the row (``text`` checked).
        reply_fields: Each ranked reply's field, e.g. ``prompt.replies[1].replies[0].replies[2]``.
        field: The group's list, e.g. ``prompt.replies[1].replies[0].replies``.
    """

    prompt: list[dict]
    prompt_fields: list[str]
    replies: list[Mapping]
    reply_fields: list[str]
    field: str


def sibling_groups(root: object, at: str, bad: BadRow, report: LoadReport) -> tuple[list[SiblingGroup], Counter]:
    """The ranked sibling groups of a tree, and its counts (see the module docstring).

    Args:
        root: The root message (the row's ``prompt``).
        at: The root's field, ``"prompt"``.
        bad: The row's :class:`~align.data.checks.BadRow`.
        report: The load's report (unread message keys are listed in ``dropped_keys``).

    Returns:
        ``(groups, counts)``: the groups with at least two ranked replies, depth first, and the
        counts ``groups_skipped/too_few_ranked``, ``replies_unranked``, ``replies_synthetic``.

    Raises:
        DataError: Through ``bad``, for the first malformed message.
    """
    groups: list[SiblingGroup] = []
    counts: Counter = Counter()
    # Depth first with an explicit stack (no recursion limit): (message, field, path above it).
    stack = [(root, at, "prompter", [], [])]
    while stack:
        message, where, role, path, path_fields = stack.pop()
        text = _message(message, where, role, bad, report)
        path, path_fields = [*path, {"role": TREE_ROLES[role], "content": text}], [*path_fields, f"{where}.text"]
        replies = _replies(message, where, bad)
        child = "assistant" if role == "prompter" else "prompter"
        if role == "prompter" and len(replies) >= 2:
            _group(replies, where, path, path_fields, groups, counts)
        for i in reversed(range(len(replies))):  # reversed onto the stack: popped in order
            stack.append((replies[i], f"{where}.replies[{i}]", child, path, path_fields))
    return groups, +counts  # unary plus drops zero counts


def _message(message: object, where: str, role: str, bad: BadRow, report: LoadReport) -> str:
    """The message's checked text (its role must be ``role``)."""
    if not isinstance(message, Mapping):
        raise bad(where, "wrong_type", f"each message must be an object with 'role' and 'text', got {show(message)}")
    for key in ("role", "text"):
        if key not in message:
            raise bad(f"{where}.{key}", "missing_field", f"missing field '{key}' (the message has keys {sorted(message)})")
    seen, text = message["role"], message["text"]
    if not isinstance(seen, str):
        raise bad(f"{where}.role", "wrong_type", f"role must be a string, got {show(seen)}")
    if seen not in TREE_ROLES:
        raise bad(f"{where}.role", "unknown_role", f"unknown role {seen!r} (expected one of {', '.join(TREE_ROLES)})")
    if seen != role:
        what = "the root" if "." not in where else f"a reply to {'a prompter' if role == 'assistant' else 'an assistant'}"
        raise bad(f"{where}.role", "wrong_role", f"role {seen!r}, but {what} message must be the {role}'s (roles alternate)")
    if not isinstance(text, str):
        raise bad(f"{where}.text", "wrong_type", f"text must be a string, got {show(text)}")
    if not text.strip():
        raise bad(f"{where}.text", "empty_content", f"text is empty or whitespace only ({text!r})")
    report.dropped_keys.update(f"prompt.**.{k}" for k in set(message) - _READ)
    return text


def _replies(message: Mapping, where: str, bad: BadRow) -> list:
    replies = message.get("replies")
    if replies is None:
        return []
    if not isinstance(replies, list):
        raise bad(f"{where}.replies", "wrong_type", f"must be a list of messages, got {show(replies)}")
    return replies


def _group(replies: list, where: str, path: list[dict], path_fields: list[str], groups: list[SiblingGroup],
           counts: Counter) -> None:
    """Add a prompter message's ranked replies as a group, or count why not."""
    ranked = [(r, f"{where}.replies[{i}]") for i, r in enumerate(replies) if isinstance(r, Mapping) and r.get("rank") is not None]
    if len(ranked) < 2:
        counts["groups_skipped/too_few_ranked"] += 1
        return
    counts.update({
        "replies_unranked": len(replies) - len(ranked),
        "replies_synthetic": sum(r.get("synthetic") is True for r, _ in ranked),
    })
    groups.append(SiblingGroup(path, path_fields, [r for r, _ in ranked], [at for _, at in ranked], f"{where}.replies"))
