"""Stage ``sft``: supervised instruction tuning on TRL's ``SFTTrainer``.

Starts from ``model.name_or_path`` (the embedded default: this run's ``pretrain/final``; any hub
id or local folder works the same way), trains on conversational ``messages``, prompt/completion
or plain-text rows with the loss on assistant tokens only by default, full or parameter-efficient
(``peft`` group), and reports what the run gained: validation loss, and the gold score of greedy
responses on held-out prompts for the trained model *and* its starting model.

Steps:
    1. Validate the config (before any model is loaded); seed, output folder, logging, tracker.
    2. Tokenizer, then data (bad rows and over-long rows fail or are counted here).
    3. Starting model (4-bit for QLoRA); gold score of the starting model.
    4. Train with SFTTrainer (PEFT config passed through).
    5. Validation loss (every rank); save ``final/`` (full model or adapter folder;
       ``final_merged/`` when ``peft.merge``). Under DeepSpeed only rank 0 goes on from here.
    6. Evaluate: gold score of the trained model; ``metrics.json``.

Run: ``make sft`` or ``python stages/sft.py [overrides]``; N processes with DeepSpeed ZeRO:
``make sft NPROC=2 DS=zero3`` (docs/distributed.md).
"""

from __future__ import annotations

import logging
import time

from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import AutoConfig
from trl import SFTConfig, SFTTrainer

from align.cli import stage_main
from align.config import begin_stage, open_tracker, resume_state, to_plain
from align.data import is_conversational, load_prompts, load_sft_dataset
from align.distributed import check_deepspeed_choice, deepspeed_args, finish_training, is_main_process
from align.eval.gold import gold_metrics, sample_rows
from align.eval.policy import compare_with, generation_metrics
from align.generation import generate
from align.models.adapters import check_peft_choice, check_quantizable, quantization_config, save_final
from align.models.loading import (
    check_stage_finished,
    count_parameters,
    load_causal_lm,
    load_tokenizer,
    snapshot_trainable,
    trainable_delta_norm,
)
from align.models.precision import precision_args
from align.outputs import FINAL, write_metrics
from align.trainer_guard import GUARD_ARGS, PREFIX, TrainingGuard, check_finite_weights

log = logging.getLogger("align.sft")


def run(cfg: DictConfig) -> float:
    """Run the stage; return the trained model's gold score (or ``-eval/loss`` without an oracle)."""
    # 1. Validate, seed, output folder, logging, tracker.
    check_peft_choice(
        cfg.peft.method, cfg.peft.merge, cfg.peft.config, cfg.trainer.packing,
        cfg.trainer.get("gradient_checkpointing", True),  # TRL's default is True
    )
    check_deepspeed_choice(to_plain(cfg.deepspeed.config), cfg.peft.method)
    out_dir = begin_stage(cfg)
    run_state = resume_state(cfg, out_dir / "checkpoints", PREFIX)  # the same run, or refused; a fresh one drops old ones

    # 2. Tokenizer and data.
    check_stage_finished(cfg.model.name_or_path)  # pretrain/final of a pretrain that finished
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    max_length = cfg.trainer.max_length
    data_kw = dict(
        format=cfg.data.format, on_bad_row=cfg.data.on_bad_row, tokenizer=tokenizer,
        max_length=max_length, on_too_long=cfg.data.on_too_long, config_prefix="data.",
    )
    train_ds, train_report = load_sft_dataset(
        cfg.data.train.source, cfg.data.train.split, limit=cfg.data.limit, holdout=to_plain(cfg.data.train.get("holdout")),
        **data_kw,
    )
    val_ds, val_report = load_sft_dataset(cfg.data.validation.source, cfg.data.validation.split,
                                          holdout=to_plain(cfg.data.validation.get("holdout")), **data_kw)
    log.info("data: %s | %s", train_report.summary(), val_report.summary())
    gold_prompts, gold_report = (load_prompts(cfg.data.gold_prompts, limit=cfg.data.num_gold_prompts,
                                              on_bad_row=cfg.data.on_bad_row, tokenizer=tokenizer, config_prefix="data.")
                                 if cfg.data.gold_prompts else ([], None))
    trainer_args = _loss_args(to_plain(cfg.trainer), train_ds, val_ds, cfg.data.train.source, cfg.data.validation.source)

    # 3. Starting model, and its gold score (what this stage must improve on).
    check_quantizable(AutoConfig.from_pretrained(cfg.model.name_or_path), cfg.peft.method)
    model = load_causal_lm(
        cfg.model.name_or_path, cfg.model.dtype, cfg.model.trust_remote_code,
        quantization_config=quantization_config(to_plain(cfg.peft.get("quantization"))),
        attn_implementation=cfg.model.attn_implementation,
    )
    base_gens = _greedy(model, tokenizer, gold_prompts, cfg, "base") if gold_prompts and is_main_process() else None

    # 4. Train.
    tracker = open_tracker(cfg, out_dir)
    tracker.use_inputs(cfg.model.name_or_path, cfg.data.train.source, cfg.data.validation.source, cfg.data.gold_prompts)
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        **GUARD_ARGS,
        report_to=tracker.report_to,
        seed=cfg.seed,
        **precision_args(cfg.precision),
        **deepspeed_args(to_plain(cfg.deepspeed.config)),
        **trainer_args,
    )
    peft_config = instantiate(cfg.peft.config, _convert_="all") if cfg.peft.method != "none" else None
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[guard := TrainingGuard(run_state)],
    )
    guard.bind(trainer)
    trainable, total = count_parameters(trainer.model)
    log.info("training %d of %d parameters (peft=%s)", trainable, total, cfg.peft.method)
    before = snapshot_trainable(trainer.model)
    start = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=str(run_state.resumed_from) if run_state.resumed_from else None)
    train_seconds = time.perf_counter() - start

    # 5. Validation loss (a collective under DeepSpeed), then save: ZeRO-3 shards are gathered into
    #    final/ first; other ranks stop here. Merging unloads the adapter in place: everything
    #    after sees the merged weights.
    eval_loss = trainer.evaluate()["eval_loss"]
    trained = finish_training(trainer, out_dir / FINAL, lambda path: load_causal_lm(path, cfg.model.dtype))
    if trained is None:  # not rank 0
        return float("nan")
    check_finite_weights(trained, "sft", train_out.global_step, "final weights")
    delta_norm = trainable_delta_norm(trained, before)
    written = save_final(trained, tokenizer, out_dir / FINAL, cfg.peft.method, cfg.peft.merge)
    log.info("saved %s", written)

    # 6. Evaluate and report.
    metrics = {
        "train/loss": guard.train_loss(train_out),
        "train/steps": train_out.global_step,
        "train/samples_per_s": train_out.metrics.get("train_samples_per_second"),
        "eval/loss": eval_loss,
        "model/parameters": total,
        "model/trainable_parameters": trainable,
        "train/trainable_delta_norm": delta_norm,
        "timing/train_s": train_seconds,
        **run_state.metrics(),
        **train_report.as_metrics("data/train/"),
        **val_report.as_metrics("data/validation/"),
        **(gold_report.as_metrics("data/gold_prompts/") if gold_report is not None else {}),
    }
    if gold_prompts:  # the trained model against its starting model ("base") on the same prompts
        gens = _greedy(trained, tokenizer, gold_prompts, cfg, "sft")
        tracker.log_table("samples", ["prompt", "response", "gold"], sample_rows(gold_prompts, gens, cfg.gold.num_samples_logged))
        metrics.update(gold_metrics(gold_prompts, gens))
        metrics.update(generation_metrics(gens))
        metrics.update(compare_with(gold_prompts, gens, base_gens, name="base", gold=True))
        log.info("gold score: start %.3f -> trained %.3f (win rate %.3f)", metrics["gold/base_score_mean"],
                 metrics["gold/score_mean"], metrics["gold/win_rate_vs_base"])
    write_metrics(out_dir, {**metrics, **tracker.metrics()})
    tracker.log_stage_artifact(out_dir, "model")
    tracker.finish(metrics)
    return metrics["gold/score_mean"] if gold_prompts else -eval_loss


def _greedy(model, tokenizer, prompts, cfg, name: str):
    """Greedy responses to the gold prompts (a few logged with their gold score)."""
    gens = generate(model, tokenizer, prompts, cfg.gold.max_new_tokens, cfg.gold.batch_size, desc=f"{name}: generate")
    for p, r, s in sample_rows(prompts, gens, 3):
        log.info("%s sample | %s -> %s (gold %.2f)", name, p, r, s)
    return gens



def _loss_args(trainer: dict, train_ds, val_ds, train_source: str, val_source: str) -> dict:
    """``trainer`` with ``assistant_only_loss`` off for data without assistant turns.

    TRL refuses ``assistant_only_loss=True`` on ``text`` and plain prompt/completion rows; those get
    the loss on every token (text) or on the completion (TRL's ``completion_only_loss``), logged.
    """
    kinds = {train_source: is_conversational(train_ds), val_source: is_conversational(val_ds)}
    if len(set(kinds.values())) > 1:
        raise ValueError(
            f"data.train ({train_source}) is {'' if kinds[train_source] else 'not '}conversational but "
            f"data.validation ({val_source}) is {'' if kinds[val_source] else 'not '}: use one format for both."
        )
    if trainer.get("assistant_only_loss") and not kinds[train_source]:
        log.warning("data rows are not conversational (text or plain prompt/completion): trainer.assistant_only_loss "
                    "turned off; the loss covers every token of text rows, the completion of prompt/completion rows")
        trainer = {**trainer, "assistant_only_loss": False}
    return trainer


main = stage_main("sft", run)


if __name__ == "__main__":
    main()
