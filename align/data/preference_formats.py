"""Per-format row parsers for :mod:`align.data.preferences`: one function per format.

Formats (one per dataset; every row must match it):

* ``pairwise`` (TRL's preference format): ``{"prompt", "chosen", "rejected"}`` with an explicit
  prompt, or ``{"chosen", "rejected"}`` with an implicit one (message lists sharing every
  message but the last: the shared messages are the prompt). A prompt is a string (read as one
  user message) or a message list; ``chosen``/``rejected`` are strings, one assistant message,
  or whole conversations that repeat the prompt before their last message (as in
  ``HuggingFaceH4/ultrafeedback_binarized``); both of one kind (a message-list ``chosen`` with a
  string ``rejected`` is a bad row, ``mixed_formats``). An optional numeric ``margin`` is kept.
* ``ranked``: ``{"prompt", "responses": [...], "ranks": [...]}`` (rank 1 is the best, lower is
  better, ties allowed, every rank from 1 to K; a rank r becomes the score ``max(ranks) - r``) or ``"scores"`` instead
  of ``"ranks"`` (higher is better).
* ``hh``: Anthropic HH-RLHF transcripts ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...",
  "rejected": ...}``, split by :mod:`align.data.hh`.
* ``ultrafeedback``: ``{"prompt" or "instruction", "completions": [{"response",
  "overall_score"}, ...]}``. A row uses ``overall_score`` if any of its completions has one
  (then all must), else ``fine-grained_score``: the two are on different scales, so one row
  never mixes them.
* ``oasst``: OpenAssistant-style sibling replies ``{"prompt", "replies": [{"text", "rank"}]}``
  (rank 0 is the best, every rank from 0 to K - 1; a rank r becomes the score ``max(ranks) - r``), or ``"replies"`` as
  plain strings listed best first.
* ``oasst_tree``: a whole OpenAssistant message tree ``{"prompt": {"role": "prompter", "text",
  "replies": [...]}}`` (an export's row): one ranked list per group of two or more ranked sibling
  assistant replies, walked by :mod:`align.data.trees`; ranks as in ``oasst`` among the ranked
  replies of the group. A row gives several examples (a :class:`Groups`).
* ``finegrained``: FineGrainedRLHF's long-form QA feedback (Wu et al. 2023, arXiv:2306.01693)
  ``{"question", "prediction 1", ..., "prediction 4", "preference": [6 labels]}``, the labels for the
  pairs (1,2), (1,3), (1,4), (2,3), (2,4), (3,4) in that order: 1 = the first is better, 2 = the
  second, 0 = tie. One K = 4 list; each prediction's score is its wins plus half its ties over the
  three pairs it is in (:func:`finegrained_scores`), so equal scores form tie groups. The prompt is
  the question alone (see :func:`_finegrained`).

A parser, ``PARSERS[format](raw, get, bad, report)``, reads one row into a :class:`Parsed` (a
:class:`Groups` of them for ``oasst_tree``) or raises ``bad(field, code, reason)``: ``get(name)`` returns a required field (raising
``missing_field`` if absent), ``bad`` is the row's :class:`~align.data.checks.BadRow`, and
messages are checked by :func:`~align.data.checks.check_messages`, which lists their dropped
keys in ``report``. The checks common to all formats (last turn, duplicates, ties) and the
length checks are left to :mod:`align.data.preferences`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from align.data.checks import BadRow, check_messages, check_text, show
from align.data.errors import LoadReport
from align.data.hh import HHFormatError, looks_like_hh, split_hh_pair
from align.data.trees import sibling_groups

# InstructGPT ranks K = 4..9 replies per prompt (Ouyang et al. 2022, sec. 3.5); a ranked loss
# over K replies costs K forward passes per prompt, so longer lists are refused, not truncated.
MIN_RESPONSES, MAX_RESPONSES = 2, 9


@dataclass
class Parsed:
    """A row read by one format's parser, before the checks common to all formats."""

    prompt: list[dict]
    responses: list[str]
    scores: list[float]
    fields: list[str]  # each response's field, e.g. "responses[2]" or "chosen"
    score_field: str  # named when all scores tie
    prompt_field: str  # named when the prompt does not end with a user turn
    used: set[str]  # the row's keys the parser read
    margin: float | None = None
    pair: bool = False  # chosen/rejected: a duplicate is "identical_responses"
    response_keys: set[str] = field(default_factory=set)  # extra keys inside list items
    prompt_fields: list[str] | None = None  # each prompt message's field, when not prompt_field[i].content
    within: str | None = None  # where in the row the list is, when a row holds several (a tree's group)


@dataclass
class Groups:
    """A row that holds several ranked lists (an OpenAssistant tree): one :class:`Parsed` per list,
    and the row's counts of what it left out (``groups_skipped/too_few_ranked``, ...)."""

    parsed: list[Parsed]
    counts: Counter


# ----------------------------------------------------------------------------- field helpers


def _prompt(value: object, at: str, bad: BadRow, report: LoadReport) -> list[dict]:
    """A prompt string (one user message) or message list, as checked messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": check_text(value, at, bad)}]
    if isinstance(value, list):
        return check_messages(value, at, bad, report)
    raise bad(at, "wrong_type", f"must be a string or a list of messages, got {show(value)}")


def _response(value: object, at: str, bad: BadRow) -> str:
    if not isinstance(value, str):
        raise bad(at, "wrong_type", f"must be a string, got {show(value)}")
    if not value.strip():
        raise bad(at, "empty_response", f"the response is empty or whitespace only ({value!r})")
    return value


def _number(value: object, at: str, bad: BadRow) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(at, "wrong_type", f"must be a number, got {show(value)}")
    if not math.isfinite(value):
        raise bad(at, "bad_score", f"must be a finite number, got {value!r}")
    return float(value)


def _rank(value: object, at: str, bad: BadRow, best: int, k: int) -> int:
    """A rank among ``k`` replies: a whole number from ``best`` to ``best + k - 1`` (ties allowed)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(at, "wrong_type", f"a rank must be a whole number, got {show(value)}")
    if value < best:
        raise bad(at, "bad_rank", f"rank {value} is below {best}, the best rank")
    if value > best + k - 1:
        raise bad(
            at,
            "bad_rank",
            f"rank {value} is above {best + k - 1}, the worst rank among {k} replies (ranks run "
            f"from {best} to {best + k - 1}, ties allowed)",
        )
    return value


def _items(value: object, at: str, bad: BadRow) -> list:
    """A list of K = 2..9 candidates."""
    if not isinstance(value, list):
        raise bad(at, "wrong_type", f"must be a list, got {show(value)}")
    if len(value) < MIN_RESPONSES:
        reason = f"has {len(value)} responses; a ranking needs at least {MIN_RESPONSES}"
        raise bad(at, "too_few_responses", reason)
    if len(value) > MAX_RESPONSES:
        raise bad(
            at,
            "too_many_responses",
            f"has {len(value)} responses; at most {MAX_RESPONSES} are supported",
            f"Keep at most {MAX_RESPONSES} responses per row (e.g. the best and a spread of "
            "worse ones), or pass on_bad_row=skip to skip such rows.",
        )
    return value


def _scores_from_ranks(ranks: list[int]) -> list[float]:
    """Rank r (lower is better) -> score max(ranks) - r (higher is better; the worst gets 0)."""
    worst = max(ranks)
    return [float(worst - r) for r in ranks]


# ----------------------------------------------------------------------------- formats


def _pairwise(raw: Mapping, get, bad: BadRow, report: LoadReport) -> Parsed:
    chosen, rejected = get("chosen"), get("rejected")
    if "prompt" in raw:
        prompt = _prompt(raw["prompt"], "prompt", bad, report)
        if isinstance(chosen, str) != isinstance(rejected, str) and isinstance(chosen, (str, list)) \
                and isinstance(rejected, (str, list)):
            raise bad(
                "rejected",
                "mixed_formats",
                f"chosen is {show(chosen)} but rejected is {show(rejected)}; both must be strings "
                "or both lists of messages",
            )
        responses = [
            _pair_side(chosen, "chosen", prompt, bad, report),
            _pair_side(rejected, "rejected", prompt, bad, report),
        ]
        prompt_field = "prompt"
    elif isinstance(chosen, list) and isinstance(rejected, list):
        c = _reply_messages(chosen, "chosen", bad, report)
        r = _reply_messages(rejected, "rejected", bad, report)
        prompt, responses = c[:-1], [c[-1]["content"], r[-1]["content"]]
        if r[:-1] != prompt:
            raise bad(
                "rejected",
                "diverges_early",
                f"chosen and rejected differ at message {_first_difference(prompt, r[:-1])}, "
                "before their last messages; an implicit prompt is every message but the last, "
                "shared by both",
            )
        prompt_field = "chosen"
    elif looks_like_hh(chosen, rejected):
        raise bad(
            "prompt",
            "missing_field",
            "missing field 'prompt'",
            "These are HH-RLHF transcripts: pass format=hh, or on_bad_row=skip to skip bad rows.",
        )
    else:
        raise bad(
            "prompt",
            "missing_field",
            "missing field 'prompt': without one, chosen and rejected must both be message "
            f"lists sharing the prompt, got {show(chosen)} and {show(rejected)}",
        )
    margin = raw.get("margin")
    return Parsed(
        prompt=prompt,
        responses=responses,
        scores=[1.0, 0.0],
        fields=["chosen", "rejected"],
        score_field="chosen",
        prompt_field=prompt_field,
        used={"prompt", "chosen", "rejected", "margin"},
        margin=None if margin is None else _number(margin, "margin", bad),
        pair=True,
    )


def _pair_side(value: object, at: str, prompt: list[dict], bad: BadRow, report: LoadReport) -> str:
    """``chosen``/``rejected`` with an explicit prompt: a string or assistant message(s)."""
    if isinstance(value, str):
        return _response(value, at, bad)
    if not isinstance(value, list):
        raise bad(at, "wrong_type", f"must be a string or a list of messages, got {show(value)}")
    messages = _reply_messages(value, at, bad, report)
    if len(messages) > 1 and messages[:-1] != prompt:
        raise bad(
            at,
            "prompt_mismatch",
            f"holds {len(messages)} messages, but those before the last differ from the prompt "
            f"at message {_first_difference(prompt, messages[:-1])}; pass either the reply "
            "alone or the prompt followed by the reply",
        )
    return messages[-1]["content"]


def _reply_messages(value: object, at: str, bad: BadRow, report: LoadReport) -> list[dict]:
    """Checked messages ending with the assistant's reply (a blank reply: ``empty_response``)."""
    n = len(value) - 1 if isinstance(value, list) else -1
    last = value[n] if n >= 0 and isinstance(value[n], Mapping) else {}
    if isinstance(last.get("content"), str) and not last["content"].strip():
        raise bad(f"{at}[{n}].content", "empty_response", "the reply is empty or whitespace only")
    messages = check_messages(value, at, bad, report)
    if messages[n]["role"] != "assistant":
        raise bad(
            f"{at}[{n}].role",
            "last_not_assistant",
            f"the last message is from the {messages[n]['role']!r}; it must be the assistant's "
            "reply",
        )
    return messages


def _first_difference(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _hh(raw: Mapping, get, bad: BadRow, report: LoadReport) -> Parsed:
    chosen, rejected = get("chosen"), get("rejected")
    for at, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise bad(at, "wrong_type", f"must be a transcript string, got {show(value)}")
    try:
        prompt, c, r = split_hh_pair(chosen, rejected)
    except HHFormatError as e:
        raise bad(e.field, e.code, e.reason) from None
    return Parsed(
        prompt=prompt,
        responses=[_response(c, "chosen", bad), _response(r, "rejected", bad)],
        scores=[1.0, 0.0],
        fields=["chosen", "rejected"],
        score_field="chosen",
        prompt_field="chosen",
        used={"chosen", "rejected"},
        pair=True,
    )


def _ranked(raw: Mapping, get, bad: BadRow, report: LoadReport) -> Parsed:
    prompt = _prompt(get("prompt"), "prompt", bad, report)
    items = _items(get("responses"), "responses", bad)
    fields = [f"responses[{i}]" for i in range(len(items))]
    responses = [_response(v, at, bad) for v, at in zip(items, fields)]
    if "ranks" in raw and "scores" in raw:
        raise bad("scores", "conflicting_fields", "the row has both 'ranks' and 'scores'; keep one")
    if "ranks" not in raw and "scores" not in raw:
        raise bad("ranks", "missing_field", "missing field 'ranks' (or 'scores'): the ranking")
    key = "ranks" if "ranks" in raw else "scores"
    values = raw[key]
    if not isinstance(values, list):
        raise bad(key, "wrong_type", f"must be a list of numbers, got {show(values)}")
    if len(values) != len(responses):
        raise bad(
            key,
            "length_mismatch",
            f"has {len(values)} entries but responses has {len(responses)}; one per response",
        )
    if key == "ranks":
        scores = _scores_from_ranks([_rank(v, f"ranks[{i}]", bad, 1, len(values)) for i, v in enumerate(values)])
    else:
        scores = [_number(v, f"scores[{i}]", bad) for i, v in enumerate(values)]
    return Parsed(prompt, responses, scores, fields, key, "prompt", {"prompt", "responses", key})


def _ultrafeedback(raw: Mapping, get, bad: BadRow, report: LoadReport) -> Parsed:
    prompt_key = "prompt" if "prompt" in raw or "instruction" not in raw else "instruction"
    prompt = _prompt(get(prompt_key), prompt_key, bad, report)
    items = _items(get("completions"), "completions", bad)
    for i, c in enumerate(items):
        if not isinstance(c, Mapping):
            raise bad(f"completions[{i}]", "wrong_type", f"must be an object, got {show(c)}")
    # One scale per row: overall_score (1-10) if any completion has it, else fine-grained_score.
    has_overall = any(c.get("overall_score") is not None for c in items)
    score_key = "overall_score" if has_overall else "fine-grained_score"
    responses, scores, fields, extra = [], [], [], set()
    for i, c in enumerate(items):
        for key in ("response", score_key):
            if key not in c:
                raise bad(
                    f"completions[{i}].{key}",
                    "missing_field",
                    f"missing field '{key}' (the completion has keys {sorted(c)})",
                )
        fields.append(f"completions[{i}].response")
        responses.append(_response(c["response"], fields[-1], bad))
        scores.append(_number(c[score_key], f"completions[{i}].{score_key}", bad))
        extra.update(f"completions[].{k}" for k in set(c) - {"response", score_key})
    used = {prompt_key, "completions"}
    return Parsed(
        prompt, responses, scores, fields, "completions", prompt_key, used, response_keys=extra
    )


def _oasst(raw: Mapping, get, bad: BadRow, report: LoadReport) -> Parsed:
    prompt = _prompt(get("prompt"), "prompt", bad, report)
    items = _items(get("replies"), "replies", bad)
    if all(isinstance(v, str) for v in items):  # thin variant: texts listed best first
        fields = [f"replies[{i}]" for i in range(len(items))]
        responses = [_response(v, at, bad) for v, at in zip(items, fields)]
        scores = _scores_from_ranks(list(range(len(items))))
        used = {"prompt", "replies"}
        return Parsed(prompt, responses, scores, fields, "replies", "prompt", used)
    responses, ranks, fields, extra = [], [], [], set()
    for i, reply in enumerate(items):
        at = f"replies[{i}]"
        if not isinstance(reply, Mapping):
            raise bad(
                at,
                "wrong_type",
                "must be an object {'text', 'rank'} (or every reply a string), got "
                f"{show(reply)}",
            )
        for key in ("text", "rank"):
            if key not in reply:
                raise bad(
                    f"{at}.{key}",
                    "missing_field",
                    f"missing field '{key}' (the reply has keys {sorted(reply)})",
                )
        fields.append(f"{at}.text")
        responses.append(_response(reply["text"], fields[-1], bad))
        ranks.append(_rank(reply["rank"], f"{at}.rank", bad, 0, len(items)))
        extra.update(f"replies[].{k}" for k in set(reply) - {"text", "rank"})
    return Parsed(
        prompt,
        responses,
        _scores_from_ranks(ranks),
        fields,
        "replies",
        "prompt",
        {"prompt", "replies"},
        response_keys=extra,
    )


def _oasst_tree(raw: Mapping, get, bad: BadRow, report: LoadReport) -> Groups:
    groups, counts = sibling_groups(get("prompt"), "prompt", bad, report)
    parsed = []
    for g in groups:
        _items(g.replies, g.field, bad)  # K <= MAX_RESPONSES, else too_many_responses
        ranks = [_rank(r["rank"], f"{at}.rank", bad, 0, len(g.replies)) for r, at in zip(g.replies, g.reply_fields)]
        fields = [f"{at}.text" for at in g.reply_fields]
        responses = [r["text"] for r in g.replies]  # checked non-blank by the walk
        parsed.append(Parsed(
            prompt=[dict(m) for m in g.prompt],
            responses=responses,
            scores=_scores_from_ranks(ranks),
            fields=fields,
            score_field=g.field,
            prompt_field=g.prompt_fields[-1],
            used={"prompt"},
            prompt_fields=g.prompt_fields,
            within=g.field,
        ))
    return Groups(parsed, counts)


# FineGrainedRLHF's six pair labels, in order: (first, second) predictions, 0-based.
FINEGRAINED_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
FINEGRAINED_LABELS = (0, 1, 2)  # tie, the first is better, the second is better


def finegrained_scores(labels: list[int]) -> list[float]:
    """Scores of the four predictions from the six pair labels: wins + 0.5 * ties (a Copeland score).

    Each prediction is in three pairs, so its score is 0 to 3 in steps of 0.5; equal scores are
    ties. In the shared dev file no pair label is ever contradicted by these scores (a label ``1``
    with the first scored lower), but a cycle (1 > 2 > 3 > 1) scores its three predictions equal.

    Example: labels ``[1, 1, 1, 0, 2, 2]``: 1 beats 2, 3, 4 (3.0); 2 ties 3 (0.5), loses to 4 (0.5);
    3 ties 2, loses to 4 (0.5); 4 beats 2 and 3 (2.0): ``[3.0, 0.5, 0.5, 2.0]``, 2 and 3 tied.
    """
    scores = [0.0] * 4
    for (i, j), label in zip(FINEGRAINED_PAIRS, labels):
        if label == 0:
            scores[i] += 0.5
            scores[j] += 0.5
        else:
            scores[i if label == 1 else j] += 1.0
    return scores


def _finegrained(raw: Mapping, get, bad: BadRow, report: LoadReport) -> Parsed:
    # The prompt is the question alone: the retrieved passages (median 2,900 characters, about 700
    # tokens) would be repeated in each of the four sequences a K = 4 ranked loss scores, and leave
    # no room under the shipped max_length of 512; they are listed in dropped_keys.
    prompt = [{"role": "user", "content": check_text(get("question"), "question", bad)}]
    fields = [f"prediction {i}" for i in range(1, 5)]
    responses = [_response(get(at), at, bad) for at in fields]
    labels = get("preference")
    if not isinstance(labels, list):
        raise bad("preference", "wrong_type", f"must be a list of 6 labels, got {show(labels)}")
    if len(labels) != len(FINEGRAINED_PAIRS):
        raise bad("preference", "length_mismatch", f"has {len(labels)} labels; one per pair (1,2), (1,3), (1,4), "
                  "(2,3), (2,4), (3,4): 6")
    checked = []
    for n, label in enumerate(labels):
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, int):
            raise bad(f"preference[{n}]", "wrong_type", f"a label must be a whole number, got {show(label)}")
        if label not in FINEGRAINED_LABELS:
            raise bad(f"preference[{n}]", "bad_label", f"label {label} is not one of 0 (tie), 1 (the first is "
                      "better), 2 (the second is better)")
        checked.append(label)
    used = {"question", *fields, "preference"}
    return Parsed(prompt, responses, finegrained_scores(checked), fields, "preference", "question", used)


PARSERS = {
    "pairwise": _pairwise,
    "ranked": _ranked,
    "hh": _hh,
    "ultrafeedback": _ultrafeedback,
    "oasst": _oasst,
    "oasst_tree": _oasst_tree,
    "finegrained": _finegrained,
}
