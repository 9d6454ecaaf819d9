"""Tiny model construction and loading through from_pretrained."""

import pytest
import torch

from align.models.loading import build_tiny_llama, count_parameters, load_causal_lm, load_tokenizer, resolve_dtype
from align.models.tokenizer import train_tokenizer

TEXTS = ["The fox is red.", "7 plus 12 is 19."] * 20


def test_tiny_llama_matches_tokenizer_and_round_trips(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    model = build_tiny_llama(tok, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    assert model.config.vocab_size == len(tok)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    trainable, total = count_parameters(model)
    assert trainable == total > 0
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = load_causal_lm(str(tmp_path), dtype="float32")
    x = torch.tensor([tok("The fox")["input_ids"]])
    torch.testing.assert_close(loaded(x).logits, model.eval()(x).logits)
    assert load_tokenizer(str(tmp_path)).eos_token_id == tok.eos_token_id


def test_same_seed_same_weights_different_seed_different():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    kw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    a, b, c = (build_tiny_llama(tok, seed=s, **kw) for s in (0, 0, 1))
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_bad_head_count_and_missing_path_and_dtype_errors(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    with pytest.raises(ValueError, match="not divisible"):
        build_tiny_llama(tok, hidden_size=30, num_attention_heads=4)
    with pytest.raises(FileNotFoundError, match="run that stage first"):
        load_causal_lm(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="model.dtype"):
        resolve_dtype("float8")
