"""PPO-ptx: the SFT loss on demonstrations mixed into the PPO update, against forgetting.

InstructGPT (Ouyang et al. 2022, eq. 2) adds ``gamma * E_{x ~ D_pretrain}[log pi(x)]`` to the RL
objective; we use the SFT demonstrations (assistant tokens only, as in SFT) by default, or any
``messages`` rows. Batches cycle through the demonstrations in a seeded order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from align.data.checks import BadRow, check_messages
from align.data.errors import BAD_ROW_MODES, DataError, LoadReport, check_choice, check_positive
from align.data.rows import Skip, check_rows
from align.data.source import describe_source


@dataclass(frozen=True)
class _Demonstration:
    ids: list[int]  # truncated to max_length
    mask: list[int]  # 1 on assistant tokens
    length: int  # before truncation


def load_demonstrations(
    source: str, tokenizer, max_length: int, *, split: str = "train", on_bad_row: str = "error"
) -> tuple[list[tuple[list[int], list[int]]], LoadReport]:
    """``(input_ids, assistant_mask)`` per ``messages`` row, truncated to ``max_length`` tokens.

    Rows are read by the strict row loop and checked as SFT checks messages (roles ``system``,
    ``user``, ``assistant``, non-blank contents). A row longer than ``max_length`` is truncated
    and counted in ``report.truncated``; a row with no assistant token in its first
    ``max_length`` tokens is skipped and counted as ``no_assistant_tokens``, whatever
    ``on_bad_row`` says (it has nothing to learn from).

    Args:
        source: A ``messages`` dataset (see :mod:`align.data.source`), e.g. the SFT train file.
        tokenizer: The policy's tokenizer; its chat template must mark assistant tokens
            (``{% generation %}``).
        max_length: Longest demonstration, in tokens.
        split: Split to read.
        on_bad_row: ``"error"`` raises at the first bad row; ``"skip"`` drops bad rows and counts
            them by code.

    Returns:
        ``(rows, report)``: the ``(input_ids, assistant_mask)`` lists in source order and the
        :class:`LoadReport`.

    Raises:
        DataError: A bad row with ``on_bad_row="error"`` (file, line, field and fix named).
        ValueError: Bad arguments, or no demonstration with assistant tokens is left.
    """
    check_choice("on_bad_row", on_bad_row, BAD_ROW_MODES)
    check_positive("max_length", max_length)
    report = LoadReport(describe_source(source, split), format="messages")

    def check(raw, bad: BadRow) -> _Demonstration | Skip:
        if "messages" not in raw:
            reason = f"missing field 'messages' (the row has keys {sorted(raw)}); PPO-ptx needs chat `messages` rows"
            raise bad("messages", "missing_field", reason)
        messages = check_messages(raw["messages"], "messages", bad, report)
        report.dropped_keys.update(k for k in raw if k != "messages")
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        if not any(mask[:max_length]):
            within = f" within the first max_length={max_length}" if any(mask) else ""
            reason = f"no assistant token{within} ({len(ids)} tokens), so nothing to learn from"
            return Skip(bad("messages", "no_assistant_tokens", reason))
        return _Demonstration(ids[:max_length], mask[:max_length], len(ids))

    def too_long(demo: _Demonstration, bad: BadRow) -> DataError | None:
        if demo.length <= max_length:
            return None
        return bad("messages", "too_long", f"{demo.length} tokens, longer than max_length={max_length}")

    demos = check_rows(source, split, check, report, on_bad_row=on_bad_row, too_long=too_long, on_too_long="truncate")
    if not demos:
        raise ValueError(f"{source}: no demonstration with assistant tokens for PPO-ptx ({report.summary()}).")
    return [(d.ids, d.mask) for d in demos], report


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
