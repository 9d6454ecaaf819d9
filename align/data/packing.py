"""Pack raw text into fixed-length blocks for causal-LM (pre-)training (``run_clm.py`` style)."""

from __future__ import annotations

from collections.abc import Iterable

from datasets import Dataset
from transformers import PreTrainedTokenizerBase


def separator_id(tokenizer: PreTrainedTokenizerBase, sep_token: str = "<|endoftext|>") -> int:
    """The document separator: ``sep_token`` when the vocabulary has it, else EOS."""
    tid = tokenizer.convert_tokens_to_ids(sep_token)
    if tid is None or tid == tokenizer.unk_token_id:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither <|endoftext|> nor an EOS token to separate documents.")
        return tokenizer.eos_token_id
    return tid


def pack_texts(
    texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, block_size: int, sep_id: int
) -> tuple[Dataset, int]:
    """Tokenize documents, join them with ``sep_id`` and cut the stream into ``block_size`` blocks.

    The remainder shorter than a block is dropped (fewer than ``block_size`` tokens) and counted in
    the second return value, so nothing disappears unreported.

    Returns:
        A dataset with ``input_ids`` (each exactly ``block_size`` long) and the number of tokens
        dropped from the tail.

    Raises:
        ValueError: If the text yields less than one block.
    """
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(sep_id)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise ValueError(
            f"the corpus has {len(stream)} tokens, less than one block of data.block_size={block_size}; "
            "add text or lower the block size."
        )
    blocks = [stream[i * block_size : (i + 1) * block_size] for i in range(n_blocks)]
    return Dataset.from_dict({"input_ids": blocks}), len(stream) - n_blocks * block_size
