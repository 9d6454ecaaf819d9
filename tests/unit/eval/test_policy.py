"""The one policy-vs-baseline comparison (sft, dpo, ppo and eval call it) on real farm prompts."""

import json

import pytest

from align.eval.policy import compare_with, generation_metrics
from align.farm import parse_task
from align.generation import Generations

PROMPTS = [json.loads(line)["prompt"] for line in open("data/farm/prompts_validation.jsonl")][:20]
REFERENCES = [parse_task(p).reference for p in PROMPTS]


def _gens(texts, lengths=None, ended=None):
    lengths = lengths or [3] * len(texts)
    return Generations(prompts=PROMPTS, prompt_ids=[[1]] * len(texts), response_ids=[[7] * n for n in lengths],
                       texts=texts, ended=ended or [True] * len(texts))


def test_a_policy_against_itself_wins_half_and_gains_nothing():
    g = _gens(REFERENCES)
    m = compare_with(PROMPTS, g, g, gold=True, rm=[0.1] * 20, baseline_rm=[0.1] * 20)
    assert m["gold/win_rate_vs_sft"] == 0.5 and m["rm/win_rate_vs_sft"] == 0.5
    assert m["gold/gain_vs_sft"] == 0.0 and m["gold/sft_score_mean"] == pytest.approx(1.0)
    assert m["rm/sft_score_mean"] == pytest.approx(0.1) and m["gen/sft_response_len"] == 3.0


def test_references_beat_empty_answers_and_the_baseline_is_named():
    m = compare_with(PROMPTS, _gens(REFERENCES), _gens([""] * 20, [1] * 20, [False] * 20), name="base", gold=True)
    assert m["gold/win_rate_vs_base"] == 1.0 and m["gold/gain_vs_base"] == pytest.approx(1.0)
    assert m["gen/base_no_eos_frac"] == 1.0 and m["gen/base_response_len"] == 1.0
    assert not any(k.startswith("rm/") for k in m)  # no reward model, no rm/*
    only = compare_with(PROMPTS, _gens(REFERENCES), _gens([""] * 20), gold=True, baseline_metrics=False)
    assert only == {"gold/win_rate_vs_sft": 1.0}
    assert compare_with(PROMPTS, _gens(REFERENCES), _gens([""] * 20), gold=False, rm=[1.0] * 20,
                        baseline_rm=[0.0] * 20, baseline_metrics=False) == {"rm/win_rate_vs_sft": 1.0}


def test_generation_metrics():
    m = generation_metrics(_gens(["a", "b"], [2, 4], [True, False]), prefix="gen/sampled_")
    assert m == {"gen/sampled_response_len": 3.0, "gen/sampled_no_eos_frac": 0.5}
    with pytest.raises(ValueError, match="at least one"):
        generation_metrics(Generations())
