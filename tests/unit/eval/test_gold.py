"""Gold metrics and the gold win rate on real farm prompts and the oracle's own references."""

import pytest

from align.data import load_prompts
from align.eval.gold import gold_metrics, gold_win_rate
from align.farm import parse_task
from align.generation import Generations

PROMPTS, _ = load_prompts("data/farm/prompts_validation.jsonl", limit=20)
REFERENCES = [parse_task(p).reference for p in PROMPTS]


def test_win_rate_of_references_against_empty_answers_is_one():
    assert gold_win_rate(PROMPTS, REFERENCES, [""] * len(PROMPTS)) == 1.0
    assert gold_win_rate(PROMPTS, [""] * len(PROMPTS), REFERENCES) == 0.0


def test_ties_count_half():
    assert gold_win_rate(PROMPTS, REFERENCES, REFERENCES) == 0.5
    # Half the prompts won, half tied: 0.5 * 1 + 0.5 * 0.5.
    half = len(PROMPTS) // 2
    mixed = REFERENCES[:half] + [""] * (len(PROMPTS) - half)
    baseline = [""] * half + [""] * (len(PROMPTS) - half)
    assert gold_win_rate(PROMPTS, mixed, baseline) == pytest.approx((half + 0.5 * (len(PROMPTS) - half)) / len(PROMPTS))


def test_win_rate_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one response per prompt"):
        gold_win_rate(PROMPTS, REFERENCES[:-1], REFERENCES)


def test_gold_metrics_of_references_are_perfect():
    gens = Generations(texts=REFERENCES)
    m = gold_metrics(PROMPTS, gens)
    assert m["gold/score_mean"] == pytest.approx(1.0)
    assert m["gold/perfect_frac"] == 1.0 and m["gold/correct_frac"] == 1.0
    assert not any(k.endswith(("response_len", "no_eos_frac")) for k in m)  # lengths are gen/*, not gold
