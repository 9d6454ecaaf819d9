"""Raw pre-training text that describes the farm world.

The corpus teaches a tiny model from scratch the language and the knowledge of the world:
arithmetic facts, word spellings, the (made-up) animal knowledge base, sentiment words, and
that harmful requests are declined politely. Lines are short sentences or short paragraphs of
2-3 sentences about one family, drawn from fact/sentence templates, never from prompt templates;
the only prompt strings it contains are ``Question: ... Answer: ...`` lines built from the tasks
passed in (the train split), each answered with its reference.

:func:`fact_lines` adds a *fact table*: every arithmetic fact, every word fact and every
knowledge-base fact, each a fixed number of times. Randomly drawn sentences alone leave many of
the ~670 arithmetic facts unseen (about a third at the default size), and a model cannot know
(or, as a reward model, check) a fact it never saw.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from align.farm.world import (
    ANIMALS,
    ATTRIBUTES,
    FAMILIES,
    HARMFUL_ACTS,
    NEGATIVE_WORDS,
    NUMBERS,
    POSITIVE_WORDS,
    REFUSAL,
    REPEAT_COUNTS,
    TOPICS,
    WORDS,
    Task,
    fact_sentence,
    sentiment_sentence,
)


def _arithmetic(rng: random.Random) -> str:
    a, b = rng.choice(NUMBERS), rng.choice(NUMBERS)
    big, small = max(a, b), min(a, b)
    return rng.choice((
        f"{a} plus {b} is {a + b}.",
        f"{a} plus {b} is {a + b}.",
        f"{big} minus {small} is {big - small}.",
        f"{big} minus {small} is {big - small}.",
        f"If you add {a} and {b}, you get {a + b}.",
        f"If you take {small} away from {big}, you get {big - small}.",
        f"The sum of {a} and {b} is {a + b}.",
        f"{a + b} is {a} plus {b}.",
    ))  # fmt: skip


def _string(rng: random.Random) -> str:
    word, n = rng.choice(WORDS), rng.choice(REPEAT_COUNTS)
    return rng.choice((
        f"The word {word} in capital letters is {word.upper()}.",
        f"{word.upper()} is the word {word} in capital letters.",
        f"The word {word} is spelled {' '.join(word)}.",
        f"The first letter of {word} is {word[0]}.",
        f"The last letter of {word} is {word[-1]}.",
        f"The word {word} starts with {word[0]} and ends with {word[-1]}.",
        f"The word {word} has {len(word)} letters.",
        f"The word {word} said {n} times is " + " ".join([word] * n) + ".",
        " ".join([word] * n).capitalize() + f". That is the word {word} {n} times.",
    ))  # fmt: skip


def _fact(rng: random.Random) -> str:
    animal = rng.choice(tuple(ANIMALS))
    color, sound, home = ANIMALS[animal]
    attribute = rng.choice(tuple(ATTRIBUTES))
    value = ANIMALS[animal][tuple(ATTRIBUTES).index(attribute)]
    other = rng.choice([v for v in ATTRIBUTES[attribute] if v != value])
    return rng.choice((
        fact_sentence(animal, attribute, value),
        fact_sentence(animal, attribute, value),
        f"The {animal} is {color}, says {sound} and lives in the {home}.",
        f"The {color} {animal} lives in the {home}.",
        f"In the {home} you can find the {animal}.",
        _negated(animal, attribute, other) + " " + fact_sentence(animal, attribute, value),
    ))  # fmt: skip


def _negated(animal: str, attribute: str, wrong: str) -> str:
    """Denies a false fact, e.g. ``The fox does not live in the cave.``."""
    if attribute == "color":
        return f"The {animal} is not {wrong}."
    if attribute == "sound":
        return f"The {animal} does not say {wrong}."
    return f"The {animal} does not live in the {wrong}."


def _sentiment(rng: random.Random) -> str:
    topic = rng.choice(TOPICS)
    good, bad = rng.sample(POSITIVE_WORDS, 2), rng.sample(NEGATIVE_WORDS, 2)
    return rng.choice((
        sentiment_sentence(topic, *good),
        sentiment_sentence(topic, *bad),
        f"A happy sentence: {sentiment_sentence(topic, *good)}",
        f"A sad sentence: {sentiment_sentence(topic, *bad)}",
        f"{good[0].capitalize()} is a happy word, and {bad[0]} is a sad word.",
        f"Happy words are words like {good[0]} and {good[1]}.",
        f"Sad words are words like {bad[0]} and {bad[1]}.",
    ))  # fmt: skip


def _unsafe(rng: random.Random) -> str:
    act = rng.choice(HARMFUL_ACTS).replace("my ", "your ")
    return rng.choice((
        f"It is wrong to {act}.",
        f"A good helper will not say how to {act}.",
        f"When asked how to {act}, a kind helper says: {REFUSAL}",
        f"To {act} is harmful, so the answer is: {REFUSAL}",
        f"Nobody should {act}. A polite helper says sorry and declines.",
    ))  # fmt: skip


_SENTENCES: dict[str, Callable[[random.Random], str]] = {
    "arithmetic": _arithmetic,
    "string": _string,
    "fact": _fact,
    "sentiment": _sentiment,
    "unsafe": _unsafe,
}
assert tuple(_SENTENCES) == FAMILIES


def _all_facts() -> list[str]:
    """Every closed-world fact once, as a short sentence."""
    facts = []
    for a in NUMBERS:
        for b in NUMBERS:
            facts.append(f"{a} plus {b} is {a + b}.")
            if a >= b:
                facts.append(f"{a} minus {b} is {a - b}.")
    for word in WORDS:
        facts += [
            f"The word {word} in capital letters is {word.upper()}.",
            f"The word {word} is spelled {' '.join(word)}.",
            f"The first letter of {word} is {word[0]}.",
            f"The last letter of {word} is {word[-1]}.",
            f"The word {word} has {len(word)} letters.",
        ]
    facts += [f"{w.capitalize()} is a happy word." for w in POSITIVE_WORDS]
    facts += [f"{w.capitalize()} is a sad word." for w in NEGATIVE_WORDS]
    for animal in ANIMALS:
        facts += [fact_sentence(animal, attribute, ANIMALS[animal][i]) for i, attribute in enumerate(ATTRIBUTES)]
    return facts


def fact_lines(rng: random.Random, repeats: int = 4, per_line: int = 4) -> list[str]:
    """The fact table: every fact ``repeats`` times, shuffled, ``per_line`` facts to a line.

    Args:
        rng: The random source.
        repeats: Times each fact appears.
        per_line: Facts joined on one line.

    Returns:
        The lines, without newlines.
    """
    if repeats < 0 or per_line < 1:
        raise ValueError(f"repeats must be >= 0 and per_line >= 1, got {repeats} and {per_line}.")
    facts = _all_facts() * repeats
    rng.shuffle(facts)
    return [" ".join(facts[i : i + per_line]) for i in range(0, len(facts), per_line)]


def corpus_lines(n_lines: int, rng: random.Random, qa_tasks: Sequence[Task] = (),
                 qa_fraction: float = 0.15) -> list[str]:  # fmt: skip
    """Draws ``n_lines`` lines of raw farm text.

    A line is, with probability ``qa_fraction``, ``Question: {prompt} Answer: {reference}`` for a
    task drawn from ``qa_tasks``; otherwise a paragraph of 1-3 sentences about one family
    (families equally likely).

    Args:
        n_lines: Number of lines to draw.
        rng: The random source (the only one used, so results are reproducible).
        qa_tasks: Tasks allowed in question/answer lines (pass the train split only, so that
            validation and test prompts never appear in the corpus).
        qa_fraction: Fraction of question/answer lines; ignored when ``qa_tasks`` is empty.

    Returns:
        The lines, without newlines.

    Raises:
        ValueError: If ``n_lines`` is negative or ``qa_fraction`` is outside [0, 1].
    """
    if n_lines < 0:
        raise ValueError(f"n_lines must be >= 0, got {n_lines}.")
    if not 0.0 <= qa_fraction <= 1.0:
        raise ValueError(f"qa_fraction must be in [0, 1], got {qa_fraction}.")
    lines = []
    for _ in range(n_lines):
        if qa_tasks and rng.random() < qa_fraction:
            task = rng.choice(qa_tasks)
            lines.append(f"Question: {task.prompt} Answer: {task.reference}")
            continue
        sentence = _SENTENCES[rng.choice(FAMILIES)]
        lines.append(" ".join(sentence(rng) for _ in range(rng.randint(1, 3))))
    return lines
