"""The four PPO models in two memory modes, and the forward passes that read them.

``full``: four separate models: the trainable policy (from SFT), the frozen reference (a second
copy of SFT), the trainable value model (from the reward model, InstructGPT) and the frozen reward
model. ``lora``: two frozen bases. The SFT base carries the policy's LoRA adapter and *is* the
reference with the adapter disabled; the reward-model base carries the value model's LoRA adapter
and its own copy of the scalar head, and *is* the reward model with the adapter disabled. No
second copy of either base is held (Hu et al. 2021; TRL <= 1.12 did this for the reference only).

Forward passes take a :class:`~align.ppo.rollout.Rollout` (left-padded prompts, right-padded
responses, explicit position ids) and return ``[B, T]`` tensors aligned with ``responses``: the
logits at position ``P - 1 + t`` predict response token ``t``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from align.distributed import whole_parameters
from align.models.loading import is_base_parameter, params_checksum
from align.ppo.rollout import Rollout
from align.rm.folder import load_reward_model

log = logging.getLogger(__name__)
MODES = ("full", "lora")


@dataclass
class PPOModels:
    """Policy and value model (trainable), and access to the frozen reference and reward model.

    Use :meth:`reference` and :meth:`reward` as context managers: in ``lora`` mode they switch the
    adapter off for the duration of the block.
    """

    mode: str
    policy: torch.nn.Module
    value: torch.nn.Module
    ref_model: torch.nn.Module | None = None     # full mode only
    reward_model: torch.nn.Module | None = None  # full mode only

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        if self.mode == "full":
            yield self.ref_model
        else:
            with self.policy.disable_adapter():
                yield self.policy

    @contextlib.contextmanager
    def reward(self) -> Iterator[torch.nn.Module]:
        if self.mode == "full":
            yield self.reward_model
        else:
            with self.value.disable_adapter():
                yield self.value

    def trainable(self, which: str) -> list[torch.nn.Parameter]:
        model = self.policy if which == "policy" else self.value
        return [p for p in model.parameters() if p.requires_grad]


def load_ppo_models(
    policy_path: str,
    reward_path: str,
    pad_token_id: int,
    mode: str = "full",
    policy_lora: dict | None = None,
    value_lora: dict | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> PPOModels:
    """Load the models for ``mode`` (``full`` or ``lora``) from the SFT and reward-model folders.

    Args:
        policy_path: A full causal-LM folder (the SFT model).
        reward_path: A full sequence-classification folder with one label (the reward model).
        pad_token_id: Written into the reward/value configs (their heads pool the last non-pad token).
        mode: ``full`` or ``lora``.
        policy_lora: ``peft.LoraConfig`` keyword arguments for the policy (``lora`` mode).
        value_lora: The same for the value model (``task_type`` is set to ``SEQ_CLS``).
        dtype: Weight dtype.
        device: Where the models live.
    """
    from align.models.loading import load_causal_lm

    if mode not in MODES:
        raise ValueError(f"ppo.mode={mode!r} is not one of {', '.join(MODES)}.")

    def causal_lm():
        return load_causal_lm(policy_path, dtype).to(device)  # refuses another kind of model, or missing weights

    def scalar_model():
        return load_reward_model(reward_path, pad_token_id, dtype, device)

    if mode == "full":
        ref_model, reward_model = frozen(causal_lm()), frozen(scalar_model())
        return PPOModels("full", causal_lm(), scalar_model(), ref_model, reward_model)

    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(causal_lm(), LoraConfig(**{**(policy_lora or {}), "task_type": "CAUSAL_LM"}))
    # SEQ_CLS makes PEFT keep a trainable copy of the scalar head (modules_to_save): the value
    # head starts as the reward head, and disabling the adapter gives back the reward model.
    value = get_peft_model(scalar_model(), LoraConfig(**{**(value_lora or {}), "task_type": "SEQ_CLS"}))
    return PPOModels("lora", policy, value)


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with every parameter's ``requires_grad`` off (the reference and the
    reward model); returned for chaining."""
    model.eval()
    model.requires_grad_(False)
    return model


def reference_fingerprint(models: PPOModels) -> float:
    """Checksum of the reference's weights (the frozen base in lora mode), which must not move.
    Under ZeRO-3 a collective: every process gathers the shards."""
    with models.reference() as ref, whole_parameters(ref):
        return params_checksum(ref, include=is_base_parameter)


def _backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body and the scalar head of a ``*ForSequenceClassification`` (PEFT or not)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(inner, inner.base_model_prefix)
    head = getattr(inner, "score", None)
    head = head if head is not None else getattr(inner, "classifier", None)
    if head is None:
        raise TypeError(f"{type(inner).__name__} has no `score`/`classifier` head to read values from.")
    return body, head


def response_logits(model: torch.nn.Module, rollout: Rollout, temperature: float = 1.0) -> Tensor:
    """``[B, T, V]`` logits (divided by ``temperature``) that predict each response token.

    Only the last ``T + 1`` positions go through the LM head (``logits_to_keep``): with a real
    vocabulary (150k) the head over prompt positions would cost more than the layers.
    """
    t = rollout.responses.shape[1]
    out = model(input_ids=rollout.query_responses, attention_mask=rollout.attention_mask,
                position_ids=rollout.position_ids, use_cache=False, logits_to_keep=t + 1)
    logits = out.logits[:, :-1]
    return logits / temperature if temperature != 1.0 else logits


def logprobs_from_logits(logits: Tensor, tokens: Tensor) -> Tensor:
    """``[B, T]`` log-probability of ``tokens`` under ``softmax(logits)``, in fp32."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def response_logprobs(model: torch.nn.Module, rollout: Rollout, temperature: float = 1.0) -> Tensor:
    """``[B, T]`` log-probabilities of the response tokens (the sampling distribution at ``temperature``)."""
    return logprobs_from_logits(response_logits(model, rollout, temperature), rollout.responses)


def response_values(value_model: torch.nn.Module, rollout: Rollout) -> Tensor:
    """``[B, T]`` value predictions: the scalar head on every hidden state, read at position
    ``P - 1 + t``, the state in which response token ``t`` is chosen."""
    body, head = _backbone_and_head(value_model)
    hidden = body(input_ids=rollout.query_responses, attention_mask=rollout.attention_mask,
                  position_ids=rollout.position_ids, use_cache=False).last_hidden_state
    p = rollout.context_length
    return head(hidden[:, p - 1 : -1]).squeeze(-1).float()


def reward_suffix_ids(tokenizer) -> list[int]:
    """Token ids the chat template writes after an assistant turn's EOS (e.g. ChatML's newline).

    The reward model was trained on full chat-template renderings; a response scored with the
    template's closing tokens is exactly what it saw, without detokenizing and retokenizing.
    """
    from align.rm.model import tokenize_response

    ids, _ = tokenize_response(tokenizer, [{"role": "user", "content": "x"}], "y", None)
    eos = tokenizer.eos_token_id
    if eos not in ids:
        return []
    last = len(ids) - 1 - ids[::-1].index(eos)
    return ids[last + 1 :]


def reward_inputs(rollout: Rollout, eos_token_id: int, pad_token_id: int, suffix: list[int]) -> tuple[Tensor, Tensor]:
    """Right-padded ``[B, L]`` ids and mask of each prompt + response + EOS (if missing) + suffix."""
    rows = []
    qr, mask = rollout.query_responses.tolist(), rollout.attention_mask.tolist()
    for ids, m, ended in zip(qr, mask, rollout.ended.tolist()):
        real = [t for t, keep in zip(ids, m) if keep]
        rows.append(real + ([] if ended else [eos_token_id]) + suffix)
    width = max(len(r) for r in rows)
    device = rollout.query_responses.device
    ids = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows], device=device)
    attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, attn


def sequence_scores(reward_model: torch.nn.Module, rollout: Rollout, eos_token_id: int, pad_token_id: int,
                    suffix: list[int]) -> Tensor:
    """``[B]`` raw reward-model scores of each prompt + response (the head at the last real token)."""
    ids, attn = reward_inputs(rollout, eos_token_id, pad_token_id, suffix)
    body, head = _backbone_and_head(reward_model)
    hidden = body(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
    last = attn.sum(1) - 1
    return head(hidden[torch.arange(ids.shape[0], device=ids.device), last]).squeeze(-1).float()
