"""The rm/ folder contract: one reward-model loader, one normalization policy, the gate."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from align.errors import CheckpointError
from align.models.tokenizer import train_tokenizer
from align.rm.folder import NORMALIZATION_FILE, check_gate, load_reward_model, read_normalization, write_normalization


def test_normalization_round_trip_and_one_missing_file_policy(tmp_path):
    assert read_normalization(tmp_path, normalize=False) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"does not exist.*reward_model.normalize=false"):
        read_normalization(tmp_path)
    write_normalization(tmp_path, 0.25, 2.0)
    assert read_normalization(tmp_path) == (0.25, 2.0)
    (tmp_path / NORMALIZATION_FILE).write_text('{"mean": 0.1}')
    with pytest.raises(ValueError, match="expected"):
        read_normalization(tmp_path)
    (tmp_path / NORMALIZATION_FILE).write_text(json.dumps({"mean": 0.1, "std": 0.0}))
    with pytest.raises(ValueError, match="std must be > 0"):
        read_normalization(tmp_path)
    with pytest.raises(ValueError, match="std > 0"):
        write_normalization(tmp_path, 0.0, 0.0)


def test_gate_refuses_a_failed_reward_model_unless_allowed(tmp_path, caplog):
    final = tmp_path / "final"
    final.mkdir()
    check_gate(final, allow_failed=False)  # no metrics.json (a hub model): unknown, logged
    assert "quality gate is unknown" in caplog.text
    (tmp_path / "metrics.json").write_text(json.dumps({"gate/passed": True, "gate/failed": ""}))
    check_gate(final, allow_failed=False)
    (tmp_path / "metrics.json").write_text(json.dumps({"gate/passed": False, "gate/failed": "gold/accuracy 0.5 < 0.75"}))
    with pytest.raises(ValueError, match=r"gold/accuracy 0.5 < 0.75.*ppo.allow_failed_rm=true"):
        check_gate(final, allow_failed=False)
    check_gate(final, allow_failed=True)


def test_load_reward_model_has_one_label_and_pools_at_the_pad_id(tmp_path):
    tok = train_tokenizer(["What is 7 plus 12? 7 plus 12 is 19."] * 30, vocab_size=300)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    rm = load_reward_model(str(tmp_path), tok.pad_token_id, "float32", new_head=True)  # what the rm stage does
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tok.pad_token_id
    assert rm.dtype == torch.float32 and rm.score.out_features == 1


def _lm_and_rm(root):
    """A tiny causal LM folder (``sft``) and a reward model made from it (``rm``, a new seeded head)."""
    tok = train_tokenizer(["What is 7 plus 12? 7 plus 12 is 19."] * 30, vocab_size=300)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    LlamaForCausalLM(cfg).save_pretrained(root / "sft")
    load_reward_model(str(root / "sft"), tok.pad_token_id, "float32", new_head=True).save_pretrained(root / "rm")
    return tok, root / "sft", root / "rm"


def test_a_causal_lm_given_as_the_reward_model_is_refused(tmp_path):
    """Its score head would be random: scores (and a gate with normalize=false) would mean nothing."""
    tok, sft, rm = _lm_and_rm(tmp_path)
    loaded = load_reward_model(str(rm), tok.pad_token_id, "float32")  # a trained reward model: all weights there
    assert loaded.score.out_features == 1
    with pytest.raises(CheckpointError, match=r"is a causal LM \(LlamaForCausalLM.*rm/final"):
        load_reward_model(str(sft), tok.pad_token_id, "float32")
    # Without `architectures` in config.json, the weights tell: the score head is not in the checkpoint.
    config = json.loads((sft / "config.json").read_text())
    del config["architectures"]
    (sft / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"1 weights of LlamaForSequenceClassification are not in the checkpoint.*\(score.weight\).*Only the head"):
        load_reward_model(str(sft), tok.pad_token_id, "float32")


def test_a_new_head_may_be_missing_but_nothing_else(tmp_path):
    """The rm stage starts from a causal LM: only the head (outside the backbone) may be new."""
    from safetensors.torch import load_file, save_file

    tok, sft, _ = _lm_and_rm(tmp_path)
    weights = load_file(sft / "model.safetensors")
    del weights["model.layers.0.mlp.up_proj.weight"]
    save_file(weights, sft / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as e:
        load_reward_model(str(sft), tok.pad_token_id, "float32", new_head=True)
    assert "model.layers.0.mlp.up_proj.weight" in str(e.value) and "score.weight" not in str(e.value)
