import pytest

from align.data.packing import pack_texts, separator_id
from align.models.tokenizer import train_tokenizer


def test_blocks_are_full_and_tail_counted():
    tok = train_tokenizer(["The fox is red."] * 20, vocab_size=300)
    sep = separator_id(tok)
    assert tok.convert_ids_to_tokens(sep) == "<|endoftext|>"
    texts = ["The fox is red."] * 10
    per_doc = len(tok("The fox is red.", add_special_tokens=False)["input_ids"]) + 1
    ds, tail = pack_texts(texts, tok, block_size=7, sep_id=sep)
    assert all(len(ids) == 7 for ids in ds["input_ids"])
    assert len(ds) * 7 + tail == per_doc * 10  # every token is in a block or counted as tail
    with pytest.raises(ValueError, match="less than one block"):
        pack_texts(["hi"], tok, block_size=1000, sep_id=sep)
