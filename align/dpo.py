"""Direct preference optimisation on TRL's ``DPOTrainer``: loss variants, reference modes, data, KL.

The DPO objective itself is TRL's (``DPOTrainer._compute_loss``, TRL 1.16); this module chooses
and checks its settings, feeds it pairs it will not truncate or drop unseen, and measures the
trained policy against its reference.

Loss variants (``dpo.loss``), each a set of ``DPOConfig`` fields (:func:`loss_args`), with
``delta = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))`` summed over response tokens:

* ``sigmoid``: DPO, ``-log sigmoid(beta * delta)`` (Rafailov et al. 2023, eq. 7).
* ``ipo``: IPO, ``(delta / n_tokens - 1 / (2 beta))^2`` (Azar et al. 2023, eq. 17; TRL averages the
  log-ratios per token).
* ``cdpo``: conservative DPO, labels flipped with probability ``eps = dpo.label_smoothing``:
  ``-(1 - eps) log sigmoid(beta delta) - eps log sigmoid(-beta delta)`` (Mitchell 2023, "A note
  on DPO with noisy preferences"). TRL 1.16 dropped label smoothing from ``sigmoid``, so it is
  rebuilt exactly from TRL's own terms: ``2(1 - eps) * sigmoid - (1 - 2 eps) * robust`` with
  ``label_smoothing = eps`` (worked out in :func:`loss_args`).
* ``hinge``: SLiC, ``max(0, 1 - beta delta)`` (Zhao et al. 2023, eq. 6).
* ``robust``: robust DPO, ``[-(1 - eps) log s(beta delta) + eps log s(-beta delta)] / (1 - 2 eps)``,
  an unbiased loss under label noise ``eps`` (Chowdhury et al. 2024, eq. 8).

SimPO and ORPO are reference-free objectives that TRL 1.16 offers only in ``trl.experimental``
(``CPOTrainer`` with ``loss_type="simpo"``, ``ORPOTrainer``): different trainers with their own
tokenisation and truncation. They are refused here with that explanation (:func:`check_dpo_choice`).

Reference modes (``dpo.reference``), :data:`REFERENCES`:

* ``copy``: a separate frozen copy of the starting model is loaded and run beside the policy.
* ``adapter``: with LoRA/QLoRA, the policy's own base with the adapters disabled is the reference
  (TRL's behaviour for ``ref_model=None`` with a PEFT model): no second copy of the weights.
* ``precomputed``: the reference log-probs of every train/validation pair are computed once
  before training (``DPOConfig.precompute_ref_log_probs``) and read from the dataset; no
  reference model is held while training.
"""

from __future__ import annotations

import logging

from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl import DPOTrainer

from align.data.pairs import PAIR_RULES, to_pairs
from align.data.preferences import RankedExample
from align.rm.model import tokenize_response

log = logging.getLogger(__name__)

LOSSES = ("sigmoid", "ipo", "cdpo", "hinge", "robust")
REFERENCE_FREE = ("simpo", "orpo")
REFERENCES = ("copy", "adapter", "precomputed")
ADAPTER_PEFT = ("lora", "qlora")
# Methods whose trained parameters are not weight deltas cannot be merged into a full final/.
DPO_PEFT = ("none", "lora", "qlora", "ia3")


def check_dpo_choice(
    loss: str, reference: str, peft_method: str, label_smoothing: float, beta: float, pair_rule: str = "best_vs_rest"
) -> None:
    """Validate the loss / reference / PEFT / pair-rule combination before any model is loaded.

    Raises:
        ValueError: An unknown or unavailable loss, an unknown reference mode or pair rule, ``adapter``
            without LoRA/QLoRA, a PEFT method that cannot be merged into a full ``final/``, or a
            label smoothing / beta outside its range.
    """
    if loss in REFERENCE_FREE:
        raise ValueError(
            f"dpo.loss={loss} is not available in this stage: TRL 1.16 offers "
            f"{'SimPO as CPOTrainer(loss_type=simpo)' if loss == 'simpo' else 'ORPO as ORPOTrainer'} only in "
            "trl.experimental, a separate reference-free trainer with its own tokenisation and truncation. "
            f"Use one of {', '.join(LOSSES)}."
        )
    if loss not in LOSSES:
        raise ValueError(f"dpo.loss={loss!r} is not one of {', '.join(LOSSES)}.")
    if pair_rule not in PAIR_RULES:
        raise ValueError(f"dpo.pair_rule={pair_rule!r} is not one of {', '.join(PAIR_RULES)} (see align/data/pairs.py).")
    if reference not in REFERENCES:
        raise ValueError(f"dpo.reference={reference!r} is not one of {', '.join(REFERENCES)}.")
    if reference == "adapter" and peft_method not in ADAPTER_PEFT:
        raise ValueError(
            f"dpo.reference=adapter uses the policy's base with its LoRA adapters disabled, so it needs "
            f"peft=lora or peft=qlora; got peft={peft_method}. Use dpo.reference=copy or precomputed, or add peft=lora."
        )
    if peft_method not in DPO_PEFT:
        raise ValueError(
            f"peft={peft_method} is not supported for DPO: final/ must be a full causal LM and its trained "
            f"parameters cannot be merged into the weights. Use one of {', '.join(DPO_PEFT)}."
        )
    if not beta > 0:
        raise ValueError(f"dpo.beta={beta} must be > 0 (it scales the implicit reward; 0.1 is the usual start).")
    if loss in ("cdpo", "robust") and not 0.0 < label_smoothing < 0.5:
        raise ValueError(
            f"dpo.loss={loss} needs 0 < dpo.label_smoothing < 0.5 (the probability that a label is flipped); "
            f"got {label_smoothing}. Try 0.1."
        )
    if loss not in ("cdpo", "robust") and label_smoothing:
        raise ValueError(
            f"dpo.label_smoothing={label_smoothing} has no effect with dpo.loss={loss} in TRL 1.16; use "
            "dpo.loss=cdpo (conservative DPO) or robust, or set dpo.label_smoothing=0."
        )


def loss_args(loss: str, label_smoothing: float = 0.0) -> dict:
    """``DPOConfig`` fields for a loss variant of :data:`LOSSES`.

    Conservative DPO from TRL's ``sigmoid`` (``S = -log s(x)``) and ``robust`` terms, ``x = beta delta``,
    ``F = -log s(-x)``: ``robust = [(1 - eps) S - eps F] / (1 - 2 eps)``, so
    ``2(1 - eps) S - (1 - 2 eps) robust = 2(1 - eps) S - (1 - eps) S + eps F = (1 - eps) S + eps F``,
    which is the cDPO loss.
    """
    if loss == "cdpo":
        eps = label_smoothing
        return {"loss_type": ["sigmoid", "robust"], "loss_weights": [2 * (1 - eps), -(1 - 2 * eps)],
                "label_smoothing": eps}
    return {"loss_type": [loss], "label_smoothing": label_smoothing}


# ----------------------------------------------------------------------------- data


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: list[dict]) -> list[int]:
    if tokenizer.chat_template:
        enc = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(enc["input_ids"])
    return tokenizer("\n".join(m["content"] for m in prompt) + "\n", add_special_tokens=True)["input_ids"]


def tokenize_pairs(
    examples: list[RankedExample], tokenizer: PreTrainedTokenizerBase, rule: str, max_length: int | None
) -> tuple[list[dict], dict[str, int]]:
    """Rows ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` (TRL's tokenized preference format).

    Each ranked list becomes pairs by ``rule`` (:func:`align.data.pairs.to_pairs`). Tokens are
    those the chat template gives prompt + reply (the reply ends with EOS); the completion
    starts where the prompt alone and prompt + reply diverge, as in TRL. A pair longer than
    ``max_length`` loses prompt tokens from the left (the replies are what the loss is about);
    a reply that alone does not fit is cut at its end. Both are counted, never dropped.

    Returns:
        ``(rows, counts)`` with counts ``pairs``, ``truncated_pairs``, ``truncated_responses``
        (replies cut at the end) and ``lists_without_pairs``.
    """
    rows: list[dict] = []
    counts = {"pairs": 0, "truncated_pairs": 0, "truncated_responses": 0, "lists_without_pairs": 0}
    for ex in examples:
        pairs = to_pairs(ex, rule)
        counts["lists_without_pairs"] += not pairs
        prompt = _prompt_ids(tokenizer, ex.prompt)
        for chosen, rejected, _gap in pairs:
            c_full = tokenize_response(tokenizer, ex.prompt, chosen, None)[0]
            r_full = tokenize_response(tokenizer, ex.prompt, rejected, None)[0]
            n = min(_common_prefix(prompt, c_full), _common_prefix(prompt, r_full))
            p, c, r = prompt[:n], c_full[n:], r_full[n:]
            if max_length is not None and len(p) + max(len(c), len(r)) > max_length:
                counts["truncated_pairs"] += 1
                keep = max(1, max_length - max(len(c), len(r)))  # at least one prompt token to condition on
                p = p[-keep:]
                room = max_length - len(p)
                counts["truncated_responses"] += (len(c) > room) + (len(r) > room)
                c, r = c[:room], r[:room]
            rows.append({"prompt_ids": p, "chosen_ids": c, "rejected_ids": r})
    counts["pairs"] = len(rows)
    return rows, counts


class PretokenizedDPOTrainer(DPOTrainer):
    """``DPOTrainer`` that takes rows already tokenized by :func:`tokenize_pairs` as they are.

    TRL 1.16 re-tokenizes every dataset and then filters out pairs whose prompt fills
    ``max_length``, without a count; its collator cuts over-long sequences at the end (the
    reply's EOS goes first). Rows from :func:`tokenize_pairs` already fit, so this trainer skips
    that preparation; the stage passes ``max_length=None`` so the collator cuts nothing either.
    """

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


def pairs_to_dataset(rows: list[dict]) -> Dataset:
    if not rows:
        raise ValueError("no preference pairs: every list is tied under this pair rule; check the data or dpo.pair_rule.")
    return Dataset.from_list(rows)


# ----------------------------------------------------------------------------- measuring


def first_logged(log_history: list[dict], key: str):
    """The first value of ``key`` in a Trainer's ``log_history`` (None when never logged)."""
    return next((h[key] for h in log_history if key in h), None)


def last_logged(log_history: list[dict], key: str):
    """The last value of ``key`` in a Trainer's ``log_history`` (None when never logged)."""
    return next((h[key] for h in reversed(log_history) if key in h), None)
