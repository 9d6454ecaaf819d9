"""Writes the farm data files: prompt splits, SFT demonstrations, a pre-training corpus, a manifest.

Usage::

    python -m align.farm.build --out data --seed 0

Everything is a pure function of the arguments: running it twice gives byte-identical files.
Prompts are unique and the train/validation/test splits are disjoint by string. Each family gets
a share of every split by ``weights``; a family whose pool of distinct prompts is too small
contributes all it has and the rest is shared among the others (largest-remainder rounding).
The test and validation prompts are drawn first, so they do not depend on ``n_train``.
See ``data/README.md`` for every file and field.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from align.farm.annotators import agreement, annotate
from align.farm.candidates import ranked_candidates
from align.farm.corpus import corpus_lines, fact_lines
from align.farm.demonstrator import DemoConfig, demonstrate
from align.farm.gold import gold_score, is_gold_correct
from align.farm.world import FAMILIES, Task, enumerate_tasks

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_WEIGHTS: dict[str, float] = {
    "arithmetic": 0.2125, "string": 0.2125, "fact": 0.2125, "sentiment": 0.2125, "unsafe": 0.15,
}  # fmt: skip


def allocate(n: int, weights: Mapping[str, float], caps: Mapping[str, int]) -> dict[str, int]:
    """Splits ``n`` items among keys in proportion to ``weights``, never exceeding ``caps``.

    Largest-remainder rounding (ties go to the earlier key); a key that would exceed its cap is
    fixed at the cap and the rest is re-shared among the others.

    Example: ``allocate(10, {"x": 1, "y": 1, "z": 2}, {"x": 9, "y": 1, "z": 9})``: shares
    2.5/2.5/5, ``y`` is capped at 1, the remaining 9 go 1:2 to ``x``/``z`` -> 3 and 6.

    Args:
        n: Number of items.
        weights: Non-negative weight per key.
        caps: Maximum count per key.

    Returns:
        Count per key (same key order as ``weights``), summing to ``n``.

    Raises:
        ValueError: If the caps cannot hold ``n`` items or a weight is negative.
    """
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"Family weights must be >= 0 with a positive sum, got {dict(weights)}.")
    usable = {k: caps[k] for k, w in weights.items() if w > 0}
    if n > sum(usable.values()):
        raise ValueError(
            f"Cannot draw {n} unique prompts: the families with positive weight hold only "
            f"{sum(usable.values())} ({usable}); lower the split sizes."
        )
    fixed: dict[str, int] = {}
    while True:
        free = [k for k in usable if k not in fixed]
        left = n - sum(fixed.values())
        total = sum(weights[k] for k in free)
        shares = {k: left * weights[k] / total for k in free}
        counts = {k: int(shares[k]) for k in free}
        by_remainder = sorted(free, key=lambda k: (-(shares[k] - counts[k]), free.index(k)))
        for k in by_remainder[: left - sum(counts.values())]:
            counts[k] += 1
        over = [k for k in free if counts[k] > usable[k]]
        if not over:
            fixed.update(counts)
            return {k: fixed.get(k, 0) for k in weights}
        fixed.update({k: usable[k] for k in over})


def split_tasks(seed: int = 0, n_train: int = 4000, n_validation: int = 200, n_test: int = 200,
                weights: Mapping[str, float] | None = None) -> dict[str, list[Task]]:  # fmt: skip
    """Draws disjoint train/validation/test task lists, balanced across families.

    Args:
        seed: Seed of the draw.
        n_train: Number of train prompts.
        n_validation: Number of validation prompts.
        n_test: Number of test prompts.
        weights: Share of each family (default ``DEFAULT_WEIGHTS``).

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``, each shuffled.

    Raises:
        ValueError: If a size is negative, a family is unknown, or the pool is too small.
    """
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    if set(weights) - set(FAMILIES):
        raise ValueError(f"Unknown families in weights: {sorted(set(weights) - set(FAMILIES))}; "
                         f"use {FAMILIES}.")  # fmt: skip
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    if any(v < 0 for v in sizes.values()):
        raise ValueError(f"Split sizes must be >= 0, got {sizes}.")
    pools = {}
    for family in weights:
        pool = enumerate_tasks(family)
        random.Random(f"farm/{seed}/pool/{family}").shuffle(pool)
        pools[family] = pool
    left = {f: len(p) for f, p in pools.items()}
    taken = dict.fromkeys(weights, 0)
    out = {}
    for split in ("test", "validation", "train"):
        counts = allocate(sizes[split], weights, left)
        rows = []
        for family, k in counts.items():
            rows += pools[family][taken[family] : taken[family] + k]
            taken[family] += k
            left[family] -= k
        random.Random(f"farm/{seed}/order/{split}").shuffle(rows)
        out[split] = rows
    return {s: out[s] for s in SPLITS}


def _write_lines(path: Path, lines: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)


def _counts(tasks: list[Task]) -> dict[str, int]:
    """Number of tasks, in total and per family (in ``FAMILIES`` order)."""
    counter = Counter(t.family for t in tasks)
    return {"total": len(tasks), **{f: counter[f] for f in FAMILIES if counter[f]}}


def _rates(rows: list[dict[str, Any]], key: str = "correct") -> dict[str, float]:
    """Fraction of rows with ``row[key]`` true (gold-correct or perfect), overall and per family."""
    rates = {"overall": round(sum(bool(r[key]) for r in rows) / max(1, len(rows)), 4)}
    for family in FAMILIES:
        fam = [r for r in rows if r["family"] == family]
        if fam:
            rates[family] = round(sum(bool(r[key]) for r in fam) / len(fam), 4)
    return rates


def build(out_dir: Path | str, seed: int = 0, n_train: int = 4000, n_validation: int = 200,
          n_test: int = 200, n_corpus_train: int = 15000, n_corpus_validation: int = 1000,
          n_prefs_train: int = 400, n_prefs_validation: int = 100, fact_repeats: int = 6,
          weights: Mapping[str, float] | None = None, demo_cfg: DemoConfig = DemoConfig(),
          progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Writes every farm data file under ``out_dir/farm/`` and returns the manifest.

    Args:
        out_dir: The data root; files go to ``out_dir/farm/``.
        seed: Seed of every random draw.
        n_train: Train prompts (also the number of SFT train rows).
        n_validation: Validation prompts (and SFT validation rows).
        n_test: Test prompts (no demonstrations are written for them).
        n_corpus_train: Lines of ``corpus_train.txt``.
        n_corpus_validation: Lines of ``corpus_validation.txt``.
        fact_repeats: Times each closed-world fact appears in the train corpus's fact table.
        n_prefs_train: Ranked lists in ``prefs_train_small.jsonl`` (first train prompts).
        n_prefs_validation: Ranked lists in ``prefs_validation_small.jsonl``.
        weights: Share of each family (default ``DEFAULT_WEIGHTS``).
        demo_cfg: Error rates of the demonstrator.
        progress: Print a line per step.

    Returns:
        The manifest written to ``manifest.json``.
    """
    say = print if progress else (lambda *a, **k: None)
    farm = Path(out_dir) / "farm"
    farm.mkdir(parents=True, exist_ok=True)
    say(f"[farm] 1/4 drawing prompts (seed={seed}) ...", flush=True)
    splits = split_tasks(seed, n_train, n_validation, n_test, weights)
    for split, tasks in splits.items():
        rows = [json.dumps({"prompt": t.prompt, "family": t.family}) for t in tasks]
        _write_lines(farm / f"prompts_{split}.jsonl", rows)

    say("[farm] 2/4 writing demonstrations ...", flush=True)
    demo_rates, perfect_rates = {}, {}
    for split in ("train", "validation"):
        rng = random.Random(f"farm/{seed}/demo/{split}")
        rows = []
        for task in splits[split]:
            demo = demonstrate(task, rng, demo_cfg)
            messages = [{"role": "user", "content": task.prompt},
                        {"role": "assistant", "content": demo}]  # fmt: skip
            rows.append({"messages": messages, "family": task.family,
                         "gold": gold_score(task.prompt, demo),
                         "correct": is_gold_correct(task.prompt, demo)})  # fmt: skip
        _write_lines(farm / f"sft_{split}.jsonl", [json.dumps(r) for r in rows])
        demo_rates[split] = _rates(rows, "correct")
        perfect_rates[split] = _rates([{**r, "perfect": r["gold"] >= 0.99} for r in rows], "perfect")

    # A small fixed preference set (perturbation candidates only, no model needed) for tests and
    # quick reward-model runs; `make prefs` collects the real one from the SFT policy.
    prefs_noise = {}
    for split, n in (("train", n_prefs_train), ("validation", n_prefs_validation)):
        rng = random.Random(f"farm/{seed}/prefs/{split}")
        rows, labels, golds = [], [], []
        for task in splits[split][:n]:
            responses, sources = ranked_candidates(task.prompt, [], 4, rng)
            gold = [gold_score(task.prompt, r) for r in responses]
            scores = annotate(gold, rng, "flip", flip_rate=0.25)
            rows.append({"prompt": task.prompt, "responses": responses, "scores": scores, "gold": gold,
                         "sources": sources})  # fmt: skip
            labels.append(scores)
            golds.append(gold)
        _write_lines(farm / f"prefs_{split}_small.jsonl", [json.dumps(r) for r in rows])
        prefs_noise[split] = round(agreement(labels, golds), 4)

    say("[farm] 3/4 writing the pre-training corpus ...", flush=True)
    corpus = {}
    for split, n_lines in (("train", n_corpus_train), ("validation", n_corpus_validation)):
        rng = random.Random(f"farm/{seed}/corpus/{split}")
        lines = corpus_lines(n_lines, rng, splits["train"])
        if split == "train":  # the fact table: every closed-world fact, fact_repeats times
            table = fact_lines(rng, repeats=fact_repeats)
            lines += table
            rng.shuffle(lines)
            corpus["fact_table_lines"] = len(table)
        _write_lines(farm / f"corpus_{split}.txt", lines)
        corpus[split] = {"lines": len(lines)}

    say("[farm] 4/4 writing the manifest ...", flush=True)
    files = {}
    for path in sorted(farm.glob("*")):
        if path.name != "manifest.json" and path.suffix in (".jsonl", ".txt"):
            data = path.read_bytes()
            files[path.name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "generator": "python -m align.farm.build",
        "seed": seed,
        "counts": {s: _counts(t) for s, t in splits.items()},
        "weights": dict(DEFAULT_WEIGHTS if weights is None else weights),
        "demonstrator": {"config": asdict(demo_cfg), "gold_correct_rate": demo_rates,
                         "gold_perfect_rate": perfect_rates},
        "corpus": corpus,
        "prefs_small": {"k": 4, "noise": "flip", "flip_rate": 0.25, "noise_ceiling": prefs_noise},
        "files": files,
    }
    (farm / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    say(f"[farm] done: {farm} (train demonstrations gold-correct "
        f"{demo_rates['train']['overall']:.1%}, perfect {perfect_rates['train']['overall']:.1%})",
        flush=True)  # fmt: skip
    return manifest


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m align.farm.build --out data --seed 0``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"),
                        help="data root; files go to OUT/farm/")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-validation", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--n-corpus-train", type=int, default=15000)
    parser.add_argument("--n-corpus-validation", type=int, default=1000)
    args = parser.parse_args(argv)
    build(args.out, args.seed, args.n_train, args.n_validation, args.n_test,
          args.n_corpus_train, args.n_corpus_validation)  # fmt: skip


if __name__ == "__main__":
    main()
