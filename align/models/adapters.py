"""Parameter-efficient fine-tuning: the ``peft`` config group turned into PEFT objects, and saving.

Methods: ``none`` (full fine-tuning), ``lora``, ``qlora`` (4-bit NF4 base via bitsandbytes, LoRA on
top), ``prompt_tuning``, ``prefix_tuning``, ``ia3``. Adapters save as ordinary PEFT folders
(``adapter_config.json`` + ``adapter_model.safetensors``) that ``peft.AutoPeftModelForCausalLM``
loads; ``merge=true`` also writes a merged plain ``transformers`` model beside it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

METHODS = ("none", "lora", "qlora", "prompt_tuning", "prefix_tuning", "ia3")
MERGEABLE = ("lora", "qlora", "ia3")
# Methods whose virtual tokens change sequence positions: incompatible with padding-free packing.
VIRTUAL_TOKEN_METHODS = ("prompt_tuning", "prefix_tuning")


def check_peft_choice(
    method: str, merge: bool, config: object, packing: bool, gradient_checkpointing: bool = False
) -> None:
    """Validate the ``peft`` group before any model is loaded.

    Raises:
        ValueError: Unknown method, a method without a PEFT config, merging a method that has no
            weights to merge into, packing with virtual-token methods, or prefix tuning with
            gradient checkpointing.
        ImportError: ``qlora`` without bitsandbytes installed.
    """
    if method not in METHODS:
        raise ValueError(f"peft.method={method!r} is not one of {', '.join(METHODS)}.")
    if method != "none" and config is None:
        raise ValueError(f"peft.method={method} needs a peft.config node (see conf/peft/{method}.yaml).")
    if merge and method not in MERGEABLE:
        raise ValueError(
            f"peft.merge=true is not possible for peft.method={method}: its trained parameters are "
            f"not weight deltas. Merge works for {', '.join(MERGEABLE)}; set peft.merge=false."
        )
    if method in VIRTUAL_TOKEN_METHODS and packing:
        raise ValueError(
            f"peft.method={method} adds virtual tokens in front of every sequence, which breaks "
            "packed (padding-free) batches. Set trainer.packing=false."
        )
    if method == "prefix_tuning" and gradient_checkpointing:
        # Seen with transformers 5.23 / peft 0.21: the checkpointed re-forward builds the
        # attention mask without the prefix (a size mismatch by num_virtual_tokens in SDPA).
        raise ValueError(
            "peft.method=prefix_tuning does not work with gradient checkpointing (the attention "
            "mask loses the prefix). Set trainer.gradient_checkpointing=false."
        )
    if method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            "peft.method=qlora needs bitsandbytes (>= 0.50 runs on CPU): pip install -e '.[qlora]'."
        )


# bitsandbytes quantizes 4-bit weights in blocks of 64 input features; narrower layers fail at
# the first matmul with an opaque shape error.
NF4_MIN_WIDTH = 64


def check_quantizable(model_config, method: str) -> None:
    """Refuse QLoRA on a model whose layers are narrower than a 4-bit block.

    Raises:
        ValueError: When ``method`` is ``qlora`` and ``hidden_size`` < 64.
    """
    width = getattr(model_config, "hidden_size", None)
    if method == "qlora" and width is not None and width < NF4_MIN_WIDTH:
        raise ValueError(
            f"peft=qlora needs layers at least {NF4_MIN_WIDTH} wide (bitsandbytes 4-bit blocks); "
            f"this model's hidden_size is {width}. Use peft=lora for it."
        )


def quantization_config(quant: dict | None):
    """A ``BitsAndBytesConfig`` from the ``peft.quantization`` node (None when absent)."""
    if not quant:
        return None
    from transformers import BitsAndBytesConfig

    quant = dict(quant)
    if isinstance(quant.get("bnb_4bit_compute_dtype"), str):
        quant["bnb_4bit_compute_dtype"] = getattr(torch, quant["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**quant)


def save_final(
    trainer_model, tokenizer, final_dir: Path, method: str, merge: bool, auto_class: str = "AutoPeftModelForCausalLM"
) -> dict[str, str]:
    """Save the trained model (or adapter) and tokenizer; optionally a merged copy.

    Args:
        trainer_model: The trained model (``PeftModel`` when a PEFT method was used).
        tokenizer: Saved beside it so the folder is self-contained.
        final_dir: ``<stage dir>/final``.
        method: The PEFT method (``none`` saves full weights).
        merge: Also write ``<stage dir>/final_merged`` with the adapter merged in.
        auto_class: The ``peft`` auto class that reloads a QLoRA adapter for merging.

    Returns:
        Paths written, by kind (``final``, and ``merged`` when merging).
    """
    final_dir.mkdir(parents=True, exist_ok=True)
    trainer_model.save_pretrained(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    written = {"final": str(final_dir)}
    if merge and method in MERGEABLE:
        merged_dir = final_dir.parent / "final_merged"
        if method == "qlora":
            merged = merge_quantized(final_dir, auto_class)
        else:
            merged = trainer_model.merge_and_unload()
        merged.save_pretrained(str(merged_dir))
        tokenizer.save_pretrained(str(merged_dir))
        written["merged"] = str(merged_dir)
        log.info("merged model written to %s", merged_dir)
    return written


def save_full_final(
    model, tokenizer, stage_dir: Path, peft_method: str, auto_class: str = "AutoPeftModelForCausalLM",
    pad_token_id: int | None = None, **merge_kwargs,
):
    """Save ``stage_dir/final`` as full weights that plain ``transformers`` loads; return the model saved there.

    The policy stages (PPO, DPO) and the reward model all hand the next stage a full model. Under
    a PEFT method the adapter also goes to ``final_adapter/`` (a ``peft`` folder) and is merged
    into ``final/``; QLoRA merges into a full-precision reload of the base (merging into 4-bit
    weights would round the deltas away).

    Args:
        model: The trained model (``PeftModel`` when ``peft_method`` is not ``none``).
        tokenizer: Saved beside the weights in both folders.
        stage_dir: The stage's output folder.
        peft_method: ``none`` or a mergeable PEFT method.
        auto_class: The ``peft`` auto class that reloads a QLoRA adapter for merging.
        pad_token_id: Written into the merged model's config when given (a sequence-classification
            head pools the last non-pad token).
        merge_kwargs: Passed to :func:`merge_quantized` (e.g. ``num_labels=1``).
    """
    final_dir = Path(stage_dir) / "final"
    if peft_method == "none":
        save_final(model, tokenizer, final_dir, "none", False)
        return model
    adapter_dir = Path(stage_dir) / "final_adapter"
    save_final(model, tokenizer, adapter_dir, peft_method, False)
    if peft_method == "qlora":
        merged = merge_quantized(adapter_dir, auto_class, **merge_kwargs)
    else:
        merged = model.merge_and_unload()
    if pad_token_id is not None:
        merged.config.pad_token_id = pad_token_id
    save_final(merged, tokenizer, final_dir, "none", False)
    return merged


def merge_quantized(adapter_dir: Path, auto_class: str = "AutoPeftModelForCausalLM", **kwargs):
    """Merge a QLoRA adapter into a full-precision copy of its base (merging into 4-bit weights
    would round the deltas away).

    Raises:
        CheckpointError: The adapter folder lacks some of the adapter's weights (PEFT only warns,
            and would merge its fresh initialisation).
    """
    import warnings

    import peft

    from align.errors import CheckpointError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = getattr(peft, auto_class).from_pretrained(str(adapter_dir), dtype=torch.float32, **kwargs)
    for w in caught:
        if "missing adapter keys" in str(w.message):
            raise CheckpointError(f"{adapter_dir}: the PEFT adapter is incomplete ({str(w.message)[:500]}); its "
                                  "missing weights would be merged as freshly initialised ones. Re-save the adapter.")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model.merge_and_unload()
