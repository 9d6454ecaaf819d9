"""Evaluate policies against the SFT reference: responses, KL to SFT, reward-model and gold scores.

Each policy is measured on the same held-out prompts in two ways (both through the project's one
generation path, :func:`align.generation.generate`):

* **greedy** responses: gold score, reward-model score, length, fraction without EOS; and, against
  a baseline's greedy responses, win rates (:func:`compare_with`);
* **sampled** responses at the sampling temperature (full softmax): the sequence KL to SFT, from
  teacher-forced log-probabilities of those very ids under the policy and under SFT
  (:func:`measure_kl`), and the gold / reward-model score of the same samples (the frontier
  plot's y-axis).

:func:`compare_with` is the one "policy vs. baseline" comparison of the pipeline: the ``sft``,
``dpo`` and ``ppo`` stages and ``eval`` all call it. Best-of-n draws N samples per prompt from SFT
once, scores them with the reward model and keeps the best of the first n for every n
(:func:`best_of_n`). Metric names are relative to a policy (``gold/score_mean``, ``kl/sft_mean``,
...); the eval stage prefixes them with the policy name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from align.eval.gold import gold_metrics, gold_win_rate
from align.eval.metrics import best_of_n_indices, best_of_n_kl, mean_sem, sequence_kl, win_rate
from align.farm import gold_score
from align.generation import Generations, generate
from align.masked import masked_sequence_sum
from align.rm.folder import RewardScorer

log = logging.getLogger(__name__)

REFERENCE = "sft"


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


def measure_kl(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    samples: Generations,
    pad_token_id: int,
    batch_size: int = 16,
    temperature: float = 1.0,
    own: torch.Tensor | None = None,
    desc: str = "kl",
) -> dict[str, float]:
    """Sequence-level ``KL(policy || reference)`` on the policy's own samples, by teacher forcing.

    ``KL = E_{y ~ pi}[log pi(y|x) - log ref(y|x)]`` (Stiennon et al. 2020, sec. 3.4; the quantity
    DPO's beta regularises, Rafailov et al. 2023, eq. 3), estimated from ``samples`` drawn from
    ``policy`` at ``temperature`` with the full softmax (:func:`align.generation.generate`).

    Args:
        own: The policy's log-probabilities of ``samples`` when already computed.

    Returns:
        ``kl/sft_mean`` and ``kl/sft_sem`` (nats per sequence; the reference is SFT everywhere).
    """
    if own is None:
        own = sequence_logprobs(policy, samples.prompt_ids, samples.response_ids, pad_token_id, batch_size,
                                temperature, desc=f"{desc} policy")
    if reference is policy:
        ref = own  # KL(sft || sft) = 0 exactly, without a second pass
    else:
        ref = sequence_logprobs(reference, samples.prompt_ids, samples.response_ids, pad_token_id, batch_size,
                                temperature, desc=f"{desc} reference")
    mean, sem = sequence_kl(own, ref)
    return {"kl/sft_mean": mean, "kl/sft_sem": sem}


def generation_metrics(gens: Generations, prefix: str = "gen/") -> dict[str, float]:
    """``{prefix}response_len`` (mean tokens, EOS included) and ``{prefix}no_eos_frac``."""
    n = len(gens)
    if not n:
        raise ValueError("generation_metrics needs at least one response.")
    return {f"{prefix}response_len": sum(gens.num_tokens) / n, f"{prefix}no_eos_frac": sum(not e for e in gens.ended) / n}


def compare_with(
    prompts: list[str],
    policy: Generations,
    baseline: Generations,
    *,
    name: str = REFERENCE,
    gold: bool,
    rm: list[float] | None = None,
    baseline_rm: list[float] | None = None,
    baseline_metrics: bool = True,
) -> dict[str, float]:
    """A policy's greedy responses against a baseline's on the same prompts (ties count half).

    Args:
        prompts: One per response of each side.
        policy, baseline: Their responses (the baseline is ``sft`` for dpo, ppo and eval; the
            starting model, ``base``, for sft).
        name: The baseline's name in the metric names.
        gold: Score with the farm's gold oracle.
        rm, baseline_rm: Reward-model scores of each side (both or neither).
        baseline_metrics: Also report the baseline's own scores (False when a table has a row
            for the baseline already, as in eval).

    Returns:
        ``gold/win_rate_vs_<name>``, ``rm/win_rate_vs_<name>``; with ``baseline_metrics`` also
        ``gold/<name>_*`` (:func:`align.eval.gold.gold_metrics` of the baseline),
        ``gold/gain_vs_<name>`` (gold score difference), ``rm/<name>_score_mean`` and
        ``gen/<name>_response_len``/``gen/<name>_no_eos_frac``.
    """
    m: dict[str, float] = {}
    if gold:
        m[f"gold/win_rate_vs_{name}"] = gold_win_rate(prompts, policy.texts, baseline.texts)
    if rm is not None and baseline_rm is not None:
        m[f"rm/win_rate_vs_{name}"] = win_rate(rm, baseline_rm)
    if not baseline_metrics:
        return m
    m.update(generation_metrics(baseline, prefix=f"gen/{name}_"))
    if gold:
        base = gold_metrics(prompts, baseline, prefix=f"gold/{name}_")
        m.update(base)
        m[f"gold/gain_vs_{name}"] = gold_metrics(prompts, policy)["gold/score_mean"] - base[f"gold/{name}_score_mean"]
    if baseline_rm is not None:
        m[f"rm/{name}_score_mean"], m[f"rm/{name}_score_sem"] = mean_sem(baseline_rm)
    return m


@torch.no_grad()
def text_perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int,
                    batch_size: int = 16, desc: str = "perplexity") -> float:
    """Perplexity of ``model`` on plain ``texts`` (no chat template): ``exp`` of the mean next-token
    loss over all their tokens after the first, each text cut to ``max_length`` tokens and ended
    with EOS. What a policy kept of general language (forgetting: compare with SFT's)."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][: max_length - 1] + [tokenizer.eos_token_id]
           for t in texts]
    ids = [s for s in ids if len(s) >= 2]
    if not ids:
        raise ValueError("no text of two or more tokens to measure perplexity on.")
    sums = sequence_logprobs(model, [s[:1] for s in ids], [s[1:] for s in ids], tokenizer.pad_token_id,
                             batch_size, desc=desc)
    return float(torch.exp(-sums.sum() / sum(len(s) - 1 for s in ids)))


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
) -> tuple[dict[str, float], Generations, Generations, list[float] | None]:
    """Greedy and sampled responses of one policy and everything measured on them.

    Args:
        reference: The SFT model for the KL, or None (its tokenizer differs from SFT's, and there
            is no KL). The policy itself when it *is* SFT (KL = 0 exactly).
        scorer: The reward model, or None (no ``rm/*``).
        gold: Score with the farm's gold oracle (``gold/*``).
        num_samples: Sampled responses per prompt for the KL and the sampled scores.

    Returns:
        ``(metrics, greedy generations, samples, reward-model scores of the greedy responses)``.
        Metrics: ``gen/*`` (:func:`generation_metrics`) of the greedy and (``gen/sampled_*``) the
        sampled responses, ``kl/sft_mean``/``kl/sft_sem`` (when measurable), ``rm/score_mean``/
        ``rm/score_sem``, ``rm/sampled_score_mean``, and ``gold/*`` from
        :func:`align.eval.gold.gold_metrics` plus ``gold/sampled_score_mean``/``gold/sampled_score_sem``.
        Win rates need a baseline's responses: see :func:`compare_with`.
    """
    greedy = generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc=f"{desc} greedy")
    samples = generate(model, tokenizer, prompts, max_new_tokens, batch_size, do_sample=True, temperature=temperature,
                       num_per_prompt=num_samples, desc=f"{desc} sample")
    m = {**generation_metrics(greedy), **generation_metrics(samples, prefix="gen/sampled_")}
    own = sequence_logprobs(model, samples.prompt_ids, samples.response_ids, tokenizer.pad_token_id,
                            logprob_batch_size, temperature, desc=f"{desc} logprobs")
    if reference is not None:
        m.update(measure_kl(model, reference, samples, tokenizer.pad_token_id, logprob_batch_size, temperature, own,
                            desc=f"{desc} sft"))
    rm_greedy = None
    if scorer is not None:
        rm_greedy = scorer(prompts, greedy.texts)
        m["rm/score_mean"], m["rm/score_sem"] = mean_sem(rm_greedy)
        m["rm/sampled_score_mean"], m["rm/sampled_score_sem"] = mean_sem(scorer(samples.prompts, samples.texts))
    if gold:
        m.update(gold_metrics(prompts, greedy, prefix="gold/"))
        m["gold/sampled_score_mean"], m["gold/sampled_score_sem"] = mean_sem(
            [gold_score(p, t) for p, t in zip(samples.prompts, samples.texts)]
        )
    return m, greedy, samples, rm_greedy


def best_of_n(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    ns: list[int],
    scorer: RewardScorer,
    *,
    gold: bool,
    sft: Generations,
    sft_rm: list[float],
    max_new_tokens: int,
    batch_size: int,
    temperature: float,
) -> tuple[dict[int, dict[str, float]], dict[int, list[str]]]:
    """Best-of-n sampling from SFT with the reward model, for every n in ``ns`` from one draw of max(ns).

    Args:
        sft, sft_rm: SFT's greedy responses and their reward-model scores (the win rates' baseline).
        batch_size: Sequences per ``generate`` call for the ``len(prompts) * max(ns)`` draws.

    Returns:
        ``({n: metrics}, {n: chosen texts})``; metrics as :func:`evaluate_policy` names them for
        greedy responses (the chosen samples take the greedy columns), ``kl/sft_mean`` analytic
        (:func:`align.eval.metrics.best_of_n_kl`), and win rates against SFT's greedy responses.
    """
    n_max = max(ns)
    draws = generate(model, tokenizer, prompts, max_new_tokens, batch_size, do_sample=True, temperature=temperature,
                     num_per_prompt=n_max, desc=f"best-of-{n_max} sample")
    scores = torch.tensor(scorer(draws.prompts, draws.texts)).view(len(prompts), n_max)
    results, texts = {}, {}
    for n in ns:
        pick = best_of_n_indices(scores, n)
        chosen = draws.take([i * n_max + int(j) for i, j in enumerate(pick)])
        rm = scores[torch.arange(len(prompts)), pick].tolist()
        m = {"kl/sft_mean": best_of_n_kl(n), **generation_metrics(chosen)}
        m["rm/score_mean"], m["rm/score_sem"] = mean_sem(rm)
        if gold:
            m.update(gold_metrics(prompts, chosen, prefix="gold/"))
        m.update(compare_with(prompts, chosen, sft, gold=gold, rm=rm, baseline_rm=sft_rm, baseline_metrics=False))
        results[n], texts[n] = m, chosen.texts
    return results, texts
