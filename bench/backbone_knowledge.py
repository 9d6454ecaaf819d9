"""What a causal LM knows of the farm world: the ceiling on what a reward model built on it can check.

For every closed-world fact, the LM reads the start of the fact sentence and either completes it
greedily (arithmetic: ``"7 plus 12 is"`` -> ``19``?) or ranks the candidate endings by
log-likelihood (knowledge-base values among their set, word lengths 1..9, first and last letters
among a..z). It prints the share it gets right per kind; it asserts nothing. Used for the
backbone comparisons of docs/results.md (item 22d).

    .venv/bin/python bench/backbone_knowledge.py outputs/v3/pretrain/final [more models ...]
"""

from __future__ import annotations

import argparse
import string

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from align.eval.policy import sequence_logprobs
from align.farm.world import ANIMALS, ATTRIBUTES, NUMBERS, WORDS, fact_sentence


def _arithmetic(model, tokenizer, op: str) -> float:
    right = total = 0
    for a in NUMBERS:
        for b in NUMBERS:
            if op == "minus" and a < b:
                continue
            enc = tokenizer(f"{a} {op} {b} is", return_tensors="pt")
            out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            text = tokenizer.decode(out[0, enc["input_ids"].shape[1] :]).strip().split(".")[0]
            right += int(text == str(a + b if op == "plus" else a - b))
            total += 1
    return right / total


def _top1(model, tokenizer, groups: list[tuple[list[str], int]]) -> float:
    """Share of groups whose most likely candidate sentence is the true one.

    A sentence's score is its log-likelihood after its first token (``sequence_logprobs``, all
    candidates of all groups in one batched pass)."""
    ids = [tokenizer(c)["input_ids"] for candidates, _ in groups for c in candidates]
    scores = sequence_logprobs(model, [s[:1] for s in ids], [s[1:] for s in ids], tokenizer.pad_token_id,
                               batch_size=64, desc="candidates").split([len(c) for c, _ in groups])  # fmt: skip
    return sum(int(s.argmax().item() == truth) for s, (_, truth) in zip(scores, groups)) / len(groups)


def knowledge(model_dir: str) -> dict[str, float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    letters = string.ascii_lowercase
    out = {}
    with torch.no_grad():
        out["plus"] = _arithmetic(model, tokenizer, "plus")
        out["minus"] = _arithmetic(model, tokenizer, "minus")
        for i, attribute in enumerate(ATTRIBUTES):
            values = list(ATTRIBUTES[attribute])
            groups = [([fact_sentence(animal, attribute, v) for v in values], values.index(truth[i]))
                      for animal, truth in ANIMALS.items()]  # fmt: skip
            out[attribute] = _top1(model, tokenizer, groups)
        out["length"] = _top1(model, tokenizer, [([f"The word {w} has {n} letters." for n in range(1, 10)], len(w) - 1)
                                                  for w in WORDS])  # fmt: skip
        for which, pick in (("first", 0), ("last", -1)):
            groups = [([f"The {which} letter of {w} is {c}." for c in letters], letters.index(w[pick])) for w in WORDS]
            out[f"{which} letter"] = _top1(model, tokenizer, groups)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="causal LM folders (plain transformers)")
    a = parser.parse_args()
    results = {m: knowledge(m) for m in a.models}
    keys = list(next(iter(results.values())))
    print(f"{'model':40s}" + "".join(f"{k:>13s}" for k in keys))
    for m, r in results.items():
        print(f"{m[-40:]:40s}" + "".join(f"{r[k]:13.3f}" for k in keys))


if __name__ == "__main__":
    main()
