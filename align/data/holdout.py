"""A deterministic train/validation split of one file, decided by a hash of each row's prompt.

Some datasets ship as one file (the shared HH-RLHF slice, the OpenAssistant trees, the FineGrainedRLHF
dev set). A data source then names the same file twice with a ``holdout`` (in a stage's config,
``data.train.holdout`` and ``data.validation.holdout``)::

    train:      {source: x.jsonl, holdout: {fraction: 0.1, part: train}}
    validation: {source: x.jsonl, holdout: {fraction: 0.1, part: validation}}

The rule (:meth:`Holdout.keeps`): a row's key is the text of its prompt's first user turn, stripped
of surrounding whitespace (:func:`prompt_key`: a string prompt is its own key; for an OpenAssistant
tree it is the root message, so a whole tree goes to one side). The key's SHA-256 digest, its first
8 bytes read as a big-endian integer ``h``, puts the row in ``validation`` when
``h / 2**64 < fraction``, else in ``train``. So:

* the same prompt never lands on both sides, nor do conversations that open with the same turn (in
  the shared 1312-row HH file, 88 rows share their opening turn with at least one other row);
* the split depends on nothing but the key: not on row order, other rows, Python's hash seed or
  the machine; a row keeps its side when rows are added, removed or shuffled;
* the sides' sizes are about ``fraction`` of the rows, not exactly (each row is an independent draw).

Only good rows are split: a bad row has no trustworthy prompt, so it is raised or counted as skipped
by both loads. A good row of the other part is counted in ``LoadReport.held_out``
(``data/<split>/rows_held_out``), so each load's report adds up:
``rows_read == rows_kept + rows_skipped + held_out``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

HOLDOUT_PARTS = ("train", "validation")


@dataclass(frozen=True)
class Holdout:
    """Which part of a hash split of one source a load keeps.

    Attributes:
        fraction: Share of the keys that go to ``validation``, strictly between 0 and 1.
        part: ``"train"`` (keep the rest) or ``"validation"`` (keep that share).
    """

    fraction: float
    part: str

    def __post_init__(self) -> None:
        if self.part not in HOLDOUT_PARTS:
            raise ValueError(f"holdout.part={self.part!r} is not supported; pass one of {', '.join(HOLDOUT_PARTS)}.")
        f = self.fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise ValueError(f"holdout.fraction={f!r} must be a number strictly between 0 and 1 (the validation "
                             "share), e.g. holdout.fraction=0.1.")

    def keeps(self, key: str) -> bool:
        """True when the row with this key belongs to :attr:`part`."""
        return in_validation(key, self.fraction) == (self.part == "validation")


def in_validation(key: str, fraction: float) -> bool:
    """The split rule: the key's SHA-256, first 8 bytes big-endian over ``2**64``, below ``fraction``."""
    digest = hashlib.sha256(key.strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def prompt_key(prompt: str | list[dict]) -> str:
    """A prompt's split key: the string itself, or the content of the first user message (else the first)."""
    if isinstance(prompt, str):
        return prompt.strip()
    first = next((m for m in prompt if m["role"] == "user"), prompt[0])
    return first["content"].strip()


def as_holdout(value: Holdout | Mapping | None) -> Holdout | None:
    """A loader's ``holdout`` argument as a :class:`Holdout`: ``None``, a ``Holdout``, or a mapping
    ``{"fraction", "part"}`` (a stage's ``data.<split>.holdout``, as plain containers).

    Raises:
        ValueError: Missing or unknown keys, or a bad value; the message says how to fix it.
        TypeError: Neither ``None``, a ``Holdout`` nor a mapping.
    """
    if value is None or isinstance(value, Holdout):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"holdout={value!r} must be a mapping {{fraction: 0.1, part: train}} or null.")
    keys = set(value)
    if keys != {"fraction", "part"}:
        raise ValueError(f"holdout has keys {sorted(keys)}; it needs exactly fraction and part, e.g. "
                         "holdout={fraction: 0.1, part: validation}.")
    return Holdout(value["fraction"], value["part"])


def held_out(holdout: Holdout | None, prompt: str | list[dict]) -> bool:
    """True when a good row with this prompt belongs to the other part of ``holdout`` (``None``: never)."""
    return holdout is not None and not holdout.keeps(prompt_key(prompt))


def prompt_parts(value: Mapping | None):
    """For a prompt set split by ``data.holdout: {fraction}`` (ppo, eval): ``part(name)`` is the
    :class:`Holdout` that keeps that part (``None`` when the config has no holdout).

    Raises:
        ValueError: ``holdout`` has keys other than ``fraction`` (the part follows from the split read).
    """
    if value is None:
        return lambda part: None
    value = dict(value)
    if set(value) != {"fraction"}:
        raise ValueError(f"data.holdout has keys {sorted(value)}; a prompt set takes only its fraction, e.g. "
                         "data.holdout={fraction: 0.1}: train prompts come from the train part, validation and "
                         "test prompts from the held-out part.")
    return lambda part: Holdout(value["fraction"], part)
