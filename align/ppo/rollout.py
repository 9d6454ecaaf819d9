"""Rollout: sample responses to a batch of prompts, batched with the KV cache and left padding.

The output is a :class:`Rollout`: prompt and response ids side by side, with the masks and
position ids every later forward pass (policy, reference, value) needs. Responses are truncated at
the first EOS and the batch is trimmed to its longest real response, so a batch whose answers all
end early costs nothing for the unused length budget (TRL <= 1.12 always generated the full
``response_length``: it set ``min_new_tokens`` to it).

References: TRL <= 1.12 ``PPOTrainer`` (``batch_generation``), OpenRLHF ``experience_maker``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from align.ppo.rollout_utils import contains_eos, truncate_after_eos


@dataclass
class Rollout:
    """``B`` prompts with their sampled responses.

    Attributes:
        query_responses: ``[B, P + T]`` long: left-padded prompt ids, then right-padded responses.
        attention_mask: ``[B, P + T]`` long: 1 on real prompt tokens and real response tokens.
        position_ids: ``[B, P + T]`` long: positions counted from each row's first real token (left
            padding must not shift them, or teacher forcing disagrees with generation).
        responses: ``[B, T]`` response ids, ``pad`` after the first EOS.
        response_mask: ``[B, T]`` bool, ``True`` up to and including the first EOS.
        ended: ``[B]`` bool, whether the response produced EOS within the length limit.
        context_length: ``P``.
    """

    query_responses: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    responses: Tensor
    response_mask: Tensor
    ended: Tensor
    context_length: int

    def __len__(self) -> int:
        return self.responses.shape[0]

    def select(self, index: Tensor | slice) -> Rollout:
        """The rollouts at ``index`` (rows), every field indexed alike."""
        return Rollout(
            self.query_responses[index], self.attention_mask[index], self.position_ids[index],
            self.responses[index], self.response_mask[index], self.ended[index], self.context_length,
        )

    def response_lengths(self) -> Tensor:
        """``[B]`` real response tokens per row (EOS included)."""
        return self.response_mask.sum(1)


def left_pad(prompts: list[list[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """``[B, P]`` ids and attention mask, each prompt right-aligned so new tokens line up."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("left_pad: every prompt needs at least one token.")
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_token_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids, mask


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids that count only attended tokens: ``cumsum(mask) - 1``, clamped at 0 on padding."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def build_rollout(
    prompt_ids: Tensor, prompt_mask: Tensor, responses: Tensor, eos_token_id: int, pad_token_id: int
) -> Rollout:
    """Assemble a :class:`Rollout` from left-padded prompts and raw generated tokens.

    Truncates after the first EOS, then drops trailing columns no row uses (``T`` becomes the
    longest real response, at least 1).
    """
    responses, response_mask = truncate_after_eos(responses, eos_token_id, pad_token_id)
    ended = contains_eos(responses, eos_token_id)
    width = max(int(response_mask.sum(1).max()), 1)
    responses, response_mask = responses[:, :width], response_mask[:, :width]
    query_responses = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask.long()], dim=1)
    return Rollout(
        query_responses=query_responses, attention_mask=attention_mask,
        position_ids=positions_from_mask(attention_mask), responses=responses,
        response_mask=response_mask, ended=ended, context_length=prompt_ids.shape[1],
    )


@torch.no_grad()
def generate_rollout(
    model,
    prompts: list[list[int]],
    eos_token_id: int,
    pad_token_id: int,
    max_new_tokens: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    row_seeds: list[int] | None = None,
) -> Rollout:
    """Sample (or greedily decode) one response per prompt in a single batched ``generate`` call.

    Sampling is from the full softmax at ``temperature`` (``top_k=0``), the distribution whose
    log-probabilities PPO's ratio uses; ``top_p < 1`` makes them disagree slightly (as in TRL).
    Generation stops when every row has produced EOS. A model with ZeRO-3-partitioned parameters
    generates in lock-step with the other processes (``synced_gpus``): each forward pass gathers
    layer weights from every process, so a process whose rows have ended keeps taking part.

    Args:
        model: A causal LM (or PEFT model). Put into eval mode for the call, restored after.
        prompts: Token ids of each prompt (chat template applied, generation prompt included).
        eos_token_id: The stop token.
        pad_token_id: Left padding for prompts, right padding after EOS.
        max_new_tokens: The response length limit.
        do_sample: ``False`` for greedy decoding (evaluation).
        temperature: Sampling temperature.
        top_p: Nucleus threshold.
        row_seeds: With ``do_sample``, one seed per prompt: each row's randomness is its own
            (:mod:`align.ppo.seeded_sampling`), so the sample does not depend on the batch.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = left_pad(prompts, pad_token_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if do_sample and row_seeds is not None:
        from transformers import LogitsProcessorList

        from align.ppo.seeded_sampling import RowSeededGumbel

        gumbel = RowSeededGumbel(row_seeds, temperature, top_p, prompt_ids.shape[1])
        sampling = {**greedy, "logits_processor": LogitsProcessorList([gumbel])}  # argmax(logits/T + noise)
    elif do_sample:
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    else:
        sampling = greedy
    out = model.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, use_cache=True, synced_gpus=_lock_step(model),
        **sampling,
    )
    model.train(was_training)
    return build_rollout(prompt_ids, prompt_mask, out[:, prompt_ids.shape[1]:], eos_token_id, pad_token_id)


def _lock_step(model) -> bool:
    """Whether generation must run in lock-step: ZeRO-3-partitioned weights and several processes."""
    import torch.distributed as dist

    from align.distributed import is_partitioned

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 and is_partitioned(model)


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Response texts without special tokens, stripped (what the gold scorer and humans read)."""
    lengths = rollout.response_lengths().tolist()
    rows = rollout.responses.tolist()
    return [tokenizer.decode(row[:n], skip_special_tokens=True).strip() for row, n in zip(rows, lengths)]
