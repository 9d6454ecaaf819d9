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


def test_text_perplexity_is_the_language_model_loss_over_each_texts_tokens():
    import math

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from align.eval.policy import text_perplexity
    from align.models.tokenizer import train_tokenizer

    tok = train_tokenizer(["The fox is red.", "7 plus 12 is 19.", "A short line."] * 20, vocab_size=300)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, pad_token_id=tok.pad_token_id))
    texts = ["The fox is red.", "7 plus 12 is 19 and the fox is red."]
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    with torch.no_grad():  # HF's loss: the mean over every token after the first
        nll = [model(input_ids=torch.tensor([s]), labels=torch.tensor([s])).loss.item() * (len(s) - 1) for s in ids]
    expected = math.exp(sum(nll) / sum(len(s) - 1 for s in ids))
    assert text_perplexity(model, tok, texts, max_length=64, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert text_perplexity(model, tok, texts[:1], max_length=64) == pytest.approx(math.exp(nll[0] / (len(ids[0]) - 1)),
                                                                                 rel=1e-5)
    short = text_perplexity(model, tok, texts, max_length=4)  # each text cut to 3 tokens + EOS
    assert short != pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="no text of two or more tokens"):
        text_perplexity(model, tok, [""], max_length=64)
