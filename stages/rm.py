"""Stage ``rm``: a scalar reward model trained on ranked human preferences, then measured.

Initialised from this run's SFT model (InstructGPT: transfer from the policy; any model by
config). Ranked lists (K = 2..9) train with our K-wise loss (InstructGPT all pairs from one
forward pass per prompt, or Plackett-Luce); ``rm.loss=pairwise`` sends pairs through TRL's
``RewardTrainer`` (Bradley-Terry, optional margin and centering). Over-long sequences are
left-truncated and counted, never silently dropped.

Steps:
    1. Validate; seed, output folder, logging, tracker.
    2. Tokenizer and preference data (train and held-out).
    3. Reward model: SFT weights + a new scalar head (full or PEFT), optionally with identity-
       initialised read-out layers on top (``rm.readout_layers``).
    4. Train (ranked trainer, or TRL's RewardTrainer on pairs).
    5. Save ``final/`` with ``reward_normalization.json`` (under DeepSpeed, ZeRO-3 shards are
       gathered first, and only rank 0 goes on from here).
    6. Report card on held-out lists (accuracy vs. annotators and gold, calibration, length bias,
       reward scale), plots, the gate; ``metrics.json``; return ``gold/accuracy``.

Run: ``make rm`` (after ``make sft``; collects preferences first with ``make prefs``); N processes
with DeepSpeed ZeRO: ``make rm NPROC=2 DS=zero3`` (docs/distributed.md).
"""

from __future__ import annotations

import json
import logging
import time

from datasets import Dataset
from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import AutoConfig, TrainingArguments
from trl import RewardConfig, RewardTrainer

from align.cli import stage_main
from align.config import begin_stage, open_tracker, resume_state, to_plain
from align.data import load_preferences, to_pairs
from align.distributed import check_deepspeed_choice, deepspeed_args, finish_training
from align.farm import gold_score
from align.models.adapters import check_peft_choice, check_quantizable, quantization_config
from align.models.loading import (
    count_parameters,
    load_tokenizer,
    resolve_full_model_path,
    snapshot_trainable,
    trainable_delta_norm,
)
from align.models.precision import precision_args
from align.outputs import FINAL, write_metrics
from align.rm.folder import load_reward_model, save_reward_model, write_normalization
from align.rm.model import (
    LOSSES,
    RankedCollator,
    RankedRewardTrainer,
    add_readout_layers,
    score_lists,
    tokenize_ranked,
    tokenize_response,
)
from align.rm.report import accuracy_interval, apply_gate, policy_mask, report_card
from align.trainer_guard import GUARD_ARGS, PREFIX, TrainingGuard, check_finite_weights

log = logging.getLogger("align.rm")
RM_PEFT = ("none", "lora", "qlora", "ia3")


def run(cfg: DictConfig) -> float:
    """Run the stage; return held-out gold accuracy (annotator accuracy without an oracle)."""
    # 1. Validate before anything is loaded.
    if cfg.rm.loss not in LOSSES:
        raise ValueError(f"rm.loss={cfg.rm.loss!r} is not one of {', '.join(LOSSES)}.")
    if cfg.peft.method not in RM_PEFT:
        raise ValueError(f"peft={cfg.peft.method} is not supported for reward models; use one of {', '.join(RM_PEFT)}.")
    readout_layers = _readout_layers(cfg)
    check_peft_choice(cfg.peft.method, cfg.peft.merge, cfg.peft.config, False, cfg.trainer.gradient_checkpointing)
    check_deepspeed_choice(to_plain(cfg.deepspeed.config), cfg.peft.method)
    base = resolve_full_model_path(cfg.model.name_or_path)  # a finished stage's final/ (before this one starts)
    out_dir = begin_stage(cfg)
    run_state = resume_state(cfg, out_dir / "checkpoints", PREFIX)  # the same run, or refused; a fresh one drops old ones

    # 2. Tokenizer and data.
    tokenizer = load_tokenizer(base, cfg.model.trust_remote_code)
    data_kw = dict(format=cfg.data.format, on_bad_row=cfg.data.on_bad_row, tokenizer=tokenizer,
                   max_length=cfg.data.max_length, on_too_long=cfg.data.on_too_long, config_prefix="data.")
    train_ex, train_report = load_preferences(cfg.data.train.source, cfg.data.train.split, limit=cfg.data.limit,
                                              holdout=to_plain(cfg.data.train.get("holdout")), **data_kw)
    val_ex, val_report = load_preferences(cfg.data.validation.source, cfg.data.validation.split,
                                          holdout=to_plain(cfg.data.validation.get("holdout")), **data_kw)
    log.info("data: %s | %s", train_report.summary(), val_report.summary())

    # 3. Model (4-bit base for QLoRA).
    check_quantizable(AutoConfig.from_pretrained(base), cfg.peft.method)
    quant = quantization_config(to_plain(cfg.peft.get("quantization")))
    extra = {"quantization_config": quant} if quant is not None else {}
    model = load_reward_model(base, tokenizer.pad_token_id, cfg.model.dtype, new_head=True,  # SFT weights + a new score head
                              trust_remote_code=cfg.model.trust_remote_code, **extra)
    lm_layers = model.config.num_hidden_layers  # the LM's own layers; read-out layers go on top
    model = add_readout_layers(model, readout_layers)
    peft_config = None
    if cfg.peft.method != "none":
        peft_config = instantiate(cfg.peft.config, task_type="SEQ_CLS", _convert_="all")

    # 4. Train.
    tracker = open_tracker(cfg, out_dir)
    tracker.use_inputs(cfg.model.name_or_path, cfg.data.train.source, cfg.data.validation.source)
    common = dict(output_dir=str(out_dir / "checkpoints"), report_to=tracker.report_to, seed=cfg.seed, **GUARD_ARGS,
                  **precision_args(cfg.precision), **deepspeed_args(to_plain(cfg.deepspeed.config)),
                  **to_plain(cfg.trainer))
    if cfg.rm.loss == "pairwise":
        trainer, n_truncated, epoch_tokens = _pairwise_trainer(cfg, model, tokenizer, train_ex, common, peft_config)
    else:
        rows, n_truncated = tokenize_ranked(train_ex, tokenizer, cfg.data.max_length,
                                            response_spans=bool(cfg.rm.get("lm_coefficient")))
        epoch_tokens = sum(len(ids) for row in rows for ids in row["input_ids"])
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        trainer = RankedRewardTrainer(
            model=model, args=TrainingArguments(remove_unused_columns=False, **common),
            train_dataset=Dataset.from_list(rows), data_collator=RankedCollator(tokenizer.pad_token_id),
            loss_type=cfg.rm.loss, center_rewards_coefficient=cfg.rm.center_rewards_coefficient,
            lm_coefficient=cfg.rm.get("lm_coefficient"), lm_layers=lm_layers,
        )
    trainer.add_callback(guard := TrainingGuard(run_state).bind(trainer))
    trainable, total = count_parameters(trainer.model)
    log.info("training %d of %d parameters, loss=%s, %d sequences truncated", trainable, total, cfg.rm.loss, n_truncated)
    before = snapshot_trainable(trainer.model)
    start = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=str(run_state.resumed_from) if run_state.resumed_from else None)
    train_seconds = time.perf_counter() - start

    # 5. Save: final/ holds full weights (plain transformers loads it); an adapter also goes to
    #    final_adapter/. The report card scores with the saved (merged) model. ZeRO-3 shards are
    #    gathered into final/ first; other ranks stop here.
    final_dir = out_dir / FINAL
    trained = finish_training(trainer, final_dir, lambda path: load_reward_model(path, tokenizer.pad_token_id, cfg.model.dtype))
    if trained is None:  # not rank 0
        return float("nan")
    check_finite_weights(trained, "rm", train_out.global_step, "final weights")
    delta = trainable_delta_norm(trained, before)
    rm_model = save_reward_model(trained, tokenizer, out_dir, cfg.peft.method)

    # 6. Report card on the held-out lists.
    rewards, lengths = score_lists(rm_model, tokenizer, val_ex, cfg.data.max_length, cfg.rm.eval_batch_size)
    gold = [[gold_score(ex.prompt[-1]["content"], r) for r in ex.responses] for ex in val_ex] if cfg.rm.gold == "farm" else None
    metrics = report_card(rewards, [list(ex.scores) for ex in val_ex], lengths, out_dir, gold=gold,
                          policy_mask=policy_mask(val_ex))
    metrics.update(accuracy_interval(rewards, [list(ex.scores) for ex in val_ex]))  # 95%, bootstrap over lists
    metrics.update(apply_gate(metrics, to_plain(cfg.rm.gate)))
    write_normalization(final_dir, metrics["reward/mean"], metrics["reward/std"])
    metrics.update({
        "train/loss": guard.train_loss(train_out),
        "train/steps": train_out.global_step,
        "train/samples_per_s": train_out.metrics.get("train_samples_per_second"),  # lists (or pairs) per s
        "train/tokens_per_s": epoch_tokens * (trainer.state.epoch or 0.0) / train_seconds,
        "train/trainable_delta_norm": delta,
        "train/truncated_sequences": n_truncated,
        "model/parameters": total,
        "model/trainable_parameters": trainable,
        "model/readout_layers": readout_layers,
        "model/loaded_in_4bit": bool(getattr(model, "is_loaded_in_4bit", False)),
        "timing/train_s": train_seconds,
        **run_state.metrics(),
        **train_report.as_metrics("data/train/"),
        **val_report.as_metrics("data/validation/"),
    })
    write_metrics(out_dir, {**metrics, **tracker.metrics()})
    tracker.log_stage_artifact(out_dir, "model")
    tracker.finish({k: v for k, v in metrics.items() if not isinstance(v, str)})
    log.info("report card: %s", json.dumps({k: metrics[k] for k in sorted(metrics) if k.split("/")[0] in ("eval", "gold", "gate", "reward")}))
    if not metrics["gate/passed"]:
        log.warning("RM gate FAILED: %s (PPO will refuse this model unless ppo.allow_failed_rm=true)", metrics["gate/failed"])
    return metrics.get("gold/accuracy", metrics["eval/accuracy"])


def _readout_layers(cfg: DictConfig) -> int:
    """How many read-out layers to add. They are new weights that train in full, so a PEFT run
    (whose adapter is merged back into the SFT architecture) adds none, and says so. Also checks
    that the LM loss is only asked of the ranked trainer."""
    if cfg.rm.loss == "pairwise" and cfg.rm.get("lm_coefficient"):
        raise ValueError("rm.lm_coefficient needs rm.loss=ranked or plackett_luce.")
    n = int(cfg.rm.get("readout_layers") or 0)
    if n < 0:
        raise ValueError(f"rm.readout_layers={n} must be >= 0.")
    if n and cfg.peft.method != "none":
        log.warning("rm.readout_layers=%d is for full fine-tuning; peft=%s trains the SFT architecture "
                    "without read-out layers.", n, cfg.peft.method)
        return 0
    return n


def _pairwise_trainer(cfg, model, tokenizer, examples, common, peft_config):
    """TRL's RewardTrainer on pre-tokenized pairs (so its silent over-length filter drops nothing)."""
    rows, n_truncated = [], 0
    for ex in examples:
        for chosen, rejected, gap in to_pairs(ex, cfg.rm.pair_rule):
            c, c_cut = tokenize_response(tokenizer, ex.prompt, chosen, cfg.data.max_length)
            r, r_cut = tokenize_response(tokenizer, ex.prompt, rejected, cfg.data.max_length)
            n_truncated += c_cut + r_cut
            row = {"chosen_ids": c, "rejected_ids": r}
            if cfg.rm.margin:
                row["margin"] = float(gap if ex.margin is None else ex.margin)
            rows.append(row)
    args = RewardConfig(max_length=cfg.data.max_length, center_rewards_coefficient=cfg.rm.center_rewards_coefficient, **common)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, peft_config=peft_config)
    if len(trainer.train_dataset) != len(rows):  # the guard: TRL filters over-long pairs silently
        raise RuntimeError(f"RewardTrainer kept {len(trainer.train_dataset)} of {len(rows)} pairs.")
    log.info("pairwise: %d pairs from %d ranked lists (rule %s)", len(rows), len(examples), cfg.rm.pair_rule)
    return trainer, n_truncated, sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)


main = stage_main("rm", run)


if __name__ == "__main__":
    main()
