"""Load ranked human preferences from any of seven formats into one type, checking every row.

Every row becomes a :class:`RankedExample`: a conversational prompt ending with a user turn,
K = 2..9 candidate replies, and their scores (higher is better, ties allowed). A pair is K = 2
with scores ``[1.0, 0.0]``. :mod:`align.data.pairs` turns ranked lists into pairs for TRL.

Formats (one per dataset; every row must match it): ``pairwise`` (TRL's preference format,
explicit or implicit prompt), ``ranked``, ``hh`` (Anthropic HH-RLHF transcripts),
``ultrafeedback``, ``oasst``, ``oasst_tree`` (whole OpenAssistant message trees) and
``finegrained`` (FineGrainedRLHF QA feedback); :mod:`align.data.preference_formats` describes
each and holds its row parser.

``format="auto"`` picks the format from the first row's keys: a ``prompt`` that is an object
(a message with ``text`` or ``replies``) -> oasst_tree, ``prediction 1`` and ``preference`` ->
finegrained, ``responses`` -> ranked, ``completions`` -> ultrafeedback, ``replies`` -> oasst,
``chosen``/``rejected`` strings starting with ``"\\n\\nHuman:"`` (or ``"Human:"``, the blank line
left out) -> hh, other ``chosen``/``rejected`` -> pairwise. A row whose keys fit no format is a bad row (``unknown_format``); with ``on_bad_row="skip"`` the next row decides.

An ``oasst_tree`` row gives one example per ranked sibling group: the report's rows are the trees
(``rows_read``, ``rows_kept``: trees with at least one group; a tree without one is skipped,
``no_ranked_group``; a malformed message anywhere makes the whole tree a bad row), and
``report.inner`` counts the groups: ``groups`` (kept examples), ``groups_skipped/too_few_ranked``,
``groups_skipped/too_long``, ``replies_unranked`` and ``replies_synthetic`` (see
:mod:`align.data.trees`). ``limit`` and the length rule apply to each group.

Holdout: with ``holdout`` (:mod:`align.data.holdout`), a good row whose prompt's first user turn
hashes to the other part is left out and counted in ``report.held_out``; a tree goes whole to one
part (its root is every group's first turn).

Bad rows (:class:`~align.data.errors.DataError`, counted by code with ``on_bad_row="skip"``),
besides the message checks of :mod:`align.data.checks` (``wrong_type``, ``missing_field``,
``unknown_role``, ``empty_content``, ...): ``empty_response``, ``identical_responses`` (a pair's
two replies are the same), ``duplicate_responses`` (two replies of a ranked list have the same
text, whatever their scores: the list is likely built wrong), ``too_few_responses``,
``too_many_responses`` (K outside 2..9), ``length_mismatch``, ``all_tied``, ``bad_score`` (not
finite), ``bad_rank``, ``bad_label`` (a FineGrainedRLHF label not 0, 1 or 2), ``wrong_role`` (tree
roles out of turn), ``conflicting_fields`` (both ranks and scores), ``last_not_user`` (the
prompt does not end with a user turn), ``prompt_mismatch``, ``mixed_formats`` (a pair's
chosen is a message list and its rejected a string, or the reverse), ``diverges_early``, the HH
transcript codes, and, with a ``tokenizer``, ``control_token`` (a prompt or reply holding one of
its control tokens, e.g. ``<|im_end|>``). Texts are compared after stripping surrounding whitespace.

Length: with a ``tokenizer`` and ``max_length``, every prompt + reply sequence is measured as a
reward model sees it (the chat template, or the texts concatenated plus EOS when the tokenizer
has none, as TRL's RewardTrainer does). The longest decides: ``on_too_long="error"`` raises,
``"skip"`` drops the whole example (``too_long``), ``"truncate"`` keeps it and counts it in
``report.truncated``. TRL's RewardTrainer silently drops over-long pairs; this is the count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from align.data.checks import (
    TOO_LONG_HINT,
    BadRow,
    chat_length,
    check_control_tokens,
    check_load_args,
    control_tokens,
    text_length,
)
from align.data.errors import DataError, LoadReport, nothing_left
from align.data.hh import looks_like_hh
from align.data.holdout import Holdout, as_holdout, held_out
from align.data.preference_formats import MAX_RESPONSES, MIN_RESPONSES, PARSERS, Groups, Parsed  # noqa: F401 - re-exported
from align.data.rows import HELD_OUT, HeldOut, Several, Skip, check_rows
from align.data.source import describe_source

FORMATS = ("pairwise", "ranked", "hh", "ultrafeedback", "oasst", "oasst_tree", "finegrained")


@dataclass(frozen=True)
class RankedExample:
    """One prompt with K >= 2 candidate replies and their scores.

    Attributes:
        prompt: Messages ``{"role", "content"}``, ending with a user turn (multi-turn kept).
        responses: The K candidate final assistant replies.
        scores: One per response; higher is better; equal scores are ties.
        origin: Where the row came from, e.g. ``data/prefs.jsonl, line 17`` (and, for a tree's
            group, the group: ``..., line 17, prompt.replies[0].replies``).
        margin: The row's ``margin`` (pairwise format, TRL's reward-loss margin), else ``None``.
        sources: Where each response comes from, e.g. ``policy`` or ``perturb:<mode>`` (the
            ``sources`` column of ``make prefs``), when the row has one string per response;
            else ``None``.
    """

    prompt: list[dict]
    responses: list[str]
    scores: list[float]
    origin: str
    margin: float | None = None
    sources: list[str] | None = None


def load_preferences(
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
) -> tuple[list[RankedExample], LoadReport]:
    """Load and check a preference dataset; return ranked examples and a load report.

    Args:
        source: A local file (``.jsonl``, ``.json``, ``.csv``, ``.parquet``, ...), a folder, a
            builder name used with ``data_files``, or a hub dataset name (see
            :mod:`align.data.source`).
        split: Split to read.
        data_files: Files for a builder-name or hub source, as for ``datasets.load_dataset``.
        format: ``"auto"`` or one of :data:`FORMATS`.
        on_bad_row: ``"error"`` raises a :class:`DataError` at the first bad row; ``"skip"``
            drops bad rows and counts them by code in the report.
        tokenizer: Tokenizer to measure prompt + reply lengths with, and whose control tokens no
            text may hold (``control_token``). Needed with ``max_length``.
        max_length: Longest prompt + reply sequence, in tokens, to accept as is.
        on_too_long: For an example with a sequence over ``max_length``: ``"error"`` raises,
            ``"skip"`` drops it (counted as ``too_long``), ``"truncate"`` keeps it for the
            trainer to truncate (counted in ``report.truncated``).
        limit: Stop after this many kept examples (quick runs).
        load_kwargs: Extra arguments for ``datasets.load_dataset`` (e.g. ``{"name": ...}``).
        config_prefix: Where the caller's config holds these options (``"data."`` in a stage),
            so error hints name the override that works (``data.on_bad_row=skip``).
        holdout: Keep one part of a hash split of the source by prompt
            (:mod:`align.data.holdout`): a :class:`~align.data.holdout.Holdout` or a mapping
            ``{"fraction": 0.1, "part": "train"}`` (a stage's ``data.train.holdout``); ``None``
            keeps every row.

    Returns:
        ``(examples, report)``: the :class:`RankedExample` list (a tree's groups in depth-first
        order) and the :class:`LoadReport`.

    Raises:
        DataError: A bad row with ``on_bad_row="error"``, or a too-long example with
            ``on_too_long="error"``; the message names the source, row, field and the fix.
        FileNotFoundError: The source file does not exist.
        ValueError: Bad arguments, or no example is left after loading.
    """
    check_load_args(format, FORMATS, on_bad_row, on_too_long, max_length, limit, tokenizer)
    report = LoadReport(describe_source(source, split, data_files))
    state = _State(None if format == "auto" else format, control_tokens(tokenizer), as_holdout(holdout))

    def too_long(item: tuple[RankedExample, list[str]], bad: BadRow) -> DataError | None:
        n, at = _longest(tokenizer, *item)
        if n <= max_length:
            return None
        reason = f"{n} tokens (prompt + reply), longer than max_length={max_length}"
        return bad(at, "too_long", reason, TOO_LONG_HINT)

    checked = check_rows(
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
        config_prefix=config_prefix,
    )
    examples = [example for example, _ in checked]
    report.format = state.format
    if not examples:
        raise ValueError(nothing_left(report))
    return examples, report


class _State:
    """What the rows seen so far fixed: the format, and where it came from."""

    def __init__(self, format: str | None, control=None, holdout: Holdout | None = None) -> None:  # noqa: A002
        self.format = format
        self.origin = "as passed in format=" if format else None
        self.control = control  # the tokenizer's control tokens (checks.control_tokens)
        self.holdout = holdout


Item = tuple[RankedExample, list[str]]  # an example with each response's field


def _check_row(raw: Mapping, bad: BadRow, state: _State, report: LoadReport) -> Item | Skip | HeldOut | Several[Item]:
    """The row as a :class:`RankedExample` with each response's field (several, for a tree); or
    raise ``bad(...)``."""
    assert isinstance(raw, Mapping), type(raw)  # iter_rows yields only objects
    if state.format is None:
        state.format = _detect(raw, bad)
        state.origin = f"detected from {bad.at()}"
    fmt, origin = state.format, state.origin

    def get(name: str):
        if name not in raw:
            raise bad(
                name,
                "missing_field",
                f"missing field '{name}' (the row has keys {sorted(raw)}; the dataset format is "
                f"'{fmt}', {origin})",
            )
        return raw[name]

    parsed = PARSERS[fmt](raw, get, bad, report)
    if isinstance(parsed, Groups):
        if not parsed.parsed:
            skipped = parsed.counts["groups_skipped/too_few_ranked"]
            reason = (f"the tree has no prompter message with two or more ranked assistant replies ({skipped} with "
                      "fewer than two ranked)")
            return Skip(bad("prompt", "no_ranked_group", reason))
        items = [_example(p, raw, bad, state, report) for p in parsed.parsed]
        if held_out(state.holdout, items[0][0].prompt):  # the root: the whole tree goes to one part
            return HELD_OUT
        return Several(items, "group", parsed.counts)
    item = _example(parsed, raw, bad, state, report)
    return HELD_OUT if held_out(state.holdout, item[0].prompt) else item


def _example(parsed: Parsed, raw: Mapping, bad: BadRow, state: _State, report: LoadReport) -> Item:
    """One parsed list as a checked :class:`RankedExample` with each response's field."""
    _check_common(parsed, bad)
    listed = isinstance(raw.get(parsed.prompt_field), list)
    prompt_fields = parsed.prompt_fields or [
        f"{parsed.prompt_field}[{i}].content" if listed else parsed.prompt_field for i in range(len(parsed.prompt))
    ]
    texts = [*zip(prompt_fields, (m["content"] for m in parsed.prompt)), *zip(parsed.fields, parsed.responses)]
    check_control_tokens(texts, state.control, bad)
    sources = _sources(raw.get("sources"), len(parsed.responses))
    report.dropped_keys.update(set(raw) - parsed.used - ({"sources"} if sources is not None else set()))
    report.dropped_keys.update(parsed.response_keys)
    example = RankedExample(
        prompt=parsed.prompt,
        responses=parsed.responses,
        scores=parsed.scores,
        origin=f"{bad.where}, {bad.at()}" + (f", {parsed.within}" if parsed.within else ""),
        margin=parsed.margin,
        sources=sources,
    )
    return example, parsed.fields


def _sources(value: object, k: int) -> list[str] | None:
    """The row's ``sources`` if it is a list of ``k`` strings (one per response), else ``None``.

    Optional metadata: a missing or malformed one is left out (listed in ``dropped_keys``), never
    a bad row, so it changes no load.
    """
    if isinstance(value, list) and len(value) == k and all(isinstance(s, str) for s in value):
        return list(value)
    return None


def _detect(raw: Mapping, bad: BadRow) -> str:
    root = raw.get("prompt")
    if isinstance(root, Mapping) and ("text" in root or "replies" in root):
        return "oasst_tree"
    if "prediction 1" in raw and "preference" in raw:
        return "finegrained"
    if "responses" in raw:
        return "ranked"
    if "completions" in raw:
        return "ultrafeedback"
    if "replies" in raw:
        return "oasst"
    if "chosen" in raw and "rejected" in raw:
        return "hh" if looks_like_hh(raw["chosen"], raw["rejected"]) else "pairwise"
    raise bad(
        None,
        "unknown_format",
        f"cannot tell the preference format from the row's keys {sorted(raw)}; expected "
        "'chosen' and 'rejected', 'responses', 'completions' or 'replies', a message tree in 'prompt' "
        "(OpenAssistant), or 'prediction 1'..'prediction 4' and 'preference' (FineGrainedRLHF)",
        "Rename the columns, pass format= explicitly, or pass on_bad_row=skip to skip bad rows.",
    )


def _check_common(p: Parsed, bad: BadRow) -> None:
    """Checks every format shares: the prompt's last turn, duplicates, ties."""
    if not p.prompt or p.prompt[-1]["role"] != "user":
        what = f"ends with a message from the {p.prompt[-1]['role']!r}" if p.prompt else "is empty"
        raise bad(
            p.prompt_field,
            "last_not_user",
            f"the prompt {what}; it must end with a user turn that the replies answer",
        )
    seen: dict[str, str] = {}
    for text, at in zip(p.responses, p.fields):
        key = text.strip()
        if key in seen:
            if p.pair:
                raise bad(at, "identical_responses", "chosen and rejected are the same text")
            raise bad(at, "duplicate_responses", f"same text as {seen[key]}")
        seen[key] = at
    if len(set(p.scores)) == 1:
        raise bad(
            p.score_field,
            "all_tied",
            f"all {len(p.scores)} responses have the same score ({p.scores[0]:g}); a ranking "
            "needs at least two different scores",
        )


# ----------------------------------------------------------------------------- length


def _longest(tokenizer, example: RankedExample, fields: list[str]) -> tuple[int, str]:
    """The longest prompt + reply sequence in tokens, and the field of that reply."""
    lengths = [_sequence_length(tokenizer, example.prompt, r) for r in example.responses]
    i = max(range(len(lengths)), key=lengths.__getitem__)
    return lengths[i], fields[i]


def _sequence_length(tokenizer, prompt: list[dict], response: str) -> int:
    if getattr(tokenizer, "chat_template", None) is not None:
        return chat_length(tokenizer, [*prompt, {"role": "assistant", "content": response}])
    # No chat template: the texts concatenated (plus EOS), as TRL does for plain-text rows.
    return text_length(tokenizer, "".join(m["content"] for m in prompt) + response)
