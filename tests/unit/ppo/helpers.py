"""A tiny random policy and a reward model made from it, on disk: what the PPO tests load."""

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from align.models.loading import build_tiny_llama
from tests.unit.data.helpers import make_tokenizer


def write_policy_and_rm(root: Path):
    """``(tokenizer, sft folder, rm folder)``: a seeded tiny Llama as SFT, and a one-label reward model
    initialised from it (a seeded new head) with the tokenizer's pad id."""
    tok = make_tokenizer()
    model = build_tiny_llama(tok, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    model.save_pretrained(root / "sft")
    tok.save_pretrained(root / "sft")
    torch.manual_seed(1)
    rm = AutoModelForSequenceClassification.from_pretrained(root / "sft", num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    return tok, str(root / "sft"), str(root / "rm")
