"""The one generation path: chat prompts, left padding, KV cache, stop at EOS, explicit sampling.

Every stage that generates goes through :func:`generate_ids` (one batched ``model.generate``
call): ``prefs`` samples the reward model's candidates, PPO's rollouts and its monitor
(:func:`align.ppo.rollout.generate_rollout`), ``sft``/``dpo``/``eval`` decode greedily and
sample for the KL, and best-of-n draws its candidates. :func:`generate` batches any number of
text prompts through it and returns :class:`Generations`.

Sampling semantics are explicit (:func:`sampling_args`): a sample comes from the full softmax at
``temperature`` unless ``top_k``/``top_p`` are asked for. transformers fills an unset ``top_k``
with 50 from its global defaults, which truncates the distribution: the KL estimators and PPO's
ratio need samples from the policy itself, and the reward model's candidates should cover what the
policy really says (implementation detail 16).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Generations:
    """Responses to prompts, with the token ids a KL estimate or a reward model needs.

    Attributes:
        prompts: The user prompt of each response (a prompt repeats for several samples; the
            samples of one prompt are consecutive).
        prompt_ids: Chat-template ids of each prompt, ending with the assistant header.
        response_ids: Generated ids up to and including the first EOS (all of them without EOS).
        texts: Decoded responses, special tokens skipped, stripped (what scorers and people read).
        ended: Whether each response produced EOS within the length limit.
    """

    prompts: list[str] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    response_ids: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    ended: list[bool] = field(default_factory=list)

    @property
    def num_tokens(self) -> list[int]:
        """Response lengths in tokens, EOS included when it was produced."""
        return [len(r) for r in self.response_ids]

    def __len__(self) -> int:
        return len(self.texts)

    def extend(self, other: Generations) -> None:
        """Append ``other``'s responses (batches collected into one)."""
        for f in ("prompts", "prompt_ids", "response_ids", "texts", "ended"):
            getattr(self, f).extend(getattr(other, f))

    def take(self, index: list[int]) -> Generations:
        """The responses at ``index``, in that order."""
        return Generations(*([getattr(self, f)[i] for i in index]
                             for f in ("prompts", "prompt_ids", "response_ids", "texts", "ended")))


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a prompt followed by the assistant header: a single user turn, or the
    conversation of a multi-turn prompt (:class:`align.data.prompts.ChatPrompt`'s ``messages``)."""
    messages = getattr(prompt, "messages", None) or [{"role": "user", "content": prompt}]
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(enc["input_ids"])


def sampling_args(do_sample: bool, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> dict:
    """``generate`` keyword arguments with every sampling knob set, so no model default leaks in.

    Args:
        do_sample: Sample; False decodes greedily (the knobs are then unset, as transformers wants).
        temperature: Softmax temperature (> 0).
        top_k: Keep the ``top_k`` most likely tokens; ``0`` keeps all (the full softmax).
        top_p: Nucleus threshold; ``1.0`` keeps all.
    """
    if not do_sample:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if not temperature > 0:
        raise ValueError(f"sampling needs temperature > 0, got {temperature}; use do_sample=False for greedy decoding.")
    if top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need top_k >= 0 (0 = off) and 0 < top_p <= 1; got top_k={top_k}, top_p={top_p}.")
    return {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p}


def left_pad(prompts: list[list[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """``[B, P]`` ids and attention mask, each prompt right-aligned so new tokens line up."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("left_pad: every prompt needs at least one token.")
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_token_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids, mask


@torch.no_grad()
def generate_ids(
    model,
    prompts: list[list[int]],
    eos_token_id: int,
    pad_token_id: int,
    max_new_tokens: int,
    sampling: dict,
    logits_processor=None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One batched ``generate`` call on token-id prompts.

    Generation stops when every row has produced EOS. A model with ZeRO-3-partitioned parameters
    generates in lock-step with the other processes (``synced_gpus``): each forward pass gathers
    layer weights from every process, so a process whose rows have ended keeps taking part.

    Args:
        model: A causal LM (or PEFT model); put into eval mode for the call, restored after.
        prompts: Token ids of each prompt (chat template applied, generation prompt included).
        eos_token_id: The stop token.
        pad_token_id: Left padding for prompts (and what ``generate`` pads ended rows with).
        max_new_tokens: The response length limit.
        sampling: From :func:`sampling_args`.
        logits_processor: Extra ``LogitsProcessorList`` (PPO's row-seeded sampling).

    Returns:
        ``(prompt_ids [B, P], prompt_mask [B, P], new_tokens [B, <= max_new_tokens])`` on the model's device.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = left_pad(prompts, pad_token_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    extra = {"logits_processor": logits_processor} if logits_processor is not None else {}
    out = model.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, use_cache=True, synced_gpus=_lock_step(model),
        **sampling, **extra,
    )
    model.train(was_training)
    return prompt_ids, prompt_mask, out[:, prompt_ids.shape[1]:]


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_per_prompt: int = 1,
    desc: str = "generate",
) -> Generations:
    """Responses to chat prompts, greedy or sampled, ``num_per_prompt`` per prompt, in batches.

    Args:
        model: A causal LM (a PEFT-wrapped model works too).
        tokenizer: Its tokenizer; needs a chat template, an EOS and a pad token.
        prompts: User messages.
        max_new_tokens: Response length limit in tokens.
        batch_size: Sequences per ``generate`` call.
        do_sample, temperature, top_k, top_p: See :func:`sampling_args` (full softmax by default).
        num_per_prompt: Responses per prompt (consecutive in the result). Seed the global RNG
            before sampling.
        desc: Progress bar label.
    """
    if num_per_prompt < 1 or batch_size < 1:
        raise ValueError(f"need num_per_prompt >= 1 and batch_size >= 1; got {num_per_prompt}, {batch_size}.")
    sampling = sampling_args(do_sample, temperature, top_k, top_p)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids_of = {p: chat_prompt_ids(tokenizer, p) for p in dict.fromkeys(prompts)}
    flat = [p for p in prompts for _ in range(num_per_prompt)]
    out = Generations()
    for start in tqdm(range(0, len(flat), batch_size), desc=desc, leave=False):
        batch = flat[start : start + batch_size]
        rows = [ids_of[p] for p in batch]
        _, _, new = generate_ids(model, rows, eos, pad, max_new_tokens, sampling)
        for p, ids, row in zip(batch, rows, new.tolist()):
            n = row.index(eos) + 1 if eos in row else len(row)
            out.prompts.append(p)
            out.prompt_ids.append(ids)
            out.response_ids.append(row[:n])
            out.ended.append(eos in row)
            out.texts.append(tokenizer.decode(row[:n], skip_special_tokens=True).strip())
    return out


def _lock_step(model) -> bool:
    """Whether generation must run in lock-step: ZeRO-3-partitioned weights and several processes."""
    import torch.distributed as dist

    from align.distributed import is_partitioned

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 and is_partitioned(model)
