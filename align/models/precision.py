"""Resolve mixed precision and device flags for Trainer/TRL configs, deliberately.

CPU gotchas seen with transformers 5.2x / TRL 1.x (both handled here so users never meet them):

* TRL configs default to ``bf16=True``; on a machine without a bf16 GPU, ``TrainingArguments``
  raises unless ``use_cpu=True`` is also set.
* ``fp16=True`` on CPU is accepted and silently ignored (training runs in fp32), so a user who
  asked for fp16 would get numbers they did not ask for. We refuse it with a fix instead.
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def precision_args(precision: str = "auto") -> dict:
    """Return ``{"bf16", "fp16", "use_cpu"}`` for ``TrainingArguments``-derived configs.

    Args:
        precision: ``auto`` (bf16 on a bf16-capable GPU, fp16 on other GPUs, fp32 on CPU),
            ``fp32``, ``bf16`` (CPU autocast works too, slowly) or ``fp16`` (CUDA only).

    Raises:
        ValueError: For an unknown value, or ``fp16`` without a CUDA GPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}.")
    cuda = torch.cuda.is_available()
    if precision == "auto":
        if cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp16" and not cuda:
        raise ValueError(
            "precision=fp16 needs a CUDA GPU: on CPU transformers ignores fp16 silently and "
            "trains in fp32. Use precision=fp32 (the CPU default) or bf16."
        )
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}
