"""Stage ``ppo``: our own PPO (InstructGPT recipe) against this run's reward model.

TRL removed its ``PPOTrainer`` in 2026; this loop is ours, built from the small parts in
``align/ppo/`` and the losses in ``align/losses.py``, and reads top to bottom like CleanRL's
``ppo.py``.

Steps:
    1. Validate the config and the reward model's quality gate (before loading a model); start or
       resume the run (:func:`align.config.resume_state`: ``resume=true`` continues the newest
       complete checkpoint of the same run, skipping incomplete ones; ``resume=false`` removes an
       earlier run's checkpoints).
    2. Tokenizer and every input read and checked: train, monitoring and test prompts, PPO-ptx
       demonstrations (a bad file fails here, not after training).
    3. Models for ``ppo.mode`` (full: four models; lora: two bases with adapters), the training
       backend (``align/ppo/steps.py``: AdamW per model, or DeepSpeed engines), the KL controller.
    4. Resume from the checkpoint step 1 chose.
    5. The loop; each iteration:
       5.1 rollout     sample one response per prompt from the policy (KV cache, left padding,
                       stop at EOS, trimmed to the longest real response)
       5.2 experience  old/reference log-probs, values, RM scores (normalized, no-EOS penalty),
                       KL-shaped rewards, GAE advantages (whitened) and returns
       5.3 update      ppo_epochs over shuffled minibatches: clipped policy loss + vf_coef * clipped
                       value loss (- entropy bonus, + PPO-ptx), gradient accumulation and clipping
       5.4 KL control  the KL controller moves beta towards its target
       5.5 log, monitor, checkpoint   every eval.every iterations: proxy and gold scores of greedy
                       and sampled responses on held-out prompts (history.jsonl, the plot); every
                       checkpoint.every iterations: a checkpoint (no pickle: safetensors + JSON, the
                       run's marker last; refused with non-finite weights)
    A non-finite loss (policy, value, PPO-ptx) or gradient norm stops the run before the optimizer
    step (:class:`align.errors.NonFiniteError`); the last good checkpoint stays, ``final/`` is not
    written.
    6. Finish training (the backend), final comparison with SFT on the test prompts; save
       ``final/``; ``metrics.json``.

Under DeepSpeed (``deepspeed=zero1|zero2|zero3``, ``make ppo NPROC=2 DS=zero3``) every process
runs the loop on its ``1/N`` of each batch (``align/ppo/distributed.py``); ZeRO-3's ``final/``
is consolidated from the shards, and only rank 0 goes on to the final comparison. The loop does
not ask which backend it runs on: :func:`align.ppo.steps.make_steps` picks it once.

Run: ``make ppo`` (after ``make rm``) or ``python stages/ppo.py [overrides]``.
"""

from __future__ import annotations

import json
import logging
import math
import time

import torch
from omegaconf import DictConfig

from align.cli import stage_main
from align.config import begin_stage, open_tracker, resume_state, to_plain
from align.data import load_prompts, tokenize_prompts
from align.data.holdout import prompt_parts
from align.distributed import is_main_process, zero_stage
from align.errors import CheckpointError, NonFiniteError
from align.generation import chat_prompt_ids
from align.losses import masked_entropy_from_logits, ppo_policy_loss, ppo_value_loss
from align.models.loading import (
    count_parameters,
    load_tokenizer,
    resolve_full_model_path,
    snapshot_trainable,
    trainable_delta_norm,
)
from align.models.precision import precision_args
from align.outputs import write_metrics
from align.ppo.checkpoint import PREFIX as CHECKPOINT_PREFIX
from align.ppo.checkpoint import resume_folder
from align.ppo.distributed import local_batch_sizes, setup_data_parallel
from align.ppo.experience_maker import RewardSpec, experience_rollout, make_experience
from align.ppo.kl import controller_options, make_kl_controller
from align.ppo.models import (
    MODES,
    load_ppo_models,
    logprobs_from_logits,
    reference_fingerprint,
    response_logits,
    response_values,
    reward_suffix_ids,
)
from align.ppo.monitor import append_history, plot_history, policy_snapshot, read_history, truncate_history
from align.ppo.prompt_order import prompt_indices
from align.ppo.rollout import decode_responses, generate_rollout, rollout_generations
from align.ppo.seeded_sampling import row_seed
from align.ppo.steps import autocast_context, lr_lambda, make_steps
from align.rm.folder import check_gate, read_normalization
from align.runtime import peak_rss_mb, release_free_memory

log = logging.getLogger("align.ppo")


def run(cfg: DictConfig) -> float:
    """Run the stage; return the gold win rate against SFT (proxy score without an oracle)."""
    # 1. Validate everything that can be checked without a model.
    p = cfg.ppo
    _validate(cfg)
    policy_path = resolve_full_model_path(cfg.model.name_or_path)
    rm_path = resolve_full_model_path(cfg.reward_model.name_or_path)
    check_gate(rm_path, p.allow_failed_rm)
    dp = setup_data_parallel(to_plain(cfg.deepspeed.get("config")) or None)  # world 1 without DeepSpeed
    _, local_mini, local_micro = local_batch_sizes(p.rollout_batch_size, p.mini_batch_size, p.micro_batch_size, dp.world)
    out_dir = begin_stage(cfg)
    _check_output_folders(out_dir)
    run_state = resume_state(cfg, out_dir / "checkpoints", CHECKPOINT_PREFIX)
    resume_from = resume_folder(run_state, out_dir / "checkpoints")  # refuses a legacy (pickle) checkpoint
    dp.barrier()  # rank 0 has removed an earlier run's checkpoints before anyone writes one
    device = torch.device("cuda", dp.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    autocast = autocast_context(cfg.precision, device)

    # 2. Tokenizer (the reward model must share it: scores are read on the policy's tokens) and prompts.
    tokenizer = load_tokenizer(policy_path, cfg.model.trust_remote_code)
    if load_tokenizer(rm_path, cfg.model.trust_remote_code).get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"The reward model {rm_path} has a different tokenizer from the policy {policy_path}; "
                         "PPO scores the policy's tokens directly. Train the RM from the SFT model (the default).")
    prompt_kw = dict(on_bad_row=cfg.data.on_bad_row, tokenizer=tokenizer, config_prefix="data.")
    part = prompt_parts(cfg.data.get("holdout"))
    train_prompts, train_report = load_prompts(cfg.data.train, limit=cfg.data.limit, holdout=part("train"), **prompt_kw)
    train_prompts, train_ids, train_report = tokenize_prompts(tokenizer, train_prompts, cfg.max_prompt_length,
                                                              cfg.on_too_long, cfg.data.train, train_report)
    skipped = train_report.skipped["too_long"]
    val_prompts, val_report = (load_prompts(cfg.data.validation, limit=cfg.eval.num_prompts, holdout=part("validation"),
                                            **prompt_kw) if cfg.eval.every
                               else ([], None))
    val_ids = [chat_prompt_ids(tokenizer, q) for q in val_prompts]
    gold = cfg.data.gold == "farm"
    test_prompts, test_report = (load_prompts(cfg.data.test, limit=cfg.eval.num_test_prompts, holdout=part("validation"),
                                              **prompt_kw)
                                 if cfg.eval.final else ([], None))
    ptx, ptx_report = _ptx_batches(cfg, tokenizer) if p.ptx_coef > 0 else (None, None)
    log.info("%d train prompts (%d too long, skipped), %d monitoring prompts, %d test prompts", len(train_ids), skipped,
             len(val_ids), len(test_prompts))

    # 3. Models, the training backend (optimizers and schedulers, or DeepSpeed engines), KL controller.
    models = load_ppo_models(policy_path, rm_path, tokenizer.pad_token_id, p.mode, to_plain(p.lora), to_plain(p.lora),
                             device=device)
    spec = RewardSpec(*read_normalization(rm_path, cfg.reward_model.normalize), p.no_eos_penalty,
                      tokenizer.eos_token_id, tokenizer.pad_token_id, reward_suffix_ids(tokenizer))
    steps_per_iter = p.ppo_epochs * math.ceil(p.rollout_batch_size / p.mini_batch_size)
    schedule = lr_lambda(p.lr_scheduler, p.total_iterations * steps_per_iter)
    kl_ctl = make_kl_controller(p.kl.kind, **controller_options(p.kl))
    trainable_pi, total_pi = count_parameters(models.policy)
    trainable_v, total_v = count_parameters(models.value)
    log.info("mode=%s: policy trains %d of %d parameters, value %d of %d", p.mode, trainable_pi, total_pi, trainable_v, total_v)

    before = snapshot_trainable(models.policy) if is_main_process() else {}  # SFT weights (LoRA: zero deltas)
    ref_before = reference_fingerprint(models)
    steps = make_steps(models, dp, policy_lr=p.policy_lr, value_lr=p.value_lr, eps=p.adam_eps, weight_decay=p.weight_decay,
                       max_grad_norm=p.max_grad_norm, schedule=schedule, micro=local_micro,
                       accumulation=local_mini // local_micro, precision=cfg.precision, device=device)

    # 4. Resume: the backend restores weights, optimizers and RNG; the loop's own state is restored here.
    start_iter = 0
    state = steps.load(resume_from) if resume_from is not None else None
    if state is not None:
        kl_ctl.load_state_dict(state["kl"])
        if ptx is not None:
            ptx.position = state["ptx_position"]
        start_iter = state["iteration"]
        if is_main_process():
            truncate_history(out_dir, start_iter)
        log.info("resumed at iteration %d from %s (beta %.4f)", start_iter, resume_from, kl_ctl.value)
    elif is_main_process():
        truncate_history(out_dir, -1)  # a fresh start (also resume=true without a complete checkpoint)

    # 5. The loop (a fresh run first records the SFT policy as iteration 0 of the monitor).
    tracker = open_tracker(cfg, out_dir)
    tracker.use_inputs(policy_path, rm_path, cfg.data.train, cfg.data.validation, cfg.data.test)

    def monitor(iteration: int, stats: dict) -> None:
        with autocast:
            snap, greedy, _ = policy_snapshot(models, tokenizer, val_prompts, val_ids, spec,
                                              cfg.generation.max_new_tokens, cfg.generation.temperature,
                                              p.micro_batch_size, gold)
        row = {"iteration": iteration, "samples": iteration * p.rollout_batch_size,
               "ppo/kl_ref": stats.get("ppo/kl_ref", 0.0), **snap}
        if is_main_process():
            append_history(out_dir, row)
        stats.update(snap)
        tracker.log_table("samples", ["iteration", "prompt", "response"],
                          [[iteration, q, r] for q, r in zip(val_prompts, greedy.texts)][: cfg.eval.num_samples_logged])
        log.info("monitor @%d: %s", iteration, json.dumps({k: round(v, 4) for k, v in snap.items()}))

    if cfg.eval.every and start_iter == 0 and steps.monitors:
        start_stats: dict[str, float] = {}
        monitor(0, start_stats)
        tracker.log(start_stats, step=0)
    timed = {"samples": 0, "seconds": 0.0}
    last: dict[str, float] = {}
    for it in range(start_iter, p.total_iterations):
        # 5.1 Rollout: this process's share of the iteration's prompts (a function of seed and it).
        t0 = time.perf_counter()
        positions = dp.share(list(range(p.rollout_batch_size)))
        batch_indices = prompt_indices(len(train_ids), it, p.rollout_batch_size, cfg.seed)
        indices = [batch_indices[k] for k in positions]
        batch = [train_ids[i] for i in indices]
        seeds = [row_seed(cfg.seed, it, k) for k in positions] if cfg.generation.row_seeds else None
        steps.seed_sampling(cfg.seed, it, p.rollout_batch_size)
        with autocast:
            rollout = generate_rollout(models.policy, batch, spec.eos_token_id, spec.pad_token_id,
                                       cfg.generation.max_new_tokens, True, cfg.generation.temperature,
                                       cfg.generation.top_p, row_seeds=seeds)
            # 5.2 Experience: log-probs, values, scores, KL-shaped rewards, advantages and returns.
            exp, stats = make_experience(models, rollout, spec, kl_ctl.value, p.kl_estimator, p.gamma, p.lam,
                                         p.whiten_advantages, cfg.generation.temperature, local_micro,
                                         dp.sum if dp.world > 1 else None)
        if (it + 1) % cfg.log_every == 0:  # a few of this iteration's rollouts, as a W&B table
            k = cfg.eval.num_samples_logged
            texts = decode_responses(tokenizer, rollout.select(slice(0, k)))
            tracker.log_table("rollout_samples", ["iteration", "prompt", "response", "score"],
                              [[it + 1, train_prompts[i], r, round(float(sc), 3)]
                               for i, r, sc in zip(indices[:k], texts, exp.scores[:k])])
        del rollout
        release_free_memory()  # glibc keeps freed pages: without this, memory grows every iteration
        # 5.3 Update: ppo_epochs over shuffled minibatches (the critic alone during its warm-up).
        t1 = time.perf_counter()
        stats.update(_update(models, exp, steps, dp, cfg, it, autocast, ptx, (local_mini, local_micro),
                             train_policy=it >= p.critic_warmup_iterations))
        del exp
        release_free_memory()
        # 5.4 KL control: beta moves towards its target (the logged value is the one this iteration used).
        stats["ppo/kl_coef"] = kl_ctl.value
        kl_ctl.update(stats["ppo/kl_ref"], p.rollout_batch_size)
        t2 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.empty_cache()  # generation and training must not keep each other's buffers
        # 5.5 Log, monitor, checkpoint.
        stats.update({"timing/rollout": t1 - t0, "timing/update": t2 - t1, "rollout/samples": (it + 1) * p.rollout_batch_size,
                      "ppo/lr": steps.lr()})
        if it > start_iter or p.total_iterations - start_iter == 1:  # the first iteration warms up
            timed["samples"] += p.rollout_batch_size
            timed["seconds"] += t2 - t0
        if (it + 1) % cfg.log_every == 0 or it + 1 == p.total_iterations:
            log.info("iter %d/%d | %s", it + 1, p.total_iterations, " ".join(
                f"{k.split('/')[-1]}={v:.4g}" for k, v in stats.items() if k.startswith(("ppo/", "rollout/score", "timing/"))))
        if cfg.eval.every and ((it + 1) % cfg.eval.every == 0 or it + 1 == p.total_iterations) and steps.monitors:
            monitor(it + 1, stats)
        tracker.log(stats, step=it + 1)
        last = stats
        if cfg.checkpoint.every and (it + 1) % cfg.checkpoint.every == 0:
            rest = {"kl": kl_ctl.state_dict(), "ptx_position": ptx.position if ptx is not None else 0}
            steps.save_checkpoint(out_dir / "checkpoints", it + 1, rest, cfg.checkpoint.keep, run_state)

    # 6. Finish, compare with SFT on the test prompts, save, metrics. Under DeepSpeed each process
    #    reports what it holds, ZeRO-3 gathers final/ from the shards, and only rank 0 goes on
    #    (with plain models reloaded from the folders under ZeRO-3).
    reference_unchanged = reference_fingerprint(models) == ref_before
    models = steps.finish(out_dir, tokenizer, policy_path, rm_path, device)
    if models is None:  # not rank 0
        return float("nan")
    # The monitor's held-out scores are in history.jsonl; metrics.json's gold/rm/kl/gen come from the test prompts.
    metrics = {k: v for k, v in last.items() if not k.startswith(("timing/", "gold/", "rm/", "kl/", "gen/"))}
    metrics.update({
        "ppo/iterations": p.total_iterations,
        "ppo/kl_coef_final": kl_ctl.value,
        "perf/samples_per_s": timed["samples"] / timed["seconds"] if timed["seconds"] else float("nan"),
        "perf/peak_rss_mb": peak_rss_mb(),
        "model/policy_trainable_parameters": trainable_pi,
        "model/value_trainable_parameters": trainable_v,
        "train/policy_delta_norm": trainable_delta_norm(models.policy, before),
        "train/reference_unchanged": reference_unchanged,
        **train_report.as_metrics("data/train/"),
        **(val_report.as_metrics("data/validation/") if val_report is not None else {}),
        **(ptx_report.as_metrics("data/ptx/") if ptx_report is not None else {}),
        **run_state.metrics(),
    })
    if device.type == "cuda":
        metrics["perf/peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if cfg.eval.final:
        with autocast:
            metrics.update(final_comparison(models, tokenizer, spec, cfg, gold, tracker, test_prompts, test_report))
    plot_history(out_dir, read_history(out_dir))
    steps.save_final(models, tokenizer, out_dir)  # refused with non-finite weights; ZeRO-3: already written by finish(), from the shards
    write_metrics(out_dir, {**metrics, **tracker.metrics()})
    tracker.log_stage_artifact(out_dir, "model")
    tracker.finish(metrics)
    return metrics.get("gold/win_rate_vs_sft", metrics.get("rm/score_mean", float("nan")))


def _update(models, exp, steps, dp, cfg, it, autocast, ptx, sizes, train_policy: bool) -> dict[str, float]:
    """``ppo_epochs`` passes over shuffled minibatches; gradient accumulation over micro-batches.

    Each micro-batch's losses are token means, weighted by its share of the minibatch's real
    tokens (over every process): the minibatch's loss is the token mean over the whole minibatch,
    whatever the micro-batch size or the number of processes. ``sizes``: this process's
    minibatch and micro-batch sizes.
    """
    p = cfg.ppo
    mini, micro_size = sizes
    models.policy.train()
    models.value.train()
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + it)  # the shuffle is a function of (seed, it)
    sums: dict[str, float] = {}
    n_mb = 0
    for _ in range(p.ppo_epochs):
        for mb in exp.minibatches(mini, generator):
            tokens = float(dp.sum(mb.response_mask.sum().double()))
            for start in range(0, len(mb), micro_size):
                micro = mb._map(lambda x, s=start: x[s : s + micro_size]).trimmed()
                share = float(micro.response_mask.sum()) / tokens
                stats = _micro_step(models, micro, cfg, share, len(micro) / len(mb), autocast, ptx, train_policy, steps)
                _check_finite_losses(stats, dp, it + 1)  # before any optimizer step takes them
                steps.micro_done(it + 1)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v * share
            steps.minibatch_done(it + 1)
            n_mb += 1
    return {k: v / max(n_mb, 1) for k, v in dp.sum_stats(sums).items()}


def _micro_step(models, micro, cfg, share: float, rows: float, autocast, ptx, train_policy: bool, steps) -> dict[str, float]:
    """Forward and backward of one micro-batch; returns its statistics.

    The value model and the policy are separate networks with separate losses, so each loss is
    backpropagated on its own: only one model's activations are alive at a time (the peak is the
    larger of the two, not their sum). ``share`` is the micro-batch's share of the minibatch's
    real tokens (over all processes), ``rows`` its share of this process's minibatch rows (the
    weight of its PPO-ptx batch, averaged over processes).
    """
    p = cfg.ppo
    view = experience_rollout(micro)
    mask = micro.response_mask
    steps.before_forward("value")
    with autocast:
        values = response_values(models.value, view)
        v_loss, v_stats = ppo_value_loss(values, micro.values, micro.returns, mask, p.clip_range_value)
    steps.backward("value", p.vf_coef * v_loss * share * steps.scale)
    stats = {"ppo/value_loss": v_loss.item(), **{f"ppo/{k}": v.item() for k, v in v_stats.items()}}
    del values, v_loss
    if not train_policy:  # critic warm-up
        return stats
    steps.before_forward("policy")
    with autocast:
        logits = response_logits(models.policy, view, cfg.generation.temperature)
        logprobs = logprobs_from_logits(logits, micro.responses)
        loss, pg_stats = ppo_policy_loss(logprobs, micro.old_logprobs, micro.advantages, mask, p.clip_range)
        entropy = masked_entropy_from_logits(logits if p.entropy_coef else logits.detach(), mask)
        stats.update({"ppo/policy_loss": loss.item(), "ppo/entropy": entropy.item(),
                      **{f"ppo/{k}": v.item() for k, v in pg_stats.items()}})
        if p.entropy_coef:
            loss = loss - p.entropy_coef * entropy
    steps.backward("policy", loss * share * steps.scale, last=ptx is None)
    del logits, logprobs, loss, entropy
    if ptx is not None:
        from align.ppo.ptx import ptx_loss

        ids, attn, labels = ptx.next(micro.responses.device)
        with autocast:
            lp = ptx_loss(models.policy, ids, attn, labels)
        steps.backward("policy", p.ptx_coef * lp * rows * steps.scale / steps.world)
        stats["ppo/ptx_loss"] = lp.item()
    return stats


LOSSES = ("ppo/value_loss", "ppo/policy_loss", "ppo/ptx_loss")


def _check_finite_losses(stats: dict[str, float], dp, iteration: int) -> None:
    """Stop at a non-finite value, policy or PPO-ptx loss of a micro-batch, on every process at
    once (one flag summed over processes, so no process waits in a collective for a dead one).

    Raises:
        NonFiniteError: Naming the loss, its value (this process's; NaN when another process saw
            it) and the iteration.
    """
    bad = next(((k, v) for k, v in stats.items() if k in LOSSES and not math.isfinite(v)), None)
    if dp.world > 1:
        if float(dp.sum(torch.tensor([1.0 if bad else 0.0]))) == 0:
            return
        bad = bad or ("loss (on another process)", float("nan"))
    if bad is not None:
        raise NonFiniteError("ppo", iteration, bad[0].removeprefix("ppo/").replace("_", " "), bad[1])


def _check_output_folders(out_dir) -> None:
    """Refuse, before any work, an output path that a file blocks (``final/``, ``checkpoints/``)."""
    for name in ("final", "final_adapter", "checkpoints"):
        if (out_dir / name).exists() and not (out_dir / name).is_dir():
            raise CheckpointError(f"ppo: {out_dir / name} is a file, where the stage writes the folder {name}/. "
                                  "Move or remove it, then rerun.")


@torch.no_grad()
def final_comparison(models, tokenizer, spec, cfg, gold: bool, tracker, prompts: list[str], report) -> dict[str, float]:
    """PPO vs. SFT (the reference) on the test prompts (read in step 2): gold and reward-model
    scores, win rates, KL."""
    from align.eval.gold import gold_metrics, sample_rows
    from align.eval.policy import compare_with
    from align.generation import Generations
    from align.ppo.experience_maker import score_rollout

    ids = [chat_prompt_ids(tokenizer, q) for q in prompts]
    out, ppo, ppo_rm = policy_snapshot(models, tokenizer, prompts, ids, spec, cfg.generation.max_new_tokens,
                                       cfg.generation.temperature, cfg.ppo.micro_batch_size, gold)
    sft, sft_rm = Generations(), []
    with models.reference() as ref:
        for start in range(0, len(ids), cfg.ppo.micro_batch_size):
            r = generate_rollout(ref, ids[start : start + cfg.ppo.micro_batch_size], spec.eos_token_id,
                                 spec.pad_token_id, cfg.generation.max_new_tokens, do_sample=False)
            sft.extend(rollout_generations(tokenizer, prompts[start : start + cfg.ppo.micro_batch_size],
                                           ids[start : start + cfg.ppo.micro_batch_size], r))
            sft_rm += score_rollout(models, r, spec, cfg.ppo.micro_batch_size)[0].tolist()
    if gold:
        out.update(gold_metrics(prompts, ppo))
    out.update(compare_with(prompts, ppo, sft, name="sft", gold=gold, rm=ppo_rm, baseline_rm=sft_rm))
    if gold:
        rows = [[q, s, r, g] for (q, r, g), s in zip(sample_rows(prompts, ppo, 8), sft.texts)]
        tracker.log_table("final_samples", ["prompt", "sft", "ppo", "ppo_gold"], rows)
        log.info("test prompts: gold PPO %.3f vs SFT %.3f, win rate %.3f", out["gold/score_mean"],
                 out["gold/sft_score_mean"], out["gold/win_rate_vs_sft"])
    for q, s, r in list(zip(prompts, sft.texts, ppo.texts))[:4]:
        log.info("sample | %s\n  sft: %s\n  ppo: %s", q, s, r)
    return {**out, **report.as_metrics("data/test/")}


def _validate(cfg) -> None:
    p = cfg.ppo
    if p.mode not in MODES:
        raise ValueError(f"ppo.mode={p.mode!r} is not one of {', '.join(MODES)}.")
    for name in ("rollout_batch_size", "mini_batch_size", "micro_batch_size", "ppo_epochs", "total_iterations"):
        if int(p[name]) < 1:
            raise ValueError(f"ppo.{name} must be >= 1, got {p[name]}.")
    if p.mini_batch_size > p.rollout_batch_size or p.micro_batch_size > p.mini_batch_size:
        raise ValueError(
            f"need micro_batch_size ({p.micro_batch_size}) <= mini_batch_size ({p.mini_batch_size}) <= "
            f"rollout_batch_size ({p.rollout_batch_size})."
        )
    if p.rollout_batch_size % p.mini_batch_size or p.mini_batch_size % p.micro_batch_size:
        raise ValueError(
            f"ppo.rollout_batch_size ({p.rollout_batch_size}) must be a multiple of mini_batch_size "
            f"({p.mini_batch_size}), and mini_batch_size of micro_batch_size ({p.micro_batch_size})."
        )
    if cfg.on_too_long not in ("error", "skip"):
        raise ValueError(f"on_too_long={cfg.on_too_long!r} is not one of error, skip.")
    if not cfg.generation.temperature > 0:
        raise ValueError("generation.temperature must be > 0 (PPO samples; greedy rollouts have no ratio).")
    precision_args(cfg.precision)  # refuses fp16 on CPU with a fix
    if zero_stage(to_plain(cfg.deepspeed.get("config")) or None) == 3 and p.mode == "lora":
        raise ValueError("ppo.mode=lora cannot run under DeepSpeed ZeRO-3 (the reference is the policy's base with "
                         "its adapter off, and adapters are saved from whole weights): use deepspeed=zero2 "
                         "(or zero1) with ppo.mode=lora, or ppo.mode=full with zero3.")




def _ptx_batches(cfg, tokenizer):
    from align.ppo.ptx import DemonstrationBatches, load_demonstrations

    rows, report = load_demonstrations(cfg.data.ptx, tokenizer, cfg.max_prompt_length + cfg.generation.max_new_tokens,
                                       on_bad_row=cfg.data.on_bad_row, config_prefix="data.")
    report.log(log)
    return DemonstrationBatches(rows, cfg.ppo.ptx_batch_size, tokenizer.pad_token_id, cfg.seed), report


main = stage_main("ppo", run)


if __name__ == "__main__":
    main()
