"""The one generation path: explicit sampling semantics, batching, consecutive samples, EOS handling."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from align.generation import Generations, chat_prompt_ids, generate, left_pad, sampling_args
from align.models.tokenizer import train_tokenizer

TOK = train_tokenizer(["What is 7 plus 12? 7 plus 12 is 19. Say cat three times: cat cat cat."] * 30, vocab_size=300)
PROMPTS = ["What is 7 plus 12?", "Say cat three times.", "What is 7 plus 7?"]


def _model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, pad_token_id=TOK.pad_token_id, eos_token_id=TOK.eos_token_id)
    return LlamaForCausalLM(cfg).eval()


def test_sampling_args_set_every_knob():
    assert sampling_args(True) == {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    assert sampling_args(True, 0.7, 5, 0.9) == {"do_sample": True, "temperature": 0.7, "top_k": 5, "top_p": 0.9}
    assert sampling_args(False, 0.7) == {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with pytest.raises(ValueError, match="temperature > 0"):
        sampling_args(True, 0.0)
    with pytest.raises(ValueError, match="top_k >= 0"):
        sampling_args(True, 1.0, -1)
    with pytest.raises(ValueError, match="top_p"):
        sampling_args(True, 1.0, 0, 0.0)


def test_sampling_is_from_the_full_softmax_unless_top_k_is_asked():
    # At temperature 50 the next token is close to uniform over ~300 ids: the full softmax draws far
    # more than 50 distinct first tokens; transformers' unset default (top_k=50) could never.
    model, prompts = _model(), ["What is 7 plus 12?"] * 400
    torch.manual_seed(0)
    full = generate(model, TOK, prompts, max_new_tokens=1, batch_size=200, do_sample=True, temperature=50.0)
    torch.manual_seed(0)
    top = generate(model, TOK, prompts, max_new_tokens=1, batch_size=200, do_sample=True, temperature=50.0, top_k=50)
    assert len({tuple(r) for r in full.response_ids}) > 60
    assert len({tuple(r) for r in top.response_ids}) <= 50


def test_greedy_batches_match_one_prompt_at_a_time_and_samples_are_consecutive():
    model = _model(1)
    batched = generate(model, TOK, PROMPTS, max_new_tokens=6, batch_size=3)
    alone = [generate(model, TOK, [p], max_new_tokens=6, batch_size=1) for p in PROMPTS]
    assert batched.response_ids == [a.response_ids[0] for a in alone]
    assert batched.prompt_ids == [chat_prompt_ids(TOK, p) for p in PROMPTS]
    torch.manual_seed(0)
    s = generate(model, TOK, PROMPTS, max_new_tokens=6, batch_size=4, do_sample=True, num_per_prompt=3)
    assert s.prompts == [p for p in PROMPTS for _ in range(3)] and len(s) == 9
    for ids, ended, n in zip(s.response_ids, s.ended, s.num_tokens):
        assert n == len(ids) and ended == (TOK.eos_token_id in ids) and (not ended or ids[-1] == TOK.eos_token_id)
    picked = s.take([4, 0])
    assert picked.prompts == [PROMPTS[1], PROMPTS[0]] and picked.texts == [s.texts[4], s.texts[0]]
    with pytest.raises(ValueError, match="num_per_prompt"):
        generate(model, TOK, PROMPTS, 6, 4, num_per_prompt=0)


def test_left_pad_right_aligns_prompts():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1], []], 0)
    assert Generations().num_tokens == []
