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

from align.generation import Generations, generate_ids, sampling_args
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
    The ``generate`` call is the project's one (:func:`align.generation.generate_ids`: lock-step
    under ZeRO-3, stop when every row has produced EOS).

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
    processor = None
    if do_sample and row_seeds is not None:
        from transformers import LogitsProcessorList

        from align.ppo.seeded_sampling import RowSeededGumbel

        # argmax(logits / T + noise) over greedy decoding: each row's noise is its own.
        processor = LogitsProcessorList([RowSeededGumbel(row_seeds, temperature, top_p, max(len(p) for p in prompts))])
    sampling = sampling_args(do_sample and row_seeds is None, temperature, 0, top_p)
    prompt_ids, prompt_mask, new = generate_ids(model, prompts, eos_token_id, pad_token_id, max_new_tokens, sampling,
                                                processor)
    return build_rollout(prompt_ids, prompt_mask, new, eos_token_id, pad_token_id)


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Response texts without special tokens, stripped (what the gold scorer and humans read)."""
    lengths = rollout.response_lengths().tolist()
    rows = rollout.responses.tolist()
    return [tokenizer.decode(row[:n], skip_special_tokens=True).strip() for row, n in zip(rows, lengths)]


def rollout_generations(tokenizer, prompts: list[str], prompt_ids: list[list[int]], rollout: Rollout) -> Generations:
    """The rollout's responses as :class:`~align.generation.Generations` (what the eval scorers take)."""
    lengths = rollout.response_lengths().tolist()
    return Generations(prompts=list(prompts), prompt_ids=list(prompt_ids),
                       response_ids=[row[:n] for row, n in zip(rollout.responses.tolist(), lengths)],
                       texts=decode_responses(tokenizer, rollout), ended=rollout.ended.tolist())
