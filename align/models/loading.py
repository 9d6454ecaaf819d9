"""Build the tiny default model from a config, and load any causal LM the way a hub model loads.

Every stage after ``pretrain`` goes through :func:`load_causal_lm` / :func:`load_tokenizer`,
which are plain ``from_pretrained`` calls: the tiny default is a normal Hugging Face folder, so
the code path is the same for ``outputs/default/pretrain/final`` and ``Qwen/Qwen2.5-0.5B-Instruct``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_tiny_llama(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 128,
    intermediate_size: int = 384,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    num_key_value_heads: int | None = None,
    max_position_embeddings: int = 256,
    tie_word_embeddings: bool = True,
    rope_theta: float = 10000.0,
    seed: int = 0,
) -> LlamaForCausalLM:
    """Create a randomly initialised Llama-architecture causal LM sized for ``tokenizer``.

    Args:
        tokenizer: The tokenizer the model will use; sets vocab size and special token ids.
        hidden_size: Model width (d_model).
        intermediate_size: MLP width.
        num_hidden_layers: Number of decoder blocks.
        num_attention_heads: Attention heads; must divide ``hidden_size``.
        num_key_value_heads: KV heads for grouped-query attention (defaults to all heads).
        max_position_embeddings: Longest sequence the model is configured for.
        tie_word_embeddings: Share input and output embeddings (halves embedding parameters).
        rope_theta: RoPE base.
        seed: Seed for the weight initialisation.

    Returns:
        The model, in float32, with a generation config that stops at the tokenizer's EOS.

    Raises:
        ValueError: If the heads do not divide the width.
    """
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"model.arch.hidden_size={hidden_size} is not divisible by "
            f"num_attention_heads={num_attention_heads}; pick sizes where it is (e.g. 128 and 4)."
        )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads or num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        rope_theta=rope_theta,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return model


def resolve_dtype(dtype: str) -> torch.dtype | str:
    """Map a config dtype string to a torch dtype; ``auto`` picks bf16 on capable GPUs, else fp32."""
    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is not one of auto, {', '.join(_DTYPES)}.")
    return _DTYPES[dtype]


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a hub id or local folder and make sure it can pad.

    Raises:
        FileNotFoundError: If a local-looking path does not exist (the usual cause: the previous
            stage of the run has not been run yet).
    """
    _check_local_path(name_or_path)
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        # Hub models without a pad token (Llama): pad with EOS, the common practice. Collators
        # mask by attention mask, not by pad id, so EOS is still trained.
        tok.pad_token = tok.eos_token
        log.info("tokenizer has no pad token; using EOS %r for padding", tok.eos_token)
    return tok


def load_causal_lm(
    name_or_path: str,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    quantization_config=None,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM from a hub id or a local folder with ``from_pretrained``."""
    _check_local_path(name_or_path)
    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """Return (trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _check_local_path(name_or_path: str) -> None:
    p = Path(name_or_path)
    looks_local = name_or_path.startswith((".", "/", "~")) or p.parts[:1] == ("outputs",)
    if looks_local and not p.expanduser().exists():
        raise FileNotFoundError(
            f"model path {name_or_path!r} does not exist. If it is the previous stage's output, "
            "run that stage first for this run (e.g. `make pretrain` before `make sft`), or point "
            "model.name_or_path at an existing folder or hub id."
        )


def snapshot_trainable(model: torch.nn.Module, max_tensors: int = 4) -> dict[str, torch.Tensor]:
    """CPU copies of the first and last few trainable tensors (cheap even for large models)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if len(named) > max_tensors:
        half = max_tensors // 2
        named = named[:half] + named[-(max_tensors - half):]
    return {n: p.detach().float().cpu().clone() for n, p in named}


def trainable_delta_norm(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> float:
    """L2 norm of the change of the snapshotted tensors since :func:`snapshot_trainable`."""
    params = dict(model.named_parameters())
    total = 0.0
    for name, before in snapshot.items():
        total += float((params[name].detach().float().cpu() - before).pow(2).sum())
    return total**0.5


def params_checksum(model: torch.nn.Module, include=lambda name: True) -> float:
    """A cheap fingerprint of a model's parameters: the sum of every selected entry, in float64."""
    return float(sum(p.detach().double().sum() for n, p in model.named_parameters() if include(n)))


def is_base_parameter(name: str) -> bool:
    """True for a PEFT model's frozen base weights (not an adapter's own parameters)."""
    return "lora_" not in name and "ia3_" not in name and "modules_to_save" not in name


def resolve_full_model_path(path: str) -> str:
    """A folder with full weights for ``path``: itself, or the merged sibling of an adapter folder.

    Raises:
        ValueError: For a PEFT adapter folder without a merged copy beside it.
    """
    p = Path(path)
    if (p / "adapter_config.json").exists():
        merged = p.parent / "final_merged"
        if (merged / "config.json").exists():
            log.info("%s is a PEFT adapter; starting from the merged copy %s", p, merged)
            return str(merged)
        raise ValueError(
            f"{path} is a PEFT adapter folder, and a reward model starts from full weights. Re-run "
            "SFT with peft.merge=true (it writes final_merged/), or set model.name_or_path to a full model."
        )
    return path
