"""Stage ``pretrain``: the tiny foundation model, or continued pre-training of any causal LM.

With ``model.init=scratch`` (the embedded default) it trains a byte-level BPE tokenizer and a
small Llama from the config on the farm corpus; with ``model.init=pretrained`` it continues
training an existing model (hub id or local folder) on raw text: domain adaptation.

Steps:
    1. Seed, output folder, logging, resolved config, tracker.
    2. Tokenizer and model: trained/built from config, or loaded with from_pretrained.
    3. Data: raw text documents, packed into blocks of ``data.block_size`` tokens.
    4. Train with ``transformers.Trainer`` (causal-LM loss on every token).
    5. Evaluate validation loss/perplexity (every rank); save ``final/`` (model, tokenizer,
       generation config): a normal Hugging Face folder. Under DeepSpeed ZeRO-3 it is gathered
       from the shards, and only rank 0 goes on from here.
    6. Write ``metrics.json``; return ``eval/loss``.

Every rank trains the same tokenizer and builds the same model from the seed (deterministic),
so ``make pretrain NPROC=2 DS=zero2`` needs no broadcast.

Run: ``make pretrain`` or ``python stages/pretrain.py [overrides]``.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from omegaconf import DictConfig
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from align.cli import stage_main
from align.config import begin_stage, open_tracker, resume_state, to_plain
from align.data import load_text_dataset
from align.data.packing import pack_texts, separator_id
from align.distributed import deepspeed_args, finish_training
from align.models.loading import build_tiny_llama, check_stage_finished, count_parameters, load_causal_lm, load_tokenizer
from align.models.precision import precision_args
from align.models.tokenizer import train_tokenizer
from align.outputs import FINAL, write_metrics
from align.trainer_guard import GUARD_ARGS, PREFIX, TrainingGuard, check_finite_weights

log = logging.getLogger("align.pretrain")


def run(cfg: DictConfig) -> float:
    """Run the stage; return the validation loss (the metric a sweep minimizes)."""
    # 1. Seed, output folder, logging, resolved config, tracker.
    if cfg.model.init not in ("scratch", "pretrained"):
        raise ValueError(f"model.init={cfg.model.init!r} must be 'scratch' or 'pretrained'.")
    if cfg.model.init == "pretrained":
        check_stage_finished(cfg.model.name_or_path)  # before begin_stage: it may be this stage's own final/
    out_dir = begin_stage(cfg)
    run_state = resume_state(cfg, out_dir / "checkpoints", PREFIX)  # the same run, or refused; a fresh one drops old ones
    tracker = open_tracker(cfg, out_dir)
    tracker.use_inputs(cfg.data.train.source, cfg.data.validation.source, cfg.model.init == "pretrained" and cfg.model.name_or_path)

    # 2. Data sources first (bad input fails before any training), then tokenizer and model.
    train_docs, train_report = load_text_dataset(
        cfg.data.train.source, cfg.data.train.split, text_field=cfg.data.text_field,
        on_bad_row=cfg.data.on_bad_row, limit=cfg.data.limit,
    )
    val_docs, val_report = load_text_dataset(
        cfg.data.validation.source, cfg.data.validation.split, text_field=cfg.data.text_field,
        on_bad_row=cfg.data.on_bad_row,
    )
    if cfg.model.init == "scratch":
        tokenizer = train_tokenizer(
            (row["text"] for row in train_docs), cfg.model.tokenizer.vocab_size, cfg.model.tokenizer.min_frequency
        )
        tokenizer.model_max_length = cfg.model.arch.max_position_embeddings
        model = build_tiny_llama(tokenizer, seed=cfg.seed, **to_plain(cfg.model.arch))
    else:
        tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
        model = load_causal_lm(
            cfg.model.name_or_path, cfg.model.dtype, cfg.model.trust_remote_code,
            attn_implementation=cfg.model.attn_implementation,
        )
    trainable, total = count_parameters(model)
    log.info("model: %d parameters (%d trainable), vocab %d", total, trainable, len(tokenizer))

    # 3. Pack documents into fixed-length blocks.
    sep = separator_id(tokenizer)
    train_ds, train_tail = pack_texts((r["text"] for r in train_docs), tokenizer, cfg.data.block_size, sep)
    val_ds, _ = pack_texts((r["text"] for r in val_docs), tokenizer, cfg.data.block_size, sep)
    log.info("train: %d blocks of %d tokens (%d tail tokens unused)", len(train_ds), cfg.data.block_size, train_tail)

    # 4. Train.
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        **GUARD_ARGS,
        report_to=tracker.report_to,
        seed=cfg.seed,
        **precision_args(cfg.precision),
        **deepspeed_args(to_plain(cfg.deepspeed.config)),
        **to_plain(cfg.trainer),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
        callbacks=[guard := TrainingGuard(run_state)],
    )
    guard.bind(trainer)
    start = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=str(run_state.resumed_from) if run_state.resumed_from else None)
    train_seconds = time.perf_counter() - start

    # 5. Evaluate (a collective under DeepSpeed), then save a plain Hugging Face folder: ZeRO-3
    #    shards are gathered into final/ first; other ranks stop here.
    eval_loss = trainer.evaluate()["eval_loss"]
    final_dir = out_dir / FINAL
    trained = finish_training(trainer, final_dir, lambda path: load_causal_lm(path, cfg.model.dtype))
    if trained is None:  # not rank 0
        return float("nan")
    check_finite_weights(trained, "pretrain", train_out.global_step, "final weights")
    trained.save_pretrained(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    log.info("saved %s", final_dir)

    # 6. Report.
    tokens_seen = train_out.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * cfg.data.block_size
    metrics = {
        "train/loss": guard.train_loss(train_out),
        "train/steps": train_out.global_step,
        "train/tokens": tokens_seen,
        "train/tokens_per_s": tokens_seen / max(train_seconds, 1e-9),
        "eval/loss": eval_loss,
        "eval/perplexity": math.exp(min(eval_loss, 50.0)),
        "model/parameters": total,
        "model/trainable_parameters": trainable,
        "timing/train_s": train_seconds,
        **run_state.metrics(),
        **train_report.as_metrics("data/train/"),
        **val_report.as_metrics("data/validation/"),
    }
    write_metrics(out_dir, {**metrics, **tracker.metrics()})
    tracker.log_stage_artifact(out_dir, "model")
    tracker.finish(metrics)
    log.info("eval/loss %.4f  perplexity %.2f", eval_loss, metrics["eval/perplexity"])
    return eval_loss


main = stage_main("pretrain", run)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
