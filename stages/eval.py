"""Stage ``eval``: every policy of the run against SFT on held-out prompts, plus best-of-n.

Looks for the run's policies (``pretrain/final`` as ``base``, ``sft/final``, ``ppo/final``,
``dpo/final``; any extra by config), the reward model ``rm/final`` and PPO's ``history.jsonl``;
what is missing is skipped and reported (SFT is required: it is the reference). On the same
held-out prompts it measures, per policy: the gold score of greedy responses and their gold win
rate against SFT's, the normalized reward-model score, the sequence KL to SFT from the policy's
own samples, response length and the fraction without EOS. Best-of-n samples from SFT and keeps
the reward model's favourite (n = 1, 4, 16; analytic KL). See docs/eval.md.

Steps:
    1. Validate the config; seed, output folder, logging, tracker.
    2. Prompts, and whether the gold oracle applies to them.
    3. Find the policies, the reward model and the PPO history; refuse a policy or reward model
       with a NaN/inf weight before anything is sampled (each policy is loaded once to check).
    4. SFT first (the reference), then every other policy: responses, scores, KL.
    5. Best-of-n from SFT with the reward model.
    6. Win rates against SFT.
    7. Plots, ``report.md``, the W&B table, ``metrics.json``; return the best gold score.

Run: ``make eval`` or ``python stages/eval.py [overrides]``.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path

from omegaconf import DictConfig
from transformers import set_seed

from align.cli import stage_main
from align.config import begin_stage, open_tracker, to_plain
from align.data import load_prompts, load_text_dataset
from align.data.holdout import prompt_parts
from align.eval.plots import (
    FRONTIER_PNG,
    OVEROPT_PNG,
    WIN_RATES_PNG,
    frontier_plot,
    message_plot,
    overoptimization_plot,
    win_rate_plot,
)
from align.eval.policy import REFERENCE, best_of_n, compare_with, evaluate_policy, find_policies, text_perplexity
from align.eval.report import table_rows, write_report
from align.farm import parse_task
from align.models.loading import check_stage_finished, load_causal_lm, load_tokenizer, resolve_full_model_path
from align.outputs import write_metrics
from align.ppo.monitor import read_history
from align.rm.folder import RewardScorer
from align.trainer_guard import check_finite_weights

log = logging.getLogger("align.eval")
GOLD_MODES = ("auto", "farm", None)


def run(cfg: DictConfig) -> float:
    """Run the stage; return the best gold score of greedy responses (reward-model score without gold)."""
    # 1. Validate before any model is loaded.
    ns = _check(cfg)
    out_dir = begin_stage(cfg)
    tracker = open_tracker(cfg, out_dir)
    start = time.perf_counter()

    # 2. Prompts, and the oracle.
    prompts, prompt_report = load_prompts(cfg.data.prompts, limit=cfg.data.num_prompts, on_bad_row=cfg.data.on_bad_row,
                                          holdout=prompt_parts(cfg.data.get("holdout"))("validation"), config_prefix="data.")
    gold, gold_note = _gold_applies(cfg.gold, prompts)
    log.info("%d prompts from %s; gold: %s", len(prompts), cfg.data.prompts, gold_note)

    # 3. What this run has.
    policies, missing = find_policies(to_plain(cfg.policies), to_plain(cfg.extra_policies))
    policies = {name: resolve_full_model_path(path) for name, path in policies.items()}
    log.info("policies found: %s; missing: %s",
             ", ".join(f"{n}={p}" for n, p in policies.items()), ", ".join(missing) or "none")
    scorer = None
    if cfg.reward_model and Path(cfg.reward_model).exists():
        check_stage_finished(cfg.reward_model)
        scorer = RewardScorer(cfg.reward_model, cfg.model.dtype, cfg.rm.max_length, cfg.rm.batch_size, cfg.rm.normalize)
        check_finite_weights(scorer.model, "eval", None, f"weights of {cfg.reward_model}")
    else:
        log.warning("no reward model at %s: no rm/* columns and no best-of-n", cfg.reward_model)
    for name, path in policies.items():
        if name != REFERENCE:  # SFT is loaded (and checked) next, and kept
            _load(path, cfg)  # loaded, checked and dropped
            gc.collect()
    forget = cfg.forgetting
    texts = None
    if forget.texts:
        docs, _ = load_text_dataset(forget.texts, text_field=forget.text_field, limit=forget.limit,
                                    on_bad_row=forget.on_bad_row, config_prefix="forgetting.")
        texts = docs["text"]
        log.info("forgetting: perplexity on %d texts from %s", len(texts), forget.texts)
    tracker.use_inputs(*policies.values(), scorer is not None and cfg.reward_model, cfg.data.prompts)
    history = read_history(cfg.ppo_history) if cfg.ppo_history else []

    # 4. SFT first (the reference of the KL and the win rates), then the others in config order.
    gen = dict(max_new_tokens=cfg.generation.max_new_tokens, batch_size=cfg.generation.batch_size,
               temperature=cfg.generation.temperature, num_samples=cfg.generation.num_samples,
               logprob_batch_size=cfg.generation.logprob_batch_size)
    ref_tok = load_tokenizer(policies[REFERENCE], cfg.model.trust_remote_code)
    ref_model = _load(policies[REFERENCE], cfg)
    results, greedy, rm_greedy, timing = {}, {}, {}, {}
    for name in [REFERENCE] + [n for n in policies if n != REFERENCE]:
        t0 = time.perf_counter()
        set_seed(cfg.seed)  # each policy's samples depend on the seed only, not on which policies exist
        if name == REFERENCE:
            model, tok, reference = ref_model, ref_tok, ref_model
        else:
            tok = load_tokenizer(policies[name], cfg.model.trust_remote_code)
            model = _load(policies[name], cfg)
            reference = ref_model if tok.get_vocab() == ref_tok.get_vocab() else None
            if reference is None:
                log.warning("%s has another vocabulary than sft: no KL to SFT for it", name)
        results[name], greedy[name], _, rm_greedy[name] = evaluate_policy(
            model, tok, prompts, reference=reference, scorer=scorer, gold=gold, desc=name, **gen)
        if texts is not None:
            results[name]["forget/perplexity"] = text_perplexity(model, tok, texts, forget.max_length, forget.batch_size,
                                                                 desc=f"{name} perplexity")
        if model is not ref_model:
            del model
            gc.collect()
        timing[name] = time.perf_counter() - t0
        log.info("%s: %s (%.0f s)", name, _summary(results[name]), timing[name])

    # 5. Best-of-n from SFT, the reward model choosing.
    if scorer is not None and ns:
        t0 = time.perf_counter()
        set_seed(cfg.seed)
        bon, bon_texts = best_of_n(
            ref_model, ref_tok, prompts, ns, scorer, gold=gold, sft=greedy[REFERENCE],
            sft_rm=rm_greedy[REFERENCE], max_new_tokens=cfg.generation.max_new_tokens,
            batch_size=cfg.generation.draw_batch_size, temperature=cfg.generation.temperature)
        timing["best_of_n"] = time.perf_counter() - t0
        for n in ns:
            results[f"bon_{n}"] = bon[n]
            log.info("bon_%d: %s", n, _summary(bon[n]))

    # 6. Win rates of the greedy responses against SFT's (SFT against itself is 0.5 exactly), and forgetting.
    for name in policies:
        if texts is not None:
            results[name]["forget/ppl_vs_sft"] = results[name]["forget/perplexity"] / results[REFERENCE]["forget/perplexity"]
        results[name].update(compare_with(prompts, greedy[name], greedy[REFERENCE], gold=gold, rm=rm_greedy[name],
                                          baseline_rm=rm_greedy[REFERENCE], baseline_metrics=False))

    # 7. Plots, report, table, metrics.
    known = ("base", REFERENCE, "ppo", "dpo")
    order = [n for n in known if n in policies] + [n for n in policies if n not in known]
    results = {n: results[n] for n in order + [n for n in results if n.startswith("bon_")]}
    sources = {n: _source(policies[n], cfg.paths.run_dir) for n in policies}
    sources.update({f"bon_{n}": f"SFT samples, best of {n} by RM" for n in ns if f"bon_{n}" in results})
    overopt_note = _plots(out_dir, results, policies, ns, history, gold, scorer is not None, len(prompts))
    setup = _setup_lines(cfg, len(prompts), sources, policies, missing, scorer, gold_note, overopt_note)
    samples = [(p, {n: greedy[n].texts[i] for n in order}) for i, p in enumerate(prompts[: cfg.num_samples_logged])]
    plots = [("Reward vs. KL to SFT", FRONTIER_PNG), ("Over-optimization during PPO", OVEROPT_PNG),
             ("Win rate vs. SFT", WIN_RATES_PNG)]
    write_report(out_dir / "report.md", title=f"Evaluation of run `{cfg.run}`", setup=setup, results=results,
                 sources=sources, plots=plots, samples=samples)
    tracker.log_table("eval/policies", *table_rows(results, sources))
    tracker.log_table("eval/samples", ["prompt", *order], [[p, *r.values()] for p, r in samples])

    metrics = {f"{name}/{k}": v for name, m in results.items() for k, v in m.items()}
    metrics.update({
        "eval/num_prompts": len(prompts),
        **prompt_report.as_metrics("data/prompts/"),
        "eval/policies": ",".join(results),
        "eval/missing": ",".join(missing),
        "eval/gold": gold,
        "eval/reward_model": scorer is not None,
        "eval/rm_normalized": bool(scorer and scorer.normalized),
        "eval/ppo_history_points": len(history),
        **{f"timing/{n}_s": t for n, t in timing.items()},
        "timing/total_s": time.perf_counter() - start,
    })
    write_metrics(out_dir, {**metrics, **tracker.metrics()})
    tracker.log_stage_artifact(out_dir, "evaluation")
    tracker.finish({k: v for k, v in metrics.items() if not isinstance(v, str)})
    key = "gold/score_mean" if gold else "rm/score_mean"
    return max((results[n].get(key, float("-inf")) for n in policies), default=0.0) if (gold or scorer) else 0.0


def _setup_lines(cfg, num_prompts, sources, policies, missing, scorer, gold_note, overopt_note) -> list[str]:
    """The bullets at the top of report.md: settings, and what was found and what was not."""
    if scorer is None:
        rm_note = ": not found, so no RM columns and no best-of-n."
    else:
        rm_note = " (scores normalized by reward_normalization.json)." if scorer.normalized else " (raw scores)."
    paths = to_plain(cfg.policies)
    return [
        f"Run `{cfg.run}`: {num_prompts} prompts from `{cfg.data.prompts}`, greedy responses and "
        f"{cfg.generation.num_samples} sample(s) per prompt at temperature {cfg.generation.temperature}, "
        f"max_new_tokens {cfg.generation.max_new_tokens}, seed {cfg.seed}.",
        "Policies found: " + ", ".join(f"`{n}` ({sources[n]})" for n in policies) + ".",
        "Not found (skipped): " + (", ".join(f"`{n}` ({paths[n]})" for n in missing) or "none") + ".",
        f"Reward model: `{cfg.reward_model}`{rm_note}",
        f"Gold oracle: {gold_note}.",
        f"PPO history: {overopt_note}.",
    ]


def _check(cfg: DictConfig) -> list[int]:
    ns = list(cfg.best_of_n or [])
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in ns):
        raise ValueError(f"best_of_n={ns}: every n must be an integer >= 1 (e.g. [1, 4, 16]; [] turns best-of-n off).")
    if cfg.gold not in GOLD_MODES:
        raise ValueError(f"gold={cfg.gold!r} is not one of auto, farm, null.")
    if not cfg.generation.temperature > 0:
        raise ValueError(f"generation.temperature={cfg.generation.temperature}: sampling needs a temperature > 0 "
                         "(1.0 samples the policy itself).")
    if cfg.generation.num_samples < 1:
        raise ValueError(f"generation.num_samples={cfg.generation.num_samples}: the KL needs at least one sample per prompt.")
    return sorted(set(ns))


def _gold_applies(mode: str | None, prompts: list[str]) -> tuple[bool, str]:
    """Whether the farm's gold oracle scores these prompts (``auto``: when every one parses)."""
    if mode is None:
        return False, "off (gold=null)"
    bad = 0
    for p in prompts:
        try:
            parse_task(p)
        except ValueError:
            bad += 1
    if bad and mode == "farm":
        raise ValueError(f"gold=farm but {bad} of {len(prompts)} prompts are not farm prompts; "
                         "use gold=auto or gold=null for other prompt sets.")
    if bad:
        return False, f"off ({bad} of {len(prompts)} prompts are not farm prompts)"
    return True, "the farm's gold oracle (align.farm.gold_score)"


def _load(path: str, cfg: DictConfig):
    """A policy, refused up front when a weight is NaN or inf (sampling would fail on it, or worse, not)."""
    model = load_causal_lm(path, cfg.model.dtype, cfg.model.trust_remote_code, attn_implementation=cfg.model.attn_implementation)
    check_finite_weights(model, "eval", None, f"weights of {path}")
    return model


def _source(path: str, run_dir: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return path


def _summary(m: dict) -> str:
    keys = ("gold/score_mean", "gold/sampled_score_mean", "rm/score_mean", "kl/sft_mean", "gen/response_len", "gen/no_eos_frac")
    return ", ".join(f"{k} {m[k]:.3f}" for k in keys if k in m)


def _plots(out_dir: Path, results: dict, policies: dict, ns: list[int], history: list[dict], gold: bool,
           has_rm: bool, num_prompts: int) -> str:
    """The three PNGs; returns the over-optimization plot's note for report.md."""
    # Frontier: sampled responses' reward (the same samples the KL is measured on) against KL.
    ykey, ylabel = (("gold/sampled_score_mean", "gold score (sampled responses)") if gold else
                    ("rm/sampled_score_mean", "normalized RM score (sampled responses)") if has_rm else (None, None))
    if ykey:
        points = {n: (m["kl/sft_mean"], m["kl/sft_sem"], m[ykey], m[ykey.replace("mean", "sem")])
                  for n, m in results.items() if n in policies and "kl/sft_mean" in m}
        bkey = ykey.replace("sampled_", "")  # best-of-n's chosen responses are samples already
        bon = [(n, r["kl/sft_mean"], r[bkey], r[bkey.replace("mean", "sem")])
               for n in ns if (r := results.get(f"bon_{n}"))]
        frontier_plot(points, bon, out_dir / FRONTIER_PNG, ylabel)
    else:
        message_plot(out_dir / FRONTIER_PNG, "Reward vs. KL to SFT", "no gold oracle and no reward model:\nnothing to plot against KL")
    # Over-optimization: PPO's own history.
    if history:
        ppo = results.get("ppo", {})
        final = (ppo["kl/sft_mean"], ppo.get("gold/score_mean"), ppo.get("rm/score_mean")) if "kl/sft_mean" in ppo else None
        overoptimization_plot(history, out_dir / OVEROPT_PNG, final)
        note = f"{len(history)} evaluation points from ppo/history.jsonl"
    else:
        message_plot(out_dir / OVEROPT_PNG, "Over-optimization during PPO",
                     "no PPO history\n(ppo/history.jsonl not found: run `make ppo`)")
        note = "not found, so the over-optimization plot says 'no PPO history'"
        log.info("no PPO history: %s", note)
    # Win rates: gold when the oracle applies, else the reward model's.
    wkey = "gold/win_rate_vs_sft" if gold else "rm/win_rate_vs_sft" if has_rm else None
    names = [n for n, m in results.items() if wkey and wkey in m]
    if names:
        win_rate_plot(names, [results[n][wkey] for n in names], out_dir / WIN_RATES_PNG,
                      "gold win rate" if gold else "reward-model win rate", num_prompts)
    else:
        message_plot(out_dir / WIN_RATES_PNG, "Win rate vs. SFT", "no gold oracle and no reward model:\nno win rates")
    return note


main = stage_main("eval", run)


if __name__ == "__main__":
    main()
