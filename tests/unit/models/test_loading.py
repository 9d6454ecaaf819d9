"""Tiny model construction and loading through from_pretrained."""

import pytest
import torch

from align.errors import CheckpointError
from align.models.loading import (
    build_tiny_llama,
    check_stage_finished,
    count_parameters,
    load_causal_lm,
    load_tokenizer,
    resolve_dtype,
    resolve_full_model_path,
)
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


# --- the wrong model, or newly initialised weights, is refused before training -----------------


def _tiny_folder(path, tie=True):
    """A seeded tiny Llama causal LM saved as a Hugging Face folder (weights + tokenizer)."""
    from tests.unit.data.helpers import make_tokenizer

    tok = make_tokenizer()
    model = build_tiny_llama(tok, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             tie_word_embeddings=tie)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_a_config_of_another_architecture_beside_llama_weights_is_refused(tmp_path):
    from transformers import GPT2Config

    folder = _tiny_folder(tmp_path / "m")
    GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4).save_pretrained(folder)  # replaces config.json
    with pytest.raises(CheckpointError) as e:
        load_causal_lm(str(folder), dtype="float32")
    msg = str(e.value)
    assert str(folder) in msg and "GPT2LMHeadModel" in msg and "newly initialised" in msg
    assert "lm_head.weight" in msg and "in all)" in msg  # the first keys and their count
    assert "config.json" in msg and "model.embed_tokens.weight" in msg  # the unused Llama weights too


def test_a_reward_model_folder_is_refused_as_a_causal_lm_before_loading(tmp_path):
    from transformers import AutoModelForSequenceClassification

    folder = _tiny_folder(tmp_path / "sft")
    AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).save_pretrained(tmp_path / "rm")
    with pytest.raises(CheckpointError, match=r"is a reward model \(LlamaForSequenceClassification.*sft/final"):
        load_causal_lm(str(tmp_path / "rm"))


def test_missing_weights_are_refused_and_tied_weights_are_not_missing(tmp_path):
    from safetensors.torch import load_file, save_file

    untied = _tiny_folder(tmp_path / "untied", tie=False)
    load_causal_lm(str(untied), dtype="float32")  # complete: loads
    load_causal_lm(str(_tiny_folder(tmp_path / "tied")), dtype="float32")  # lm_head tied to the embeddings: loads
    weights = load_file(untied / "model.safetensors")
    del weights["lm_head.weight"], weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, untied / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"2 weights of LlamaForCausalLM are not in the checkpoint.*lm_head.weight"):
        load_causal_lm(str(untied), dtype="float32")


def test_an_incomplete_peft_adapter_is_refused(tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    from align.models.adapters import merge_quantized

    base = _tiny_folder(tmp_path / "base")
    peft_model = get_peft_model(load_causal_lm(str(base), dtype="float32"), LoraConfig(r=2, target_modules=["q_proj"]))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    load_causal_lm(str(adapter), dtype="float32")  # complete: the base plus its adapter
    weights = load_file(adapter / "adapter_model.safetensors")
    dropped = sorted(weights)[0]
    del weights[dropped]
    save_file(weights, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not in the checkpoint"):
        load_causal_lm(str(adapter), dtype="float32")
    with pytest.raises(CheckpointError, match="adapter is incomplete"):
        merge_quantized(adapter)


def test_a_pytorch_model_bin_beside_safetensors_is_never_opened(tmp_path):
    """Weights come from model.safetensors: a pytorch_model.bin beside it (here not even a pickle)
    is not read. (A crafted pickle alone is refused by torch.load's weights_only unpickler; that is
    tested with a real payload in the checkpoint tests.)"""
    folder = _tiny_folder(tmp_path / "m")
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle: reading this file would fail")
    model = load_causal_lm(str(folder), dtype="float32")
    assert model.config.model_type == "llama"


# --- a stage's final/ is used only when the stage finished ----------------------------------------


def test_final_of_an_unfinished_stage_is_refused(tmp_path):
    stage = tmp_path / "run" / "sft"
    final = _tiny_folder(stage / "final")
    (stage / "config.yaml").write_text("stage: sft\n")  # the stage started (config.yaml) ...
    with pytest.raises(CheckpointError, match=r"sft did not finish \(no metrics.json beside final/.*make sft"):
        resolve_full_model_path(str(final))  # ... and did not finish (no metrics.json)
    with pytest.raises(CheckpointError, match="sft did not finish"):
        check_stage_finished(str(final))
    (stage / "metrics.json").write_text("{}")
    assert resolve_full_model_path(str(final)) == str(final)
    # Outside a stage folder, and hub ids: nothing to check.
    other = _tiny_folder(tmp_path / "elsewhere" / "final")
    assert resolve_full_model_path(str(other)) == str(other)
    check_stage_finished("Qwen/Qwen2.5-0.5B-Instruct")


def test_merged_copy_of_an_unfinished_stage_is_refused(tmp_path):
    stage = tmp_path / "run" / "sft"
    (stage / "final").mkdir(parents=True)
    (stage / "final" / "adapter_config.json").write_text("{}")
    _tiny_folder(stage / "final_merged")
    (stage / "config.yaml").write_text("stage: sft\n")
    with pytest.raises(CheckpointError, match="sft did not finish"):
        resolve_full_model_path(str(stage / "final"))
    (stage / "metrics.json").write_text("{}")
    assert resolve_full_model_path(str(stage / "final")) == str(stage / "final_merged")
