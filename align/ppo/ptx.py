"""PPO-ptx: the SFT loss on demonstrations mixed into the PPO update, against forgetting.

InstructGPT (Ouyang et al. 2022, eq. 2) adds ``gamma * E_{x ~ D_pretrain}[log pi(x)]`` to the RL
objective; we use the SFT demonstrations (assistant tokens only, as in SFT) by default, or any
conversational SFT file. Batches cycle through the demonstrations in a seeded order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from align.data.checks import BadRow
from align.data.errors import BAD_ROW_MODES, DataError, LoadReport, check_choice, check_positive
from align.data.rows import check_rows
from align.data.sft import SFTRowState, check_sft_row
from align.data.source import describe_source

NO_REPLY_HINT = (
    "Raise the demonstration length (max_prompt_length + generation.max_new_tokens in ppo), shorten the "
    "row, or pass on_bad_row=skip to skip such rows."
)


@dataclass(frozen=True)
class _Demonstration:
    ids: list[int]  # truncated to max_length
    mask: list[int]  # 1 on assistant tokens
    length: int  # before truncation


def load_demonstrations(
    source: str,
    tokenizer,
    max_length: int,
    *,
    split: str = "train",
    on_bad_row: str = "error",
    config_prefix: str = "",
) -> tuple[list[tuple[list[int], list[int]]], LoadReport]:
    """``(input_ids, assistant_mask)`` per demonstration, truncated to ``max_length`` tokens.

    Rows are read by the strict row loop and checked by SFT's own row check
    (:func:`align.data.sft.check_sft_row`): any conversational SFT format (``messages``,
    ``sharegpt``, ``alpaca``, ``prompt_completion``; a plain prompt/completion pair becomes a user
    and an assistant message), the same codes (``unknown_role``, ``empty_content``,
    ``last_not_assistant``, ``control_token``, ...), counted the same way. A ``text`` row is a bad
    row (``not_conversational``: it has no assistant tokens to learn). A row longer than
    ``max_length`` is truncated and counted in ``report.truncated``; a row with no assistant token
    in its first ``max_length`` tokens is a bad row (``no_assistant_tokens``): raised, or skipped
    and counted with ``on_bad_row="skip"``.

    Args:
        source: A conversational SFT dataset (see :mod:`align.data.source`), e.g. the SFT train file.
        tokenizer: The policy's tokenizer; its chat template must mark assistant tokens
            (``{% generation %}``).
        max_length: Longest demonstration, in tokens.
        split: Split to read.
        on_bad_row: ``"error"`` raises at the first bad row; ``"skip"`` drops bad rows and counts
            them by code.
        config_prefix: Where the caller's config holds ``on_bad_row`` (``"data."`` in ppo), so
            error hints name the override that works.

    Returns:
        ``(rows, report)``: the ``(input_ids, assistant_mask)`` lists in source order and the
        :class:`LoadReport`.

    Raises:
        DataError: A bad row with ``on_bad_row="error"`` (file, line, field and fix named).
        ValueError: Bad arguments, a chat template that marks no assistant token, or no
            demonstration is left.
    """
    check_choice("on_bad_row", on_bad_row, BAD_ROW_MODES)
    check_positive("max_length", max_length)
    _check_template_marks_assistant(tokenizer)
    report = LoadReport(describe_source(source, split))
    state = SFTRowState(format=None, tokenizer=tokenizer)

    def check(raw, bad: BadRow) -> _Demonstration:
        messages = _messages(check_sft_row(raw, bad, state, report), bad)
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        if not any(mask[:max_length]):
            reason = (f"no assistant token within the first max_length={max_length} of its {len(ids)} tokens, "
                      "so nothing to learn from")
            raise bad(None, "no_assistant_tokens", reason, NO_REPLY_HINT)
        return _Demonstration(ids[:max_length], mask[:max_length], len(ids))

    def too_long(demo: _Demonstration, bad: BadRow) -> DataError | None:
        if demo.length <= max_length:
            return None
        return bad(None, "too_long", f"{demo.length} tokens, longer than max_length={max_length}")

    demos = check_rows(source, split, check, report, on_bad_row=on_bad_row, too_long=too_long, on_too_long="truncate",
                       config_prefix=config_prefix)
    report.format = state.format
    if not demos:
        raise ValueError(f"{source}: no demonstration left for PPO-ptx ({report.summary()}).")
    return [(d.ids, d.mask) for d in demos], report


def _messages(clean: dict, bad: BadRow) -> list[dict]:
    """The conversation of a clean SFT row (see :func:`load_demonstrations`)."""
    if "messages" in clean:
        return clean["messages"]
    if "prompt" in clean:
        if isinstance(clean["prompt"], list):
            return clean["prompt"] + clean["completion"]
        return [{"role": "user", "content": clean["prompt"]}, {"role": "assistant", "content": clean["completion"]}]
    raise bad(
        "text",
        "not_conversational",
        "a plain-text row has no assistant turn, and PPO-ptx learns the assistant's tokens only",
        "Point data.ptx at conversational rows (messages, ShareGPT, Alpaca or prompt/completion), or pass "
        "on_bad_row=skip to skip such rows.",
    )


def _check_template_marks_assistant(tokenizer) -> None:
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    enc = tokenizer.apply_chat_template(probe, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    if not any(enc["assistant_masks"]):
        raise ValueError(
            f"the tokenizer's chat template ({type(tokenizer).__name__}) marks no assistant token "
            "({% generation %} ... {% endgeneration %} around the assistant's content), so PPO-ptx has nothing "
            "to learn: use a template with generation markers, or set ppo.ptx_coef=0."
        )


class DemonstrationBatches:
    """Endless batches of demonstrations in a seeded order; the position is part of the PPO state."""

    def __init__(self, rows: list[tuple[list[int], list[int]]], batch_size: int, pad_token_id: int, seed: int) -> None:
        self.rows, self.batch_size, self.pad, self.seed = rows, batch_size, pad_token_id, seed
        self.position = 0
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch, its permutation)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._order = (epoch, torch.randperm(len(self.rows), generator=gen))
        return self._order[1]

    def next(self, device) -> tuple[Tensor, Tensor, Tensor]:
        """``input_ids``, ``attention_mask`` and ``labels`` (-100 off the assistant tokens), right-padded."""
        batch = []
        for _ in range(self.batch_size):
            epoch, index = divmod(self.position, len(self.rows))
            batch.append(self.rows[int(self._permutation(epoch)[index])])
            self.position += 1
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [self.pad] * (width - len(i)) for i, _ in batch], device=device)
        attn = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device)
        labels = torch.tensor([[t if m else -100 for t, m in zip(i, mk)] + [-100] * (width - len(i)) for i, mk in batch],
                              device=device)
        return ids, attn, labels


def ptx_loss(model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy on the labelled (assistant) tokens."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
