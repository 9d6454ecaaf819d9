"""Reward model: held-out gold accuracy broken down by farm family and by what a pair differs in.

Scores every ranked list of a preference file (``prefs/validation.jsonl`` by default) with each
reward model given, and, over the pairs whose gold scores differ, prints the share the RM orders
like gold: overall, per family, and per kind of difference (``correct``: the two answers differ
in correctness; ``zero``: the worse one scores 0, an over-refusal or compliance; ``style``:
format or length only). Several models on one file compare them on the same pairs, the "fixed
set" figures of docs/results.md (item 22c).

    .venv/bin/python bench/rm_breakdown.py outputs/v3/rm/final [more RMs ...] \\
        [--prefs outputs/v2/prefs/validation.jsonl]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from align.farm import parse_task
from align.farm.annotators import strict_pairs
from align.farm.gold import gold_details
from align.rm.model import score_responses


def _difference(better: dict, worse: dict) -> str:
    if better["correctness"] != worse["correctness"]:
        return "correct"
    return "zero" if worse["score"] == 0.0 else "style"


def breakdown(model_dir: str, rows: list[dict]) -> dict[str, list[int]]:
    """``{key: [right, pairs]}`` for ``all``, each family, each difference and family:difference."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    with torch.no_grad():
        for row in rows:
            family = parse_task(row["prompt"]).family
            rewards = score_responses(model, tokenizer, [{"role": "user", "content": row["prompt"]}], row["responses"])
            details = [gold_details(row["prompt"], r) for r in row["responses"]]
            for hi, lo in strict_pairs([d["score"] for d in details]):
                right = int(rewards[hi] > rewards[lo])
                what = _difference(details[hi], details[lo])
                for key in ("all", family, what, f"{family}:{what}"):
                    counts[key][0] += right
                    counts[key][1] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="reward-model folders (plain transformers)")
    parser.add_argument("--prefs", default="outputs/default/prefs/validation.jsonl")
    a = parser.parse_args()
    rows = [json.loads(line) for line in Path(a.prefs).read_text().splitlines() if line.strip()]
    results = {m: breakdown(m, rows) for m in a.models}
    keys = sorted({k for r in results.values() for k in r}, key=lambda k: (k != "all", ":" in k, k))
    print(f"gold pair accuracy on {a.prefs} ({len(rows)} lists)")
    names = ["/".join(Path(m).resolve().parts[-3:-1]) for m in a.models]  # <run>/<stage>
    print(f"{'pairs':34s}" + "".join(f"{name[-12:]:>12s}" for name in names) + "       n")
    for key in keys:
        n = next(r[key][1] for r in results.values() if key in r)
        cells = "".join(f"{r[key][0] / r[key][1]:12.3f}" if key in r else f"{'-':>12s}" for r in results.values())
        print(f"{key:34s}{cells}{n:8d}")


if __name__ == "__main__":
    main()
