"""Batched generation for chat prompts: left padding, KV cache, stop at the EOS (end-of-turn) token."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Generations:
    """Decoded responses and their token-level facts.

    Attributes:
        texts: Decoded responses without special tokens, stripped; one per prompt.
        num_tokens: Response lengths in tokens, up to and including EOS when it was produced.
        ended: Whether each response produced EOS before ``max_new_tokens`` ran out.
    """

    texts: list[str]
    num_tokens: list[int]
    ended: list[bool]


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a single-turn user prompt followed by the assistant header."""
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(enc["input_ids"])


@torch.no_grad()
def generate_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int = 32,
    batch_size: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    desc: str = "generate",
) -> Generations:
    """Generate one response per chat prompt, in batches.

    Args:
        model: A causal LM (a PEFT-wrapped model works too).
        tokenizer: Its tokenizer; needs a chat template, an EOS and a pad token.
        prompts: User messages.
        max_new_tokens: Response length limit in tokens.
        batch_size: Prompts per ``generate`` call.
        do_sample: Sample (with ``temperature``/``top_p``) instead of greedy decoding.
        temperature: Sampling temperature.
        top_p: Nucleus sampling threshold.
        desc: Progress bar label.

    Returns:
        The decoded responses with their token lengths and whether they ended with EOS.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    texts, lengths, ended = [], [], []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
        batch = [chat_prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        width = max(len(ids) for ids in batch)
        # Left padding: every prompt ends at the same column, so new tokens line up.
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            use_cache=True,
            **sampling,
        )
        for row in out[:, width:].tolist():
            n = row.index(eos) + 1 if eos in row else len(row)
            lengths.append(n)
            ended.append(eos in row)
            texts.append(tokenizer.decode(row[:n], skip_special_tokens=True).strip())
    model.train(was_training)
    return Generations(texts=texts, num_tokens=lengths, ended=ended)
