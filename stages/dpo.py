"""Stage ``dpo``: direct preference optimisation on TRL's ``DPOTrainer``, then measured.

Starts from this run's SFT model and trains on the ranked preferences the reward model uses,
turned into pairs by ``dpo.pair_rule``. Loss variants (``dpo.loss``: DPO, IPO, conservative DPO,
hinge, robust) and reference modes (``dpo.reference``: a frozen ``copy``, the ``adapter``-disabled
base under LoRA, or ``precomputed`` log-probs) are set up and checked in ``align.dpo``. Over-long
pairs are truncated by us and counted; TRL would cut or drop them without a count.

Steps:
    1. Validate (before any model is loaded); seed, output folder, logging.
    2. Tokenizer, preference data (train and held-out), pairs tokenized.
    3. Policy (4-bit base for QLoRA) and, for ``reference=copy``, the frozen reference.
    4. Train with DPOTrainer; check the reference did not move.
    5. Save ``final/`` as full weights (``final_adapter/`` too under PEFT); under DeepSpeed ZeRO-3
       shards are gathered first, and only rank 0 goes on from here.
    6. Evaluate: held-out DPO loss and reward accuracy; greedy responses of the trained policy
       and its SFT start on the test prompts under the gold oracle (score, win rate); KL to the
       reference on the policy's samples; ``metrics.json``; return ``gold/win_rate_vs_sft``.

Run: ``make dpo`` (after ``make prefs``) or ``python stages/dpo.py [overrides]``; N processes with
DeepSpeed ZeRO: ``make dpo NPROC=2 DS=zero3`` (docs/distributed.md).
"""

from __future__ import annotations

import json
import logging
import time

from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import AutoConfig
from trl import DPOConfig

from align.cli import stage_main
from align.config import begin_stage, open_tracker, resume_state, to_plain
from align.data import ChatPrompt, load_preferences, load_prompts
from align.distributed import check_deepspeed_choice, deepspeed_args, finish_training, whole_parameters
from align.dpo import (
    PretokenizedDPOTrainer,
    check_dpo_choice,
    first_logged,
    last_logged,
    loss_args,
    pairs_to_dataset,
    tokenize_pairs,
)
from align.eval.gold import gold_metrics, sample_rows
from align.eval.policy import compare_with, generation_metrics, measure_kl
from align.generation import generate
from align.models.adapters import check_peft_choice, check_quantizable, quantization_config, save_full_final
from align.models.loading import (
    count_parameters,
    is_base_parameter,
    load_causal_lm,
    load_tokenizer,
    params_checksum,
    resolve_full_model_path,
    snapshot_trainable,
    trainable_delta_norm,
)
from align.models.precision import precision_args
from align.outputs import write_metrics
from align.runtime import peak_rss_mb
from align.trainer_guard import GUARD_ARGS, PREFIX, TrainingGuard, check_finite_weights

log = logging.getLogger("align.dpo")


def run(cfg: DictConfig) -> float:
    """Run the stage; return the gold win rate against SFT (``-eval/loss`` without an oracle)."""
    # 1. Validate before anything is loaded.
    d = cfg.dpo
    check_dpo_choice(d.loss, d.reference, cfg.peft.method, d.label_smoothing, d.beta, d.pair_rule)
    check_peft_choice(cfg.peft.method, cfg.peft.merge, cfg.peft.config, False, cfg.trainer.gradient_checkpointing)
    check_deepspeed_choice(to_plain(cfg.deepspeed.config), cfg.peft.method)
    if d.gold not in ("farm", None):
        raise ValueError(f"dpo.gold={d.gold!r} is not one of farm, null.")
    start_path = resolve_full_model_path(cfg.model.name_or_path)  # a finished stage's final/ (before this one starts)
    out_dir = begin_stage(cfg)
    run_state = resume_state(cfg, out_dir / "checkpoints", PREFIX)  # the same run, or refused; a fresh one drops old ones

    # 2. Tokenizer, data, pairs.
    tokenizer = load_tokenizer(start_path, cfg.model.trust_remote_code)
    max_length = cfg.data.max_length
    data_kw = dict(format=cfg.data.format, on_bad_row=cfg.data.on_bad_row, tokenizer=tokenizer,
                   max_length=max_length, on_too_long=cfg.data.on_too_long, config_prefix="data.")
    train_ex, train_report = load_preferences(cfg.data.train.source, cfg.data.train.split, limit=cfg.data.limit,
                                              holdout=to_plain(cfg.data.train.get("holdout")), **data_kw)
    val_ex, val_report = load_preferences(cfg.data.validation.source, cfg.data.validation.split,
                                          holdout=to_plain(cfg.data.validation.get("holdout")), **data_kw)
    log.info("data: %s | %s", train_report.summary(), val_report.summary())
    train_rows, train_counts = tokenize_pairs(train_ex, tokenizer, d.pair_rule, max_length)
    val_rows, val_counts = tokenize_pairs(val_ex, tokenizer, d.pair_rule, max_length)
    log.info("pairs (rule %s): train %s | validation %s", d.pair_rule, train_counts, val_counts)
    train_ds, val_ds = pairs_to_dataset(train_rows), pairs_to_dataset(val_rows)
    eval_prompts, eval_report = (load_prompts(cfg.eval.prompts, limit=cfg.eval.num_prompts, on_bad_row=cfg.data.on_bad_row,
                                              tokenizer=tokenizer, config_prefix="data.") if cfg.eval.prompts
                                 else ([ChatPrompt(ex.prompt) if len(ex.prompt) > 1 else ex.prompt[0]["content"]
                                        for ex in val_ex][: cfg.eval.num_prompts], None))

    # 3. Policy and (reference=copy) its frozen copy.
    check_quantizable(AutoConfig.from_pretrained(start_path), cfg.peft.method)
    quant = quantization_config(to_plain(cfg.peft.get("quantization")))
    model_kw = dict(dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code,
                    attn_implementation=cfg.model.attn_implementation)
    model = load_causal_lm(start_path, quantization_config=quant, **model_kw)
    ref_model = load_causal_lm(start_path, **model_kw).eval().requires_grad_(False) if d.reference == "copy" else None
    peft_config = instantiate(cfg.peft.config, _convert_="all") if cfg.peft.method != "none" else None

    # 4. Train. max_length=None: the rows already fit (tokenize_pairs), so TRL cuts nothing.
    tracker = open_tracker(cfg, out_dir)
    tracker.use_inputs(cfg.model.name_or_path, cfg.data.train.source, cfg.data.validation.source, cfg.eval.prompts)
    setup_start = time.perf_counter()
    args = DPOConfig(
        output_dir=str(out_dir / "checkpoints"), report_to=tracker.report_to, seed=cfg.seed, **GUARD_ARGS,
        beta=d.beta, max_length=None, precompute_ref_log_probs=d.reference == "precomputed",
        **loss_args(d.loss, d.label_smoothing), **precision_args(cfg.precision),
        **deepspeed_args(to_plain(cfg.deepspeed.config)), **to_plain(cfg.trainer),
    )
    trainer = PretokenizedDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train_ds,
                                     eval_dataset=val_ds, processing_class=tokenizer, peft_config=peft_config)
    trainer.add_callback(guard := TrainingGuard(run_state).bind(trainer))
    if len(trainer.train_dataset) != len(train_rows):  # the guard: nothing may vanish inside TRL
        raise RuntimeError(f"DPOTrainer kept {len(trainer.train_dataset)} of {len(train_rows)} pairs.")
    setup_seconds, rss_setup = time.perf_counter() - setup_start, peak_rss_mb()  # includes precomputing
    trainable, total = count_parameters(trainer.model)
    ref_checksum = _reference_checksum(trainer, d.reference)
    log.info("training %d of %d parameters, loss=%s beta=%g reference=%s, %d pairs",
             trainable, total, d.loss, d.beta, d.reference, len(train_rows))
    before = snapshot_trainable(trainer.model)
    start = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=str(run_state.resumed_from) if run_state.resumed_from else None)
    train_seconds = time.perf_counter() - start
    rss_train = peak_rss_mb()
    ref_after = _reference_checksum(trainer, d.reference)
    eval_out = trainer.evaluate()  # every rank (a collective under DeepSpeed)
    history = trainer.state.log_history

    # 5. Save: final/ is a full causal LM (adapters merged); final_adapter/ under PEFT. ZeRO-3
    #    shards are gathered into final/ first; other ranks stop here.
    trained = finish_training(trainer, out_dir / "final", lambda path: load_causal_lm(path, **model_kw))
    if trained is None:  # not rank 0
        return float("nan")
    check_finite_weights(trained, "dpo", train_out.global_step, "final weights")
    delta = trainable_delta_norm(trained, before)
    if ref_checksum is not None and ref_after != ref_checksum:
        raise RuntimeError(f"the reference moved during training (checksum {ref_checksum} -> {ref_after}).")
    save_full_final(trained, tokenizer, out_dir, cfg.peft.method)
    final_dir = out_dir / "final"
    log.info("saved %s", final_dir)
    loaded_in_4bit = bool(getattr(model, "is_loaded_in_4bit", False))
    del trainer, model, ref_model, trained

    # 6. Evaluate the saved policy against its SFT start (which is also the reference).
    policy = load_causal_lm(str(final_dir), **model_kw)
    sft = load_causal_lm(start_path, **model_kw)
    metrics = {
        "train/loss": guard.train_loss(train_out),
        "train/first_loss": first_logged(history, "loss"),
        "train/rewards/accuracies": last_logged(history, "rewards/accuracies"),
        "train/rewards/margins": last_logged(history, "rewards/margins"),
        "train/rewards/chosen": last_logged(history, "rewards/chosen"),
        "train/rewards/rejected": last_logged(history, "rewards/rejected"),
        "train/steps": train_out.global_step,
        "train/samples_per_s": train_out.metrics.get("train_samples_per_second"),  # pairs per second
        "train/trainable_delta_norm": delta,
        "train/pairs": train_counts["pairs"],
        "train/truncated_pairs": train_counts["truncated_pairs"],
        "train/truncated_responses": train_counts["truncated_responses"],
        "eval/loss": eval_out["eval_loss"],
        "eval/rewards/accuracies": eval_out.get("eval_rewards/accuracies"),
        "eval/rewards/margins": eval_out.get("eval_rewards/margins"),
        "eval/pairs": val_counts["pairs"],
        "model/parameters": total,
        "model/trainable_parameters": trainable,
        "model/loaded_in_4bit": loaded_in_4bit,
        **run_state.metrics(),
        "memory/peak_rss_setup_mb": rss_setup,  # models loaded (+ reference log-probs precomputed)
        "memory/peak_rss_train_mb": rss_train,
        "timing/setup_s": setup_seconds,
        "timing/train_s": train_seconds,
        "ref/checksum_before": ref_checksum,  # sum of the reference weights (null: precomputed, no model)
        "ref/checksum_after": ref_after,
        **train_report.as_metrics("data/train/"),
        **val_report.as_metrics("data/validation/"),
        **(eval_report.as_metrics("data/eval_prompts/") if eval_report is not None else {}),
    }
    # KL(dpo || sft) on the policy's own samples (temperature 1, full softmax), then greedy responses.
    gen = dict(max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size)
    samples = generate(policy, tokenizer, eval_prompts, do_sample=True, desc="kl: sample", **gen)
    metrics.update(measure_kl(policy, sft, samples, tokenizer.pad_token_id, cfg.eval.kl_batch_size, desc="kl"))
    metrics.update(generation_metrics(samples, prefix="gen/sampled_"))
    if d.gold == "farm":
        ours = generate(policy, tokenizer, eval_prompts, desc="gold: dpo", **gen)
        base = generate(sft, tokenizer, eval_prompts, desc="gold: sft", **gen)
        metrics.update(gold_metrics(eval_prompts, ours, prefix="gold/"))
        metrics.update(generation_metrics(ours))
        metrics.update(compare_with(eval_prompts, ours, base, name="sft", gold=True))
        tracker.log_table("samples", ["prompt", "response", "gold"], sample_rows(eval_prompts, ours, cfg.eval.num_samples_logged))
        for (p, r, s), (_, rb, sb) in zip(sample_rows(eval_prompts, ours, 3), sample_rows(eval_prompts, base, 3)):
            log.info("sample | %s\n  dpo (%.2f): %s\n  sft (%.2f): %s", p, s, r, sb, rb)
    metrics["timing/total_s"] = time.perf_counter() - start
    metrics["memory/peak_rss_mb"] = peak_rss_mb()
    write_metrics(out_dir, {**metrics, **tracker.metrics()})
    tracker.log_stage_artifact(out_dir, "model")
    tracker.finish({k: v for k, v in metrics.items() if not isinstance(v, str) and v is not None})
    log.info("results: %s", json.dumps({k: metrics[k] for k in sorted(metrics) if k.split("/")[0] in ("eval", "gold", "kl")}))
    return metrics["gold/win_rate_vs_sft"] if d.gold == "farm" else -metrics["eval/loss"]


def _reference_checksum(trainer, reference: str) -> float | None:
    """Fingerprint of the weights the reference log-probs come from (None: precomputed, no model)."""
    if reference == "copy":
        with whole_parameters(trainer.ref_model):  # ZeRO-3: gathered on every rank (all ranks call this)
            return params_checksum(trainer.ref_model)
    if reference == "adapter":
        return params_checksum(trainer.model, include=is_base_parameter)
    return None


main = stage_main("dpo", run)


if __name__ == "__main__":
    main()
