"""TRL 1.12.0's PPOTrainer on a run's tiny models: samples/s and peak memory of a PPO iteration.

Runs INSIDE the TRL 1.12 virtual environment (``.venv-trl112/``, created by ``bench/ppo_vs_trl.py``),
never in the project's ``.venv``: it imports ``trl.experimental.ppo`` (TRL removed PPO after 1.12).
Prints one JSON line (the last line of stdout) with the figures; ``bench/ppo_vs_trl.py`` reads it.

* policy and reference: ``<run_dir>/sft/final`` (``AutoModelForCausalLM``);
* reward and value models: ``<run_dir>/rm/final`` (``AutoModelForSequenceClassification``, 1 label);
* prompts: ``data/farm/prompts_train.jsonl``, chat template with ``add_generation_prompt=True``,
  left-padded (as TRL's ``examples/scripts/ppo/ppo.py`` does);
* ``--mode full``: a separate reference model; ``--mode lora``: a LoRA adapter on the policy,
  ``ref_model=None`` (TRL disables the adapter for reference log-probs; the value model stays full).

Batch mapping (one process): rollouts per iteration = ``per_device_train_batch_size`` x
``gradient_accumulation_steps`` = ``--batch-size`` x 1; ``num_mini_batches`` = batch / mini-batch, so
every minibatch of ``--mini-batch-size`` rollouts is one forward/backward and one optimizer step
(gradient accumulation 1: TRL's ``accelerator.accumulate`` would otherwise skip optimizer steps).

Timing: a callback stamps ``time.perf_counter()`` at ``on_train_begin`` and at every
``on_step_end`` (called once per PPO iteration, after its rollout, PPO epochs and logging). The
first iteration is warm-up (allocator, first generate, optimizer state creation) and is excluded:
samples/s = (iterations - 1) x batch size / (stamp[last] - stamp[first iteration end]).

    .venv-trl112/bin/python bench/trl112_ppo.py --run-dir outputs/v2 --mode lora --iterations 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
REPO = Path(__file__).resolve().parent.parent


def _peak_rss_mb() -> float:
    # Not align.runtime.peak_rss_mb: this script runs in TRL's own venv, with nothing of ours imported.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _load_prompts(path: Path, tokenizer, limit: int | None):
    from datasets import Dataset

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if limit:
        rows = rows[:limit]
    ids = [
        tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True)["input_ids"]
        for r in rows
    ]
    return Dataset.from_dict({"input_ids": ids})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a run folder with sft/final and rm/final")
    parser.add_argument("--mode", choices=["full", "lora"], default="full")
    parser.add_argument("--iterations", type=int, default=3, help="PPO iterations; the first is warm-up")
    parser.add_argument("--batch-size", type=int, default=64, help="rollouts (prompts) per iteration")
    parser.add_argument("--mini-batch-size", type=int, default=16, help="rollouts per optimizer step")
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--missing-eos-penalty", type=float, default=1.0)
    parser.add_argument("--rollout-forward-batch-size", type=int, default=None,
                        help="TRL's local_rollout_forward_batch_size (default: the whole batch at once)")
    parser.add_argument("--lora-targets", default="all-linear", help="'all-linear' or comma-separated module names")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="TRL's own default; off here")
    parser.add_argument("--prompts", default=str(REPO / "data/farm/prompts_train.jsonl"))
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    if a.iterations < 2:
        raise ValueError(f"--iterations must be >= 2 (the first one is warm-up), got {a.iterations}")
    if a.batch_size % a.mini_batch_size:
        raise ValueError(f"--batch-size {a.batch_size} must be a multiple of --mini-batch-size {a.mini_batch_size}")

    import torch
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    run_dir = Path(a.run_dir)
    sft, rm = run_dir / "sft" / "final", run_dir / "rm" / "final"
    on_cuda = torch.cuda.is_available()
    torch.manual_seed(a.seed)

    tokenizer = AutoTokenizer.from_pretrained(sft, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32) if a.mode == "full" else None
    reward_model = AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1, dtype=torch.float32)
    value_model = AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1, dtype=torch.float32)
    peft_config = None
    if a.mode == "lora":
        from peft import LoraConfig

        targets = a.lora_targets if a.lora_targets == "all-linear" else a.lora_targets.split(",")
        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")

    train = _load_prompts(Path(a.prompts), tokenizer, None)
    evalset = train.select(range(a.batch_size))  # never used: num_sample_generations=0, eval_strategy="no"

    config = PPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl112_ppo_"),
        report_to=[], save_strategy="no", eval_strategy="no", num_sample_generations=0, push_to_hub=False,
        logging_steps=1, disable_tqdm=True, seed=a.seed,
        use_cpu=not on_cuda, bf16=False, fp16=False, gradient_checkpointing=a.gradient_checkpointing,
        per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=1,
        num_mini_batches=a.batch_size // a.mini_batch_size, num_ppo_epochs=a.ppo_epochs,
        local_rollout_forward_batch_size=a.rollout_forward_batch_size or a.batch_size,
        total_episodes=a.iterations * a.batch_size, response_length=a.response_length,
        stop_token="eos", missing_eos_penalty=a.missing_eos_penalty,
        temperature=a.temperature, kl_coef=a.kl_coef, kl_estimator="k1", learning_rate=a.lr,
        lr_scheduler_type="constant", dataloader_num_workers=0,
    )

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if on_cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    trainer = PPOTrainer(
        args=config, processing_class=tokenizer, model=policy, ref_model=ref_policy, reward_model=reward_model,
        train_dataset=train, value_model=value_model, eval_dataset=evalset, peft_config=peft_config,
        callbacks=[Stamp()],
    )
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = _peak_rss_mb()
    trainer.train()

    iteration_s = [b - a_ for a_, b in zip(stamps, stamps[1:])]
    if len(iteration_s) != a.iterations:
        raise RuntimeError(f"expected {a.iterations} iteration stamps, got {len(iteration_s)}")
    timed = iteration_s[1:]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result = {
        "side": "trl", "mode": a.mode, "trl_version": trl.__version__, "transformers_version": transformers.__version__,
        "torch_version": torch.__version__, "device": "cuda" if on_cuda else "cpu",
        "iterations": a.iterations, "timed_iterations": len(timed), "batch_size": a.batch_size,
        "warmup_s": iteration_s[0], "iteration_s": iteration_s, "timed_s": sum(timed),
        "samples_per_s": len(timed) * a.batch_size / sum(timed),
        "peak_rss_mb": _peak_rss_mb(), "rss_before_train_mb": rss_before,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None,
        "trainable_params": trainable, "torch_threads": torch.get_num_threads(),
    }
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
