"""Build the tiny default model from a config, and load any causal LM the way a hub model loads.

Every stage after ``pretrain`` goes through :func:`load_causal_lm` / :func:`load_tokenizer`,
which are plain ``from_pretrained`` calls: the tiny default is a normal Hugging Face folder, so
the code path is the same for ``outputs/default/pretrain/final`` and ``Qwen/Qwen2.5-0.5B-Instruct``.

What a load refuses (:class:`align.errors.CheckpointError`, before any training):

- a folder whose ``config.json`` names another kind of model than the stage needs
  (:func:`check_architecture`: a reward model where a causal LM is needed, and back);
- weights the folder does not have, which ``from_pretrained`` would initialise at random
  (:func:`check_loading_info`: a ``config.json`` of another architecture beside the weights, a
  truncated checkpoint; tied weights are not missing). For a PEFT adapter folder the check
  covers the adapter's own keys;
- ``<run>/<stage>/final`` of a stage that did not finish (:func:`check_stage_finished`, in
  :func:`resolve_full_model_path`, which every stage's model paths go through).

Weights are read as ``from_pretrained`` reads them: ``model.safetensors`` when present (a
``pytorch_model.bin`` beside it is not opened), a ``.bin`` alone only through ``torch.load``'s
``weights_only`` unpickler (tensors, no code).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
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

from align.errors import CheckpointError

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


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """Map a config dtype string to a torch dtype (a torch dtype passes through); ``auto`` picks
    bf16 on capable GPUs, else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
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
    """Load a causal LM from a hub id or a local folder with ``from_pretrained``.

    Raises:
        FileNotFoundError: A local-looking path that does not exist.
        CheckpointError: The folder holds another kind of model (e.g. a reward model), or weights
            are missing from it (they would be newly initialised); see the module docstring.
    """
    _check_local_path(name_or_path)
    check_architecture(name_or_path, CAUSAL_LM, trust_remote_code)
    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model, info = AutoModelForCausalLM.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    check_loading_info(name_or_path, model, info)
    return model


# -- what a folder holds, checked before and after from_pretrained ---------------------------------

CAUSAL_LM = "causal LM"
SEQUENCE_CLASSIFIER = "reward model"
_SHOWN_KEYS = 5


def architecture_kind(arch: str) -> str | None:
    """``CAUSAL_LM``, ``SEQUENCE_CLASSIFIER`` or None (another or unknown head) for a class name
    from ``config.json``'s ``architectures``."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    def names(mapping):
        return {n for v in mapping.values() for n in ((v,) if isinstance(v, str) else v)}

    if arch in names(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) or arch.endswith(("ForCausalLM", "LMHeadModel")):
        return CAUSAL_LM
    if arch in names(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES) or arch.endswith("ForSequenceClassification"):
        return SEQUENCE_CLASSIFIER
    return None


def read_architectures(name_or_path: str, trust_remote_code: bool = False) -> list[str]:
    """``config.json``'s ``architectures`` of a local folder or hub id ([] when it names none, for
    a PEFT adapter folder, or when the config cannot be read: ``from_pretrained`` then says why)."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            return []  # a PEFT adapter folder (adapter_config.json): the base model's config applies
        try:
            return list(json.loads((p / "config.json").read_text()).get("architectures") or [])
        except (OSError, ValueError, AttributeError):
            return []
    try:
        from transformers import AutoConfig

        return list(AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).architectures or [])
    except Exception:  # noqa: BLE001 - not resolvable here; the load that follows reports it
        return []


def check_architecture(name_or_path: str, needed: str, trust_remote_code: bool = False,
                       also: Iterable[str] = ()) -> None:
    """Refuse a folder whose ``config.json`` names another kind of model than ``needed``.

    A reward model loaded as a causal LM gets a newly initialised LM head, and a causal LM loaded
    as a reward model a newly initialised score head; both would train or score without a word.

    Args:
        name_or_path: Model folder or hub id.
        needed: ``CAUSAL_LM`` or ``SEQUENCE_CLASSIFIER``.
        trust_remote_code: For reading a hub config.
        also: Other kinds accepted (the ``rm`` stage starts a reward model from a causal LM).

    Raises:
        CheckpointError: Naming the folder, its architecture and what to use instead.
    """
    accepted = {needed, *also}
    for arch in read_architectures(name_or_path, trust_remote_code):
        kind = architecture_kind(arch)
        if kind is None or kind in accepted:
            continue
        if kind == SEQUENCE_CLASSIFIER:
            fix = ("Start this stage from a causal LM, e.g. the run's sft/final (model.name_or_path="
                   "outputs/<run>/sft/final); a reward model is given as reward_model.name_or_path.")
        else:
            fix = ("Point the reward model setting (reward_model.name_or_path, or reward_model= for eval) at a "
                   "trained reward model, e.g. the run's rm/final (`make rm` writes it).")
        raise CheckpointError(
            f"{name_or_path} is a {kind} ({arch} in its config.json), and a {needed} is needed here: "
            f"loading it as one would put a newly initialised, random head on it. {fix}"
        )


def _keys(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _SHOWN_KEYS else "")


def check_loading_info(name_or_path: str, model: PreTrainedModel, info: dict, allowed_missing=lambda key: False) -> None:
    """Refuse a load that left weights newly initialised: the checkpoint lacks them.

    ``info`` is what ``from_pretrained(..., output_loading_info=True)`` returns (transformers
    5.24: ``missing_keys``, ``unexpected_keys``, ``mismatched_keys``, ``error_msgs``). Tied
    weights (an LM head tied to the embeddings) are not listed as missing. Unexpected keys
    (weights in the file the model does not use) are logged, not refused: nothing is random.

    Args:
        name_or_path: The folder or hub id, for the message.
        model: The loaded model (its class names the architecture in the message).
        info: The loading info.
        allowed_missing: True for a key that may be new (the score head of a reward model
            started from a causal LM).

    Raises:
        CheckpointError: Missing or shape-mismatched weights, with the first keys, their count
            and the fix.
    """
    missing = {k for k in info.get("missing_keys", ()) if not allowed_missing(k)}
    mismatched = [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", ())]
    unexpected = set(info.get("unexpected_keys", ()))
    arch = type(model).__name__
    if missing or mismatched:
        what = []
        if missing:
            what.append(f"{len(missing)} weights of {arch} are not in the checkpoint and would be newly "
                        f"initialised at random ({_keys(missing)})")
        if mismatched:
            what.append(f"{len(mismatched)} have another shape in the checkpoint ({_keys(mismatched)})")
        if unexpected:
            what.append(f"{len(unexpected)} weights in the checkpoint are not used ({_keys(unexpected)})")
        model_type = getattr(model.config, "model_type", "?")
        backbone = getattr(model, "base_model_prefix", "") + "."
        if missing and not mismatched and all(not k.startswith(backbone) for k in missing):
            why = (f"Only the head is missing: the folder holds another kind of model than {arch} (e.g. a causal LM "
                   "where a trained reward model is needed, or back). Point the setting at a folder of the right kind.")
        else:
            why = (f"The weights do not belong to the model its config.json describes (model_type {model_type!r}, "
                   f"{arch}), or the checkpoint is incomplete. Put the model's own config.json beside its weights "
                   "(or re-save the folder with save_pretrained), or point the stage at a complete model folder.")
        raise CheckpointError(f"{name_or_path}: {'; '.join(what)}. {why}")
    if unexpected:
        log.warning("%s: %d weights in the checkpoint are not used by %s (%s)", name_or_path, len(unexpected), arch,
                    _keys(unexpected))


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


def check_stage_finished(path: str) -> None:
    """Refuse ``<run>/<stage>/final`` (or ``final_merged``/``final_adapter``) of a stage that did not finish.

    A stage folder holds ``config.yaml`` from the start and ``metrics.json`` (the completion
    marker, written last; deleted when the stage starts again). A ``final/`` without it is left
    from an earlier run or half written: the config beside it does not describe its weights.
    Paths outside a stage folder (hub ids, other folders) pass.

    Raises:
        CheckpointError: The parent is a stage folder without ``metrics.json``.
    """
    p = Path(path).expanduser()
    stage_dir = p.parent
    if p.name not in ("final", "final_merged", "final_adapter") or not (stage_dir / "config.yaml").is_file():
        return
    if not (stage_dir / "metrics.json").is_file():
        raise CheckpointError(
            f"{path}: {stage_dir.name} did not finish (no metrics.json beside {p.name}/; the stage writes it last, "
            f"and deletes it when it starts again), so {p.name}/ may be half written or from an earlier run. "
            f"Rerun `make {stage_dir.name}` (see {stage_dir / (stage_dir.name + '.log')}), or point the setting at "
            "a finished model folder."
        )


def resolve_full_model_path(path: str) -> str:
    """A folder with full weights for ``path``: itself, or the merged sibling of an adapter folder.

    Every stage's model paths go through it (or :func:`check_stage_finished` alone where an
    adapter folder is fine): it refuses the ``final/`` of an unfinished stage.

    Raises:
        CheckpointError: ``path`` is the ``final/`` of a stage that did not finish.
        ValueError: For a PEFT adapter folder without a merged copy beside it.
    """
    check_stage_finished(path)
    p = Path(path)
    if (p / "adapter_config.json").exists():
        merged = p.parent / "final_merged"
        if (merged / "config.json").exists():
            log.info("%s is a PEFT adapter; starting from the merged copy %s", p, merged)
            return str(merged)
        raise ValueError(
            f"{path} is a PEFT adapter folder, and this stage starts from full weights. Re-run "
            "SFT with peft.merge=true (it writes final_merged/), or set model.name_or_path to a full model."
        )
    return path
