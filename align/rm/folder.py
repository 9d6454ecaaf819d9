"""The reward model's folder contract: what ``stages/rm.py`` writes and every other stage reads.

``outputs/<run>/rm/`` holds

    final/                          a one-label ``*ForSequenceClassification`` (full weights)
    final/reward_normalization.json ``{"mean": m, "std": s}`` of the reward on held-out policy samples
    metrics.json                    the report card, with the quality gate (``gate/passed``, ``gate/failed``)

Writers: :func:`save_reward_model` (``final/``) and :func:`write_normalization`.
Readers: :func:`load_reward_model`, :func:`read_normalization`, :func:`check_gate` and
:class:`RewardScorer`, used by ``ppo``, ``eval`` and the bench scripts. One policy for missing
files: a reward model asked to be normalized must have its normalization file (an error with the
fix otherwise); a folder without ``metrics.json`` (a hub reward model) has no known gate, which is
logged, not refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

NORMALIZATION_FILE = "reward_normalization.json"


def load_reward_model(path: str, pad_token_id: int, dtype: torch.dtype | str = "auto",
                      device: torch.device | str | None = None, new_head: bool = False, **kwargs) -> torch.nn.Module:
    """A scalar ``AutoModelForSequenceClassification`` (one label) whose head pools the last non-pad token.

    Every reader of a reward model (``ppo``, ``eval``, :class:`RewardScorer`) loads a trained one:
    ``path`` must be a sequence classifier with all its weights. Only the ``rm`` stage, which
    starts a reward model from a causal LM, passes ``new_head=True``: then the head (the weights
    outside the backbone, ``score.*``) is expected to be new, and nothing else may be. With pad ==
    EOS (most real tokenizers) the pooled position is the last real token, found from the
    attention mask, not the first pad.

    Args:
        path: A model folder or hub id.
        pad_token_id: Written into the config: the head reads the last token before it.
        dtype: ``"auto"``, a dtype name or a ``torch.dtype``.
        device: Where the model goes (left where it loads when None).
        new_head: The head is created here (the ``rm`` stage); else the folder must have one.
        **kwargs: Passed to ``from_pretrained`` (``trust_remote_code``, ``quantization_config``, ...).

    Raises:
        CheckpointError: ``path`` is a causal LM where a trained reward model is needed (its score
            head would be random), or weights other than an expected new head are missing.
    """
    from transformers import AutoModelForSequenceClassification

    from align.models.loading import (
        CAUSAL_LM,
        SEQUENCE_CLASSIFIER,
        _check_local_path,
        check_architecture,
        check_loading_info,
        resolve_dtype,
    )

    _check_local_path(str(path))
    check_architecture(str(path), SEQUENCE_CLASSIFIER, kwargs.get("trust_remote_code", False),
                       also=(CAUSAL_LM,) if new_head else ())
    dtype = resolve_dtype(dtype) if isinstance(dtype, str) else dtype
    model, info = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype,
                                                                      output_loading_info=True, **kwargs)
    # A new head may only be missing when one is being created: the weights outside the backbone
    # (``model.*`` for Llama; ``score.weight`` is the head). A missing backbone weight is never new.
    backbone = model.base_model_prefix + "."
    check_loading_info(str(path), model, info, allowed_missing=lambda key: new_head and not key.startswith(backbone))
    model.config.pad_token_id = pad_token_id
    return model if device is None else model.to(device)


def save_reward_model(model, tokenizer, stage_dir: str | Path, peft_method: str):
    """Save ``stage_dir/final`` as full weights and return the model saved there.

    A PEFT adapter is saved to ``final_adapter/`` and merged into ``final/``: the adapter's base
    config is the causal LM's (``num_labels=2``), so the adapter folder alone would not reload as a
    one-label reward model with plain ``transformers`` (:func:`align.models.adapters.save_full_final`).
    """
    from align.models.adapters import save_full_final

    return save_full_final(model, tokenizer, Path(stage_dir), peft_method, "AutoPeftModelForSequenceClassification",
                           pad_token_id=tokenizer.pad_token_id, num_labels=1)


def write_normalization(final_dir: str | Path, mean: float, std: float) -> Path:
    """Store the reward mean/std on held-out policy samples beside the model (PPO and eval normalize by it)."""
    from align.outputs import atomic_write_text

    if not std > 0:
        raise ValueError(f"reward normalization needs std > 0, got {std} (every held-out sample scored alike).")
    path = Path(final_dir) / NORMALIZATION_FILE
    atomic_write_text(path, json.dumps({"mean": float(mean), "std": float(std)}, indent=2) + "\n")
    return path


def read_normalization(rm_path: str | Path, normalize: bool = True) -> tuple[float, float]:
    """``(mean, std)`` to normalize the reward model's scores by: ``(r - mean) / std``.

    Args:
        rm_path: The reward model's folder.
        normalize: False gives ``(0, 1)``: raw scores.

    Raises:
        ValueError: ``normalize`` and no (or a broken) normalization file, with the fix.
    """
    if not normalize:
        return 0.0, 1.0
    path = Path(rm_path) / NORMALIZATION_FILE
    if not path.exists():
        raise ValueError(f"{path} does not exist, so reward-model scores cannot be normalized (stages/rm.py "
                         "writes it). Re-run `make rm`, or set the stage's reward_model.normalize=false "
                         "to use raw scores.")
    try:
        stats = json.loads(path.read_text())
        mean, std = float(stats["mean"]), float(stats["std"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected {{\"mean\": <number>, \"std\": <number>}} ({e}); re-run `make rm`.") from e
    if not std > 0:
        raise ValueError(f"{path}: std must be > 0, got {std}; re-run `make rm`.")
    return mean, std


def read_gate(rm_path: str | Path) -> dict | None:
    """The quality gate the ``rm`` stage recorded beside ``final/`` (``gate/passed``, ``gate/failed``), or None."""
    metrics_file = Path(rm_path).parent / "metrics.json"
    if not metrics_file.exists():
        return None
    m = json.loads(metrics_file.read_text())
    return {"gate/passed": bool(m.get("gate/passed", True)), "gate/failed": m.get("gate/failed", "")}


def check_gate(rm_path: str | Path, allow_failed: bool, override_key: str = "ppo.allow_failed_rm") -> None:
    """Refuse a reward model whose stage recorded ``gate/passed: false``, unless ``allow_failed``.

    Raises:
        ValueError: The gate failed and ``allow_failed`` is False (names ``override_key``).
    """
    gate = read_gate(rm_path)
    if gate is None:
        log.warning("no metrics.json beside %s: the reward model's quality gate is unknown", rm_path)
        return
    if gate["gate/passed"]:
        return
    why = gate["gate/failed"] or "see its metrics.json"
    if not allow_failed:
        raise ValueError(
            f"The reward model {rm_path} failed its quality gate ({why}). Optimizing against a reward "
            f"it cannot trust is refused. Improve the reward model, or pass {override_key}=true to use it anyway."
        )
    log.warning("using a reward model that failed its gate (%s): %s=true", why, override_key)


class RewardScorer:
    """A reward model folder as a function of (prompt, response) texts: normalized scores.

    Args:
        path: The reward model's folder.
        dtype: Weight dtype.
        max_length: Prompt + response tokens scored (left-truncated, keeps the response).
        batch_size: Sequences per forward pass.
        normalize: Divide by the folder's normalization (required then, see :func:`read_normalization`).
    """

    def __init__(self, path: str, dtype: str = "auto", max_length: int | None = None, batch_size: int = 64,
                 normalize: bool = True) -> None:
        from align.models.loading import load_tokenizer

        self.tokenizer = load_tokenizer(path)
        self.model = load_reward_model(path, self.tokenizer.pad_token_id, dtype)
        self.max_length, self.batch_size = max_length, batch_size
        self.normalized = normalize
        self.mean, self.std = read_normalization(path, normalize)

    def __call__(self, prompts: list[str], texts: list[str]) -> list[float]:
        from align.rm.model import score_batch

        pairs = [([{"role": "user", "content": p}], t) for p, t in zip(prompts, texts, strict=True)]
        raw = score_batch(self.model, self.tokenizer, pairs, self.max_length, self.batch_size)
        return [(r - self.mean) / self.std for r in raw]
