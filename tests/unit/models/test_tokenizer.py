"""The tiny tokenizer: byte-level round trip, chat template, assistant mask, save/load."""

import pytest
from transformers import AutoTokenizer

from align.models.tokenizer import CHAT_TEMPLATE, EOS_TOKEN, PAD_TOKEN, train_tokenizer

TEXTS = ["The fox is red.", "7 plus 12 is 19.", "I am sorry, but I cannot help with that."] * 20
MSGS = [{"role": "user", "content": "What is 7 plus 12?"}, {"role": "assistant", "content": "7 plus 12 is 19."}]


def test_round_trip_any_text_including_unseen_bytes():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    for text in ["The fox is red.", "Zebra ümlaut 🦊 \t tabs", "  leading spaces"]:
        assert tok.decode(tok(text)["input_ids"]) == text


def test_special_tokens_are_single_ids_and_eos_is_end_of_turn():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.pad_token_id != tok.eos_token_id
    assert len(tok(EOS_TOKEN, add_special_tokens=False)["input_ids"]) == 1


def test_assistant_mask_covers_content_and_end_of_turn_only():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    enc = tok.apply_chat_template(MSGS, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    # The loss sees the answer and the EOS that teaches the model to stop, nothing of the prompt.
    assert trained == "7 plus 12 is 19." + EOS_TOKEN


def test_generation_prompt_ends_with_assistant_header():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    text = tok.apply_chat_template(MSGS[:1], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 7 plus 12?<|im_end|>\n<|im_start|>assistant\n"


def test_saved_folder_loads_with_autotokenizer(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == CHAT_TEMPLATE
    assert loaded("The fox is red.")["input_ids"] == tok("The fox is red.")["input_ids"]
    assert loaded.eos_token_id == tok.eos_token_id


def test_too_small_vocab_is_refused():
    import pytest

    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        train_tokenizer(TEXTS, vocab_size=100)


# SmolLM2-135M-Instruct's own chat template (as its GGUF file ships it): ChatML with a default system prompt.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize("newline", ["\n", "\\n"], ids=["newline-character", "escaped"])
def test_training_chat_template_renders_the_same_text_and_masks_replies_with_their_eos(newline):
    from align.models.tokenizer import training_chat_template

    tok = train_tokenizer(TEXTS, vocab_size=300)
    template = SMOLLM2_TEMPLATE.replace("\n", newline)
    marked = training_chat_template(template)
    assert marked != template and "{% generation %}" in marked
    convs = [MSGS, [{"role": "system", "content": "Be brief."}, *MSGS, {"role": "user", "content": "And 1+1?"}]]
    for msgs in convs:
        for gen in (False, True):
            plain = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen, chat_template=template)
            assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen, chat_template=marked) == plain
    assert "You are a helpful AI assistant named SmolLM" in tok.apply_chat_template(
        MSGS, tokenize=False, chat_template=marked)  # the default system prompt is kept
    enc = tok.apply_chat_template(MSGS, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                  chat_template=marked)
    trained = tok.decode([i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m])
    assert trained == "7 plus 12 is 19." + EOS_TOKEN


def test_training_chat_template_keeps_marked_templates_and_refuses_unknown_ones():
    from align.models.tokenizer import training_chat_template

    assert training_chat_template(CHAT_TEMPLATE) == CHAT_TEMPLATE
    assert training_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}") is None
    assert training_chat_template(None) is None
