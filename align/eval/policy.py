"""Evaluate policies against the SFT reference: responses, KL to SFT, reward-model and gold scores.

Each policy is measured on the same held-out prompts in two ways:

* **greedy** responses (:func:`align.generation.generate_responses`): gold score, gold win rate
  against SFT's greedy responses, reward-model score, length, fraction without EOS;
* **sampled** responses at the sampling temperature (:func:`sample_responses`, which keeps the
  token ids): the sequence KL to SFT, from teacher-forced log-probabilities of those very ids
  under the policy and under SFT (:func:`sequence_logprobs`, :func:`align.eval.metrics.sequence_kl`),
  and the gold / reward-model score of the same samples (the frontier plot's y-axis).

Best-of-n draws N samples per prompt from SFT once, scores them with the reward model and keeps
the best of the first n for every n (:func:`best_of_n`). Metric names are relative to a policy
(``gold/score_mean``, ``kl_to_sft``, ...); the stage prefixes them with the policy name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from align.eval.gold import gold_metrics, gold_win_rate
from align.eval.metrics import best_of_n_indices, best_of_n_kl, mean_sem, sequence_kl, win_rate
from align.farm import gold_score
from align.generation import Generations, chat_prompt_ids, generate_responses
from align.masked import masked_sequence_sum
from align.rm.folder import RewardScorer

log = logging.getLogger(__name__)

REFERENCE = "sft"


@dataclass
class Samples:
    """Sampled responses with their token ids (what the KL estimator needs).

    Attributes:
        prompts: The user prompt of each sample (a prompt repeats for several samples).
        prompt_ids: Chat-template ids of each prompt, ending with the assistant header.
        response_ids: Generated ids up to and including the first EOS (all of them without EOS).
        texts: Decoded responses, special tokens skipped, stripped.
        ended: Whether each response produced EOS within the length limit.
    """

    prompts: list[str]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    texts: list[str]
    ended: list[bool]

    def generations(self) -> Generations:
        return Generations(texts=self.texts, num_tokens=[len(r) for r in self.response_ids], ended=self.ended)

    def take(self, index: list[int]) -> Samples:
        """The samples at ``index``, in that order."""
        return Samples(*([getattr(self, f)[i] for i in index] for f in ("prompts", "prompt_ids", "response_ids", "texts", "ended")))


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    temperature: float = 1.0,
    num_per_prompt: int = 1,
    desc: str = "sample",
) -> Samples:
    """Sample ``num_per_prompt`` responses per prompt from the full softmax at ``temperature``.

    ``top_k=0`` and ``top_p=1`` are passed explicitly: transformers' default ``top_k=50`` would
    otherwise truncate the distribution, and the KL estimator needs samples from the policy
    itself. Samples of one prompt are consecutive. Seed the global RNG before calling.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids_of = {p: chat_prompt_ids(tokenizer, p) for p in dict.fromkeys(prompts)}
    flat = [p for p in prompts for _ in range(num_per_prompt)]
    out = Samples([], [], [], [], [])
    for start in tqdm(range(0, len(flat), batch_size), desc=desc, leave=False):
        batch = flat[start : start + batch_size]
        rows = [ids_of[p] for p in batch]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        gen = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
            eos_token_id=eos, pad_token_id=pad, use_cache=True,
        )
        for p, ids, row in zip(batch, rows, gen[:, width:].tolist()):
            n = row.index(eos) + 1 if eos in row else len(row)
            out.prompts.append(p)
            out.prompt_ids.append(ids)
            out.response_ids.append(row[:n])
            out.ended.append(eos in row)
            out.texts.append(tokenizer.decode(row[:n], skip_special_tokens=True).strip())
    model.train(was_training)
    return out


@torch.no_grad()
def sequence_logprobs(
    model: PreTrainedModel,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    pad_token_id: int,
    batch_size: int = 16,
    temperature: float = 1.0,
    desc: str = "logprobs",
) -> torch.Tensor:
    """``log p(response | prompt)`` of each (prompt, response) pair under ``model``, by teacher forcing.

    Right-padded batches (positions 0..L-1 hold the real tokens), logits divided by
    ``temperature`` (the distribution the samples came from), log-softmax in float32 computed as
    ``logit - logsumexp`` so no second vocabulary-sized tensor is built.

    Returns:
        ``[N]`` float32 sums over each response's tokens (EOS included when it was produced).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in tqdm(range(0, len(prompt_ids), batch_size), desc=desc, leave=False):
        prompts, responses = prompt_ids[start : start + batch_size], response_ids[start : start + batch_size]
        seqs = [p + r for p, r in zip(prompts, responses)]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        # Logits at position t predict token t+1: response token j (at len(p)+j) is scored at len(p)+j-1.
        mask = torch.zeros((len(seqs), width - 1), dtype=torch.bool)
        for i, (p, s) in enumerate(zip(prompts, seqs)):
            input_ids[i, : len(s)] = torch.tensor(s)
            attention_mask[i, : len(s)] = 1
            mask[i, len(p) - 1 : len(s) - 1] = True
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False).logits
        logits = logits[:, :-1].float() / temperature
        targets = input_ids[:, 1:].to(device).unsqueeze(-1)
        token_logprobs = logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(-1)
        out.append(masked_sequence_sum(token_logprobs.cpu(), mask))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def find_policies(candidates: dict[str, str | None], extra: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The policies to evaluate: ``candidates`` whose folder exists, plus every ``extra`` one.

    A candidate that looks like a local path and does not exist is skipped (that stage has not
    been run); an ``extra`` policy is always kept (a hub id, or a folder the user named, which the
    loader then reports if missing). ``sft`` must be found: it is the reference.

    Returns:
        ``(found name -> path, missing names)``, in the order given (candidates first).

    Raises:
        ValueError: Without ``sft``, or when an extra name repeats a candidate.
    """
    found, missing = {}, []
    for name, path in candidates.items():
        if path and (Path(path).exists() or not _looks_local(path)):
            found[name] = str(path)
        else:
            missing.append(name)
    for name, path in (extra or {}).items():
        if name in candidates:
            raise ValueError(f"extra_policies.{name} repeats a policy name of `policies`; choose another name.")
        found[name] = str(path)
    if REFERENCE not in found:
        raise ValueError(
            f"policies.sft={candidates.get(REFERENCE)!r} was not found; eval measures every policy against SFT. "
            "Run `make sft` for this run first, or set policies.sft to an existing model folder or hub id."
        )
    return found, missing


def _looks_local(path: str) -> bool:
    p = Path(path)
    return path.startswith((".", "/", "~")) or p.parts[:1] == ("outputs",) or len(p.parts) > 2


def evaluate_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    reference: PreTrainedModel | None,
    scorer: RewardScorer | None,
    gold: bool,
    max_new_tokens: int,
    batch_size: int,
    temperature: float,
    num_samples: int,
    logprob_batch_size: int,
    desc: str = "policy",
) -> tuple[dict[str, float], Generations, Samples, list[float] | None]:
    """Greedy and sampled responses of one policy and everything measured on them.

    Args:
        reference: The SFT model for the KL, or None (the policy *is* SFT, KL = 0 exactly; or its
            tokenizer differs from SFT's, and there is no KL).
        scorer: The reward model, or None (no ``rm/*``).
        gold: Score with the farm's gold oracle (``gold/*``).
        num_samples: Sampled responses per prompt for the KL and the sampled scores.

    Returns:
        ``(metrics, greedy generations, samples, reward-model scores of the greedy responses)``.
        Metrics: ``response_len``, ``no_eos_frac``, ``sampled_response_len``, ``sampled_no_eos_frac``,
        ``kl_to_sft``/``kl_to_sft_sem`` (when measurable), ``rm/score_mean``/``rm/score_sem``,
        ``rm/sampled_score_mean``, and ``gold/*`` from :func:`align.eval.gold.gold_metrics` plus
        ``gold/sampled_score_mean``/``gold/sampled_score_sem``. Win rates need the SFT responses:
        see :func:`win_rates`.
    """
    greedy = generate_responses(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                desc=f"{desc} greedy")
    samples = sample_responses(model, tokenizer, prompts, max_new_tokens, batch_size, temperature, num_samples,
                               desc=f"{desc} sample")
    n = len(prompts)
    m: dict[str, float] = {
        "response_len": sum(greedy.num_tokens) / n,
        "no_eos_frac": sum(not e for e in greedy.ended) / n,
        "sampled_response_len": sum(len(r) for r in samples.response_ids) / len(samples.texts),
        "sampled_no_eos_frac": sum(not e for e in samples.ended) / len(samples.texts),
    }
    own = sequence_logprobs(model, samples.prompt_ids, samples.response_ids, tokenizer.pad_token_id,
                            logprob_batch_size, temperature, desc=f"{desc} logprobs")
    if reference is model:
        ref = own  # KL(sft || sft) = 0 exactly, without a second pass
    elif reference is not None:
        ref = sequence_logprobs(reference, samples.prompt_ids, samples.response_ids, tokenizer.pad_token_id,
                                logprob_batch_size, temperature, desc=f"{desc} sft logprobs")
    if reference is not None:
        m["kl_to_sft"], m["kl_to_sft_sem"] = sequence_kl(own, ref)
    rm_greedy = None
    if scorer is not None:
        rm_greedy = scorer(prompts, greedy.texts)
        m["rm/score_mean"], m["rm/score_sem"] = mean_sem(rm_greedy)
        m["rm/sampled_score_mean"], m["rm/sampled_score_sem"] = mean_sem(scorer(samples.prompts, samples.texts))
    if gold:
        g = gold_metrics(prompts, greedy, prefix="gold/")
        m.update({k: v for k, v in g.items() if k not in ("gold/response_len", "gold/no_eos_frac")})
        m["gold/sampled_score_mean"], m["gold/sampled_score_sem"] = mean_sem(
            [gold_score(p, t) for p, t in zip(samples.prompts, samples.texts)]
        )
    return m, greedy, samples, rm_greedy


def win_rates(
    prompts: list[str], texts: list[str], sft_texts: list[str], rm: list[float] | None, sft_rm: list[float] | None, gold: bool
) -> dict[str, float]:
    """``gold/win_rate_vs_sft`` (gold oracle) and ``rm/win_rate_vs_sft`` (reward model), ties half."""
    m = {}
    if gold:
        m["gold/win_rate_vs_sft"] = gold_win_rate(prompts, texts, sft_texts)
    if rm is not None and sft_rm is not None:
        m["rm/win_rate_vs_sft"] = win_rate(rm, sft_rm)
    return m


def best_of_n(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    ns: list[int],
    scorer: RewardScorer,
    *,
    gold: bool,
    sft_texts: list[str],
    sft_rm: list[float],
    max_new_tokens: int,
    batch_size: int,
    temperature: float,
) -> tuple[dict[int, dict[str, float]], dict[int, list[str]]]:
    """Best-of-n sampling from SFT with the reward model, for every n in ``ns`` from one draw of max(ns).

    Args:
        batch_size: Sequences per ``generate`` call for the ``len(prompts) * max(ns)`` draws.

    Returns:
        ``({n: metrics}, {n: chosen texts})``; metrics as :func:`evaluate_policy` names them for
        greedy responses (the chosen samples take the greedy columns), ``kl_to_sft`` analytic
        (:func:`align.eval.metrics.best_of_n_kl`), and win rates against SFT's greedy responses.
    """
    n_max = max(ns)
    draws = sample_responses(model, tokenizer, prompts, max_new_tokens, batch_size, temperature, n_max,
                             desc=f"best-of-{n_max} sample")
    scores = torch.tensor(scorer(draws.prompts, draws.texts)).view(len(prompts), n_max)
    results, texts = {}, {}
    for n in ns:
        pick = best_of_n_indices(scores, n)
        chosen = draws.take([i * n_max + int(j) for i, j in enumerate(pick)])
        rm = scores[torch.arange(len(prompts)), pick].tolist()
        gens = chosen.generations()
        m = {
            "kl_to_sft": best_of_n_kl(n),
            "response_len": sum(gens.num_tokens) / len(prompts),
            "no_eos_frac": sum(not e for e in gens.ended) / len(prompts),
        }
        m["rm/score_mean"], m["rm/score_sem"] = mean_sem(rm)
        if gold:
            g = gold_metrics(prompts, gens, prefix="gold/")
            m.update({k: v for k, v in g.items() if k not in ("gold/response_len", "gold/no_eos_frac")})
        m.update(win_rates(prompts, gens.texts, sft_texts, rm, sft_rm, gold))
        results[n], texts[n] = m, gens.texts
    return results, texts
