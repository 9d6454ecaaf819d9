"""The scalar reward model: tokenizing ranked lists, the K-wise trainer, and scoring.

A reward model is ``AutoModelForSequenceClassification`` with ``num_labels=1``
(:func:`align.rm.folder.load_reward_model`, which also saves and reads its folder): the score of a
prompt+response is the head's output at its last attended token (:func:`last_token_rewards`; not the
classifier's pad-id pooling, which pad == EOS tokenizers break). Pairwise data trains through
TRL's ``RewardTrainer``; ranked lists (K = 2..9 responses per prompt) train through
:class:`RankedRewardTrainer`, which scores all K responses of a prompt in one forward pass and
applies InstructGPT's all-pairs loss or the Plackett-Luce loss from ``align.losses``.

Over-long sequences are handled here, never silently dropped: TRL's ``RewardTrainer`` filters
pairs longer than ``max_length`` without a word, so :func:`tokenize_response` truncates from the
left (keeping the response, which is what the reward is about) and callers count it.
"""

from __future__ import annotations

import logging

import torch
from transformers import PreTrainedTokenizerBase, Trainer

from align.data.preferences import RankedExample
from align.losses import plackett_luce_loss, ranked_pairwise_loss, response_lm_loss, reward_centering_loss

log = logging.getLogger(__name__)

LOSSES = ("pairwise", "ranked", "plackett_luce")


def add_readout_layers(model, n: int):
    """Append ``n`` decoder layers on top of the LM backbone, initialised as the identity.

    A last-token head reads only what the backbone routes to the last position, and the LM's own
    knowledge (its next-token prediction at each position) is complete only at the *top* of the
    backbone, with no layer left to compare it with the response and carry the verdict to the end.
    The new layers attend over the LM's final hidden states: their input norm starts as the
    backbone's final norm (so they see exactly the LM's output features) and their output
    projections start at zero (so the model is unchanged at initialisation). The result is still a
    plain ``*ForSequenceClassification`` with ``num_hidden_layers + n`` layers: it saves, reloads
    and scores like any other. Measured on the farm: it speeds up learning the prompt-response
    checks (sentiment, facts), not the sums.

    Raises:
        ValueError: For a model without Llama-style ``layers``/``norm``/``o_proj``/``down_proj``.
    """
    if n <= 0:
        return model
    body = getattr(model, model.base_model_prefix)
    layers, norm = getattr(body, "layers", None), getattr(body, "norm", None)
    top = layers[-1] if layers else None
    if top is None or norm is None or not hasattr(top.self_attn, "o_proj") or not hasattr(top.mlp, "down_proj"):
        raise ValueError(f"rm.readout_layers needs a Llama-style decoder ({type(model).__name__} is not).")
    config = model.config
    for _ in range(n):
        layer = type(top)(config, layer_idx=len(layers)).to(device=norm.weight.device, dtype=norm.weight.dtype)
        with torch.no_grad():
            layer.input_layernorm.weight.copy_(norm.weight)
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        layers.append(layer)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [*config.layer_types, *[config.layer_types[-1]] * n]
    log.info("added %d identity-initialised read-out layers (now %d)", n, len(layers))
    return model


def tokenize_response(
    tokenizer: PreTrainedTokenizerBase, prompt: list[dict], response: str, max_length: int | None
) -> tuple[list[int], bool]:
    """Token ids of prompt + assistant response (chat template), left-truncated to ``max_length``.

    Returns:
        ``(input_ids, truncated)``.
    """
    messages = [*prompt, {"role": "assistant", "content": response}]
    if tokenizer.chat_template:
        ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    else:  # a base model without a chat template: plain text, EOS-terminated
        text = "\n".join(m["content"] for m in messages) + (tokenizer.eos_token or "")
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if max_length is not None and len(ids) > max_length:
        return ids[-max_length:], True
    return ids, False


def tokenize_ranked(
    examples: list[RankedExample], tokenizer: PreTrainedTokenizerBase, max_length: int | None,
    response_spans: bool = False,
) -> tuple[list[dict], int]:
    """Rows ``{"input_ids": [K lists], "scores": [K]}`` for :class:`RankedCollator`; and how many
    sequences were truncated.

    With ``response_spans`` (what the auxiliary LM loss needs, ``rm.lm_coefficient``) each row
    also gets ``"response_span": [K pairs]``: ``[start, end)`` of each response's tokens, from the
    first token after the prompt (0 when truncation cut into the prompt) up to and including its
    last EOS (the chat template's tokens after EOS are no target for a language model)."""
    rows, truncated = [], 0
    for ex in examples:
        ids, spans = [], []
        prefix = _prompt_prefix(tokenizer, ex.prompt) if response_spans else None
        for response in ex.responses:
            seq, cut = tokenize_response(tokenizer, ex.prompt, response, max_length)
            ids.append(seq)
            truncated += cut
            if prefix is not None:
                dropped = len(tokenize_response(tokenizer, ex.prompt, response, None)[0]) - len(seq) if cut else 0
                eos = [i for i, t in enumerate(seq) if t == tokenizer.eos_token_id]
                spans.append([max(0, len(prefix) - dropped), eos[-1] + 1 if eos else len(seq)])
        rows.append({"input_ids": ids, "scores": list(ex.scores)})
        if prefix is not None:
            rows[-1]["response_span"] = spans
    return rows, truncated


def _prompt_prefix(tokenizer: PreTrainedTokenizerBase, prompt: list[dict]) -> list[int]:
    """The tokens every response to ``prompt`` starts with (the common prefix of two answers)."""
    a = tokenize_response(tokenizer, prompt, "a", None)[0]
    b = tokenize_response(tokenizer, prompt, "b", None)[0]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class RankedCollator:
    """Batches ranked lists: all responses of all prompts flattened into one right-padded batch.

    Output: ``input_ids``/``attention_mask`` ``[N, L]`` (N = total responses), ``slots`` ``[N]``
    (position of each response in the ``[B, K_max]`` grid), ``scores`` and ``mask`` ``[B, K_max]``;
    with ``response_span`` in the rows also ``response_mask`` ``[N, L]`` (True at response tokens).
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        k_max = max(len(f["input_ids"]) for f in features)
        seqs, slots = [], []
        scores = torch.zeros(len(features), k_max)
        mask = torch.zeros(len(features), k_max, dtype=torch.bool)
        for b, f in enumerate(features):
            for k, ids in enumerate(f["input_ids"]):
                seqs.append(ids)
                slots.append(b * k_max + k)
            scores[b, : len(f["scores"])] = torch.tensor(f["scores"], dtype=torch.float)
            mask[b, : len(f["scores"])] = True
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = torch.tensor(s)
            attention_mask[i, : len(s)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "slots": torch.tensor(slots),
                 "scores": scores, "mask": mask}
        if all("response_span" in f for f in features):
            span = torch.tensor([s for f in features for s in f["response_span"]]).view(-1, 2)
            pos = torch.arange(width)[None, :]
            batch["response_mask"] = (pos >= span[:, :1]) & (pos < span[:, 1:])
        return batch


class RankedRewardTrainer(Trainer):
    """``transformers.Trainer`` whose loss is a K-wise ranking loss over one forward pass per batch.

    Args:
        loss_type: ``ranked`` (InstructGPT all-pairs, per-prompt weighting) or ``plackett_luce``.
        center_rewards_coefficient: Weight of the reward-centering term (None: off).
        lm_coefficient: Weight of the auxiliary next-token loss on each list's top-ranked
            responses (0 or None: off). The LM head is the tied input embedding, so the saved
            model stays a plain sequence classifier.
        lm_layers: How many of the backbone's layers are the LM's (the rest are read-out layers
            from :func:`add_readout_layers`); the LM loss reads the output of the last of them,
            through the final norm. None: all layers.
        *args, **kwargs: ``Trainer`` arguments.
    """

    def __init__(self, *args, loss_type: str = "ranked", center_rewards_coefficient: float | None = None,
                 lm_coefficient: float | None = None, lm_layers: int | None = None, **kwargs):
        if loss_type not in ("ranked", "plackett_luce"):
            raise ValueError(f"rm.loss={loss_type!r}: the ranked trainer takes 'ranked' or 'plackett_luce'.")
        super().__init__(*args, **kwargs)
        self.loss_type = loss_type
        self.center_rewards_coefficient = center_rewards_coefficient
        self.lm_coefficient = lm_coefficient
        self.lm_layers = lm_layers
        if lm_coefficient and not getattr(self.model.config, "tie_word_embeddings", False):
            raise ValueError("rm.lm_coefficient needs a model with tied input/output embeddings "
                             "(the sequence classifier has no LM head of its own).")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scores, mask, slots = inputs["scores"], inputs["mask"], inputs["slots"]
        if self.lm_coefficient:
            if "response_mask" not in inputs:
                raise ValueError("rm.lm_coefficient needs each row's response span: tokenize the lists with "
                                 "tokenize_ranked(..., response_spans=True).")
            flat, lm_loss = self._rewards_and_lm_loss(model, inputs)
        else:
            flat = last_token_rewards(model, inputs["input_ids"], inputs["attention_mask"])  # [N]
        rewards = flat.new_zeros(mask.numel()).index_put((slots,), flat).view_as(scores)  # [B, K_max]
        fn = ranked_pairwise_loss if self.loss_type == "ranked" else plackett_luce_loss
        loss = fn(rewards, scores, mask)
        if self.center_rewards_coefficient:
            # Centre each prompt's mean reward, not each reward: TRL's pairwise term is
            # (r_c + r_r)^2 = (2 * pair mean)^2, and penalising single rewards would also shrink
            # the margins the ranking loss is building. (2 * mean)^2 is TRL's term at K = 2.
            prompt_mean = (rewards * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            loss = loss + self.center_rewards_coefficient * reward_centering_loss(2 * prompt_mean)
        if self.lm_coefficient:
            loss = loss + self.lm_coefficient * lm_loss
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def _rewards_and_lm_loss(self, model, inputs):
        """One backbone pass: rewards ``[N]`` read at the last token (as the classifier does) and
        the next-token loss on the response tokens of every list's top-ranked responses."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        ids, attn = inputs["input_ids"], inputs["attention_mask"]
        body = getattr(base, base.base_model_prefix)
        captured = []
        hook = None
        if self.lm_layers is not None and self.lm_layers < len(body.layers):
            hook = body.layers[self.lm_layers - 1].register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            hidden = body(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
        finally:
            if hook is not None:
                hook.remove()
        lm_hidden = body.norm(captured[0][0] if isinstance(captured[0], tuple) else captured[0]) if captured else hidden
        flat = _read_last(base, hidden, attn)
        scores, mask = inputs["scores"], inputs["mask"]
        best = scores.masked_fill(~mask, float("-inf")).amax(-1, keepdim=True)
        top = ((scores == best) & mask).flatten()[inputs["slots"]]  # [N]
        logits = lm_hidden[top] @ base.get_input_embeddings().weight.T
        return flat, response_lm_loss(logits, ids[top], inputs["response_mask"][top])

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "scores"]


def last_token_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Rewards ``[N]`` of right-padded sequences: the score head at each sequence's last attended token.

    Not the sequence classifier's own pooling: that reads the rightmost token whose id is not
    ``pad_token_id``, and with pad == EOS (most real tokenizers: SmolLM2, Llama 3, Qwen) a sequence
    that ends with EOS is read one token early, or, when padding is all EOS, at a position that
    depends on the batch (trl#937). The attention mask knows where each sequence ends.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, base.base_model_prefix)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return _read_last(base, hidden, attention_mask)


def _read_last(base, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    if not bool((attention_mask.sum(-1) == attention_mask.cumprod(-1).sum(-1)).all()):
        raise ValueError("reward sequences must be right-padded (attention mask 1...1 0...0)")
    last = attention_mask.sum(-1) - 1
    # The head over every position, then the last one picked, as the classifier computes it: the
    # same arithmetic, so rewards are bit-identical to its own wherever its pooling is right.
    return base.score(hidden)[torch.arange(hidden.shape[0], device=hidden.device), last].squeeze(-1)


@torch.no_grad()
def score_responses(
    model, tokenizer: PreTrainedTokenizerBase, prompt: list[dict], responses: list[str],
    max_length: int | None = None, batch_size: int = 64,
) -> list[float]:
    """Rewards of ``responses`` to one conversational ``prompt``."""
    return score_batch(model, tokenizer, [(prompt, r) for r in responses], max_length, batch_size)


def score_lists(
    model, tokenizer: PreTrainedTokenizerBase, examples: list[RankedExample], max_length: int | None = None,
    batch_size: int = 64, desc: str = "Scoring",
) -> tuple[list[list[float]], list[list[int]]]:
    """Each list's rewards and its responses' lengths in tokens, as :func:`align.rm.report.report_card` takes them.

    Every (prompt, response) of every list is scored in batches of ``batch_size`` across lists
    (:func:`score_batch`; left-truncated to ``max_length``). A length is the response's own
    tokens (alone in the chat template, untruncated): the length the RM could be biased by. The
    ``rm`` stage's report card and ``python -m align.rm.score`` both go through here.

    Returns:
        ``(rewards, lengths)``, one list of K floats / ints per example.
    """
    from tqdm.auto import tqdm

    flat = [(ex.prompt, r) for ex in examples for r in ex.responses]
    scores: list[float] = []
    for start in tqdm(range(0, len(flat), batch_size), desc=desc, unit=" batches", leave=False, disable=None):
        scores.extend(score_batch(model, tokenizer, flat[start : start + batch_size], max_length, batch_size))
    rewards, lengths, at = [], [], 0
    for ex in examples:
        rewards.append(scores[at : at + len(ex.responses)])
        lengths.append([len(tokenize_response(tokenizer, [], r, None)[0]) for r in ex.responses])
        at += len(ex.responses)
    return rewards, lengths


@torch.no_grad()
def score_batch(
    model, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[list[dict], str]],
    max_length: int | None = None, batch_size: int = 64,
) -> list[float]:
    """Rewards of many (prompt messages, response) pairs, in right-padded batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = RankedCollator(tokenizer.pad_token_id)
    out: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        feats = [{"input_ids": [tokenize_response(tokenizer, p, r, max_length)[0]], "scores": [0.0]} for p, r in chunk]
        batch = collate(feats)
        rewards = last_token_rewards(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
        out.extend(rewards.float().cpu().tolist())
    model.train(was_training)
    return out
