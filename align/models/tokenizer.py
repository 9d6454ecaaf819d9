"""Train the embedded default's tokenizer: byte-level BPE with a ChatML-style chat template.

The tokenizer is saved as an ordinary Hugging Face tokenizer folder, so every later stage loads
it with ``AutoTokenizer.from_pretrained`` exactly as it would load a hub model's tokenizer.

Chat template decisions (each one is what TRL and ``transformers`` need downstream):

* The end-of-turn token ``<|im_end|>`` is the EOS token, so generation stops at the end of the
  assistant's turn (``generation_config.eos_token_id``) and TRL's SFT appends the right token.
* Assistant content *and its* ``<|im_end|>`` sit inside ``{% generation %}...{% endgeneration %}``
  so ``assistant_only_loss=True`` trains the model to stop (TRL warns when the end-of-turn token
  falls outside the mask: the loss looks healthy but the model never learns to end).
* A dedicated ``<|pad|>`` token: padding with EOS would mask EOS out of the loss in collators that
  mask by pad id.
* ``<|endoftext|>`` separates raw-text documents during pre-training.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|im_end|>"
BOS_TURN_TOKEN = "<|im_start|>"
DOC_SEP_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [PAD_TOKEN, DOC_SEP_TOKEN, BOS_TURN_TOKEN, EOS_TOKEN]

# ChatML layout. The assistant's content and its end-of-turn token are inside the generation
# markers; the newline after <|im_end|> is not (it is never generated: generation stops at EOS).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    Args:
        texts: Training text, one document per item (an iterator is consumed once).
        vocab_size: Target vocabulary size including the 256 byte symbols and the special tokens.
        min_frequency: Minimum pair frequency for a merge.

    Returns:
        A fast tokenizer with ``eos_token=<|im_end|>``, ``pad_token=<|pad|>``, the ChatML chat
        template with generation markers, and ``model_max_length`` left for the caller to set.

    Raises:
        ValueError: If ``vocab_size`` cannot hold the byte alphabet plus the special tokens.
    """
    min_size = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_size:
        raise ValueError(
            f"tokenizer vocab_size={vocab_size} is too small: a byte-level BPE needs at least "
            f"{min_size} entries (256 bytes + {len(SPECIAL_TOKENS)} special tokens). Raise it."
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_non_empty(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[BOS_TURN_TOKEN, DOC_SEP_TOKEN],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def read_lines(path: str | Path) -> Iterator[str]:
    """Yield the non-empty lines of a text file (the tokenizer's training corpus)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        if t and t.strip():
            yield t


# The ChatML turn most chat models' templates render every message with (SmolLM2 among them), and
# the same text with the assistant's content and end-of-turn token inside generation markers. NL is
# the newline as the template writes it: a newline character inside the Jinja string (as SmolLM2's
# does) or the escape ``\\n``.
def _chatml_turns(nl: str) -> tuple[str, str]:
    turn = "{{'<|im_start|>' + message['role'] + '" + nl + "' + message['content'] + '<|im_end|>' + '" + nl + "'}}"
    marked = ("{% if message['role'] == 'assistant' %}"
              "{{ '<|im_start|>assistant" + nl + "' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
              "{% endgeneration %}{{ '" + nl + "' }}{% else %}" + turn + "{% endif %}")
    return turn, marked


def training_chat_template(template: str | None) -> str | None:
    """``template`` with ``{% generation %}`` markers around each assistant reply and its end-of-turn
    token (what ``assistant_only_loss`` needs), rendering the same text; ``None`` if it has no
    ChatML turn this knows how to mark. A template that already has markers is returned as is."""
    if not template:
        return None
    if "generation %}" in template:
        return template
    for nl in ("\n", "\\n"):
        turn, marked = _chatml_turns(nl)
        if template.count(turn) == 1:
            return template.replace(turn, marked)
    return None
