"""PPO-ptx: the SFT loss on demonstrations mixed into the PPO update, against forgetting.

InstructGPT (Ouyang et al. 2022, eq. 2) adds ``gamma * E_{x ~ D_pretrain}[log pi(x)]`` to the RL
objective; we use the SFT demonstrations (assistant tokens only, as in SFT) by default, or any
``messages`` rows. Batches cycle through the demonstrations in a seeded order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from align.data.source import iter_rows


def load_demonstrations(source: str, tokenizer, max_length: int) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, assistant_mask)`` per ``messages`` row, truncated to ``max_length`` tokens."""
    rows = []
    for location, row_no, row in iter_rows(source, "train"):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{location}, row {row_no}, field 'messages': PPO-ptx needs chat `messages` rows.")
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"])[:max_length], list(enc["assistant_masks"])[:max_length]
        if any(mask):
            rows.append((ids, mask))
    if not rows:
        raise ValueError(f"{source}: no demonstration with assistant tokens for PPO-ptx.")
    return rows


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
