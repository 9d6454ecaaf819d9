"""An imperfect demonstrator and the controlled error modes it makes.

The demonstrator stands in for the human writers of SFT data. Each demonstration is drawn in two
independent steps, at configurable rates:

1. *content*: a correct answer, or one content error (``wrong``, ``refuse``, ``comply``, ``curt``);
2. *style*: clean, padded with a filler sentence (``verbose``), or sloppy (``sloppy``).

The default writer is right about content about 78% of the time ("gold-correct": correctness
component 1), but its *usual* style is padded (verbose 60%). A policy that imitates it, greedy
SFT decoding in particular, inherits the padding, so a reward signal has something to improve
that the demonstrations show only as a minority behaviour (as in AlpacaFarm, where RLHF gains
come from preferences the SFT data satisfies only sometimes). ``perturb`` writes each mode alone,
so the reward-model stage can sample candidates of every mode:

=========== ============ ================================================================
mode        families     what it writes (gold effect)
=========== ============ ================================================================
``wrong``   safe         a wrong answer: off-by-1-3 sum, wrong letter/count/attribute,
                         flipped yes/no, opposite polarity (correctness 0, score <= 0.3)
``verbose`` all          the right answer plus a filler sentence (concision penalty)
``refuse``  safe         an over-refusal of a safe request (score 0)
``sloppy``  all          the right answer without final punctuation, lowercased start
                         where the answer starts with a lowercase-able word (format penalty)
``comply``  unsafe       compliance with the harmful request (score 0)
``curt``    unsafe       a refusal without an apology (correctness 0.5)
=========== ============ ================================================================

All modes are behavioural except ``wrong`` (verbosity, format, over-refusal, compliance): choices a policy can
learn to avoid from a reward signal, which gives RLHF headroom over SFT.
"""
# Content modes are mutually exclusive; style modes are drawn independently and applied on top.

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from align.farm.world import (
    ATTRIBUTES,
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    REFUSAL,
    WORDS,
    Task,
    fact_sentence,
    parse_task,
    sentiment_sentence,
)

MODES: tuple[str, ...] = ("wrong", "verbose", "refuse", "sloppy", "comply", "curt")
CONTENT_MODES: tuple[str, ...] = ("wrong", "refuse", "comply", "curt")
STYLE_MODES: tuple[str, ...] = ("verbose", "sloppy")
SAFE_MODES: tuple[str, ...] = ("wrong", "verbose", "refuse", "sloppy")
UNSAFE_MODES: tuple[str, ...] = ("comply", "curt", "verbose", "sloppy")

# Filler sentences: no digits, no lone letters but "I", no capitals word, no closed-set word,
# no refusal or apology; each adds at least 9 words. They share their opening words on purpose:
# padding is then one continuation with the demonstrator's full 60% behind it, so an imitating
# policy's most likely next token after an answer is the filler, not EOS (with three different
# openings, each got 20% and greedy decoding stopped instead).
FILLERS: tuple[str, ...] = (
    "I hope this helps and let me know if you need more.",
    "I hope this helps, and feel free to ask me again any time.",
    "I hope this helps you with what you wanted to know today.",
)
OVER_REFUSALS: tuple[str, ...] = (
    REFUSAL,
    "I am sorry, but I will not answer that.",
    "Sorry, I cannot do that for you.",
)
CURT_REFUSALS: tuple[str, ...] = ("I cannot help with that.", "I will not help with that.")
_HARM_STEPS: tuple[str, ...] = (
    "wait until nobody is around",
    "make a careful plan",
    "find the right tools",
    "go there at night",
    "act fast and stay calm",
)


@dataclass(frozen=True)
class DemoConfig:
    """Error rates of the demonstrator.

    Content rates apply to the families where the mode applies (``wrong``/``refuse`` to safe
    families, ``comply``/``curt`` to ``unsafe``); style rates apply to every response except a
    compliance. With the defaults: safe prompts are content-correct 1 - 0.14 - 0.05 = 81%,
    unsafe ones 1 - 0.30 - 0.06 = 64%, about 78% over the train mix; 60% of responses are padded.

    Attributes:
        wrong: Rate of wrong answers (safe families).
        refuse: Rate of over-refusals (safe families).
        comply: Rate of compliance with harmful requests (unsafe family).
        curt: Rate of refusals without apology (unsafe family).
        verbose: Rate of a filler sentence appended (style).
        sloppy: Rate of format errors (style).
    """

    wrong: float = 0.14
    refuse: float = 0.05
    comply: float = 0.30
    curt: float = 0.06
    verbose: float = 0.60
    sloppy: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            rate = getattr(self, f.name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"DemoConfig.{f.name} must be a rate in [0, 1], got {rate}.")
        for name, modes in (("safe content", ("wrong", "refuse")), ("unsafe content", ("comply", "curt")),
                            ("style", STYLE_MODES)):  # fmt: skip
            total = sum(getattr(self, m) for m in modes)
            if total > 1.0:
                raise ValueError(
                    f"DemoConfig rates for {name} ({', '.join(modes)}) sum to {total:.3f} "
                    "> 1; lower some of them."
                )


def applicable_modes(task: Task) -> tuple[str, ...]:
    """The error modes that apply to ``task``'s family."""
    return UNSAFE_MODES if task.family == "unsafe" else SAFE_MODES


def _as_task(task_or_prompt: Task | str) -> Task:
    return task_or_prompt if isinstance(task_or_prompt, Task) else parse_task(task_or_prompt)


def correct_response(task: Task, rng: random.Random) -> str:
    """A gold-correct response: the reference, or for sentiment a random pair of adjectives."""
    if task.family == "sentiment":
        lexicon = POSITIVE_WORDS if task.kind == "positive" else NEGATIVE_WORDS
        first, second = rng.sample(lexicon, 2)
        return sentiment_sentence(task.subject, first, second)
    return task.reference


def _other(values: tuple[str, ...], exclude: str, rng: random.Random) -> str:
    return rng.choice([v for v in values if v != exclude])


def _wrong(task: Task, rng: random.Random) -> str:
    """A wrong answer in the reference's own shape."""
    if task.family == "arithmetic":
        a, b = task.numbers
        delta = rng.choice((-3, -2, -1, 1, 2, 3))
        c = int(task.answer) + delta
        c = c if c >= 0 else int(task.answer) - delta
        return f"{a} {task.kind} {b} is {c}."
    if task.family == "string":
        word = task.subject
        if task.kind == "upper":
            return rng.choice((f"{_other(WORDS, word, rng).upper()}.", f"{word.capitalize()}."))
        if task.kind == "repeat":
            n = int(task.answer) + rng.choice((-1, 1))
            return " ".join([word] * n).capitalize() + "."
        if task.kind == "length":
            n = len(word) + rng.choice((-2, -1, 1, 2))
            return f"The word {word} has {n if n > 0 else len(word) + 1} letters."
        which = task.kind.split("_")[0]
        letter = _other(tuple("abcdefghjklmnopqrstuvwxyz"), task.answer, rng)
        return f"The {which} letter of {word} is {letter}."
    if task.family == "fact":
        attribute = task.kind.removeprefix("check_")
        other = _other(ATTRIBUTES[attribute], task.answer, rng)
        if not task.kind.startswith("check_"):
            return fact_sentence(task.subject, attribute, other)
        if task.expects_yes:  # say "No" and name some other value
            sentence = fact_sentence(task.subject, attribute, other)
            return f"No, {sentence[0].lower()}{sentence[1:]}"
        sentence = fact_sentence(task.subject, attribute, task.asked)  # say "Yes" to a false claim
        return f"Yes, {sentence[0].lower()}{sentence[1:]}"
    if task.family == "sentiment":
        lexicon = NEGATIVE_WORDS if task.kind == "positive" else POSITIVE_WORDS
        return sentiment_sentence(task.subject, *rng.sample(lexicon, 2))
    raise ValueError(f"mode 'wrong' does not apply to the {task.family!r} family.")


def perturb(task: Task | str, mode: str, rng: random.Random) -> str:
    """Writes a response to ``task`` that makes the error ``mode``.

    Args:
        task: A ``Task`` or a farm prompt.
        mode: One of ``applicable_modes(task)`` (see the module table).
        rng: The random source (the only one used, so results are reproducible).

    Returns:
        The response text.

    Raises:
        ValueError: If ``mode`` is unknown or does not apply to the task's family.
    """
    task = _as_task(task)
    if mode not in applicable_modes(task):
        raise ValueError(
            f"Mode {mode!r} does not apply to a {task.family!r} prompt; use one of "
            f"{applicable_modes(task)}."
        )
    if mode == "wrong":
        return _wrong(task, rng)
    if mode in STYLE_MODES:
        return apply_style(correct_response(task, rng), mode, rng)
    if mode == "refuse":
        return rng.choice(OVER_REFUSALS)
    if mode == "curt":
        return rng.choice(CURT_REFUSALS)
    if mode == "comply":
        act = task.subject.replace("my ", "your ")
        first, then = rng.sample(_HARM_STEPS, 2)
        return f"Sure, here is how to {act}: first you {first}, then you {then}."
    raise AssertionError(mode)  # every applicable mode is handled above


def _draw(modes: tuple[str, ...], rng: random.Random, cfg: DemoConfig) -> str | None:
    u, cumulative = rng.random(), 0.0
    for mode in modes:
        cumulative += getattr(cfg, mode)
        if u < cumulative:
            return mode
    return None


def sample_mode(task: Task, rng: random.Random, cfg: DemoConfig = DemoConfig()) -> str | None:
    """Draws the demonstrator's content mode for ``task`` (``None`` means a correct answer)."""
    return _draw(tuple(m for m in CONTENT_MODES if m in applicable_modes(task)), rng, cfg)


def sample_style(rng: random.Random, cfg: DemoConfig = DemoConfig()) -> str | None:
    """Draws the style mode (``None`` means clean)."""
    return _draw(STYLE_MODES, rng, cfg)


def apply_style(text: str, style: str | None, rng: random.Random) -> str:
    """Pads (``verbose``) or sloppifies (``sloppy``) a response; ``None`` leaves it as it is."""
    if style == "verbose":
        return f"{text} {rng.choice(FILLERS)}"
    if style == "sloppy":
        text = text.rstrip(".!?")
        first_word = text.split()[0]
        if not (len(first_word) >= 2 and first_word.isupper()):
            text = text[0].lower() + text[1:]
    return text


def demonstrate(task_or_prompt: Task | str, rng: random.Random, cfg: DemoConfig = DemoConfig()) -> str:
    """Writes one demonstration: content (correct, or an error at ``cfg``'s rates), then style.

    Args:
        task_or_prompt: A ``Task`` or a farm prompt.
        rng: The random source (the only one used, so results are reproducible).
        cfg: The per-mode error rates.

    Returns:
        The demonstration text.
    """
    task = _as_task(task_or_prompt)
    mode = sample_mode(task, rng, cfg)
    style = sample_style(rng, cfg)
    text = correct_response(task, rng) if mode is None else perturb(task, mode, rng)
    return text if mode == "comply" else apply_style(text, style, rng)
