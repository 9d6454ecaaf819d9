"""DeepSpeed ZeRO across 2 processes on CPU (gloo): the Trainer-based stages (pretrain, SFT, RM, DPO) and our PPO loop.

Each 2-rank run is launched the way ``make <stage> NPROC=2 DS=<zero>`` launches it (torchrun),
on the tiny run, and compared with a single-process run at the same global batch (8 = 2 x 4):
the same logged losses, the same consolidated weights. Each rank reports what it holds
(``distributed/rank<k>.json``): about half of the optimizer state under ZeRO-2/3, and about half
of the parameters under ZeRO-3.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tests.conftest import REPO, run_stage_cli, stage_env

pytestmark = pytest.mark.slow

SFT = ["trainer.max_steps=3", "trainer.logging_steps=1", "trainer.save_steps=3", "data.limit=48",
       "data.num_gold_prompts=4", "gold.max_new_tokens=8", "logger=none"]
RM = ["trainer.max_steps=3", "trainer.logging_steps=1", "trainer.save_steps=3", "logger=none"]
DPO = ["trainer.max_steps=3", "trainer.logging_steps=1", "trainer.save_steps=3", "data.limit=16",
       "eval.num_prompts=4", "eval.max_new_tokens=8", "logger=none"]
BATCH_1 = ["trainer.per_device_train_batch_size=8"]  # one process
BATCH_2 = ["trainer.per_device_train_batch_size=4"]  # two processes: the same global batch


def launch(stage: str, overrides: list[str], nproc: int = 2, timeout: int = 900) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=<nproc> stages/<stage>.py overrides...`` (as Make does)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(REPO / "stages" / f"{stage}.py"), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[2:])} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def logged_losses(stage_dir, step: int = 3) -> list[float]:
    state = json.loads((stage_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def rank_reports(stage_dir, world: int = 2) -> list[dict]:
    return [json.loads((stage_dir / "distributed" / f"rank{k}.json").read_text()) for k in range(world)]


def check_partition(reports: list[dict], zero: int) -> None:
    """Each of 2 ranks steps about half of the fp32 master weights (Adam moments alike); under
    ZeRO-3 it also holds about half of the parameters (plus the few small tensors kept whole)."""
    for r in reports:
        assert r["zero_stage"] == zero and r["world_size"] == 2
        assert r["optimizer/local_fraction"] == pytest.approx(0.5, abs=0.02)
        assert r["optimizer/state"] == pytest.approx(2 * r["optimizer/fp32_partition"], rel=0.01)  # exp_avg + exp_avg_sq
        expected = 0.5 if zero == 3 else 1.0
        assert r["parameters/local_fraction"] == pytest.approx(expected, abs=0.02)
    # Together the ranks cover every trainable element (partitions are padded, never short).
    assert sum(r["optimizer/fp32_partition"] for r in reports) >= reports[0]["optimizer/trainable_total"]


def one_and_two_ranks(run: dict, stage: str, overrides: list[str], zero: int = 3):
    """``stage`` in one process (batch 8) and on 2 ranks (batch 4 each) under ZeRO-``zero``; checks
    that the ranks split the model and log the one-process losses. Returns both stage folders."""
    one = run["run_dir"] / f"ds_{stage}_1proc" / stage
    two = run["run_dir"] / f"ds_{stage}_zero{zero}" / stage
    run_stage_cli(stage, run["common"] + overrides + BATCH_1 + [f"output_dir={one}"])
    launch(stage, run["common"] + overrides + BATCH_2 + [f"output_dir={two}", f"deepspeed=zero{zero}"])
    check_partition(rank_reports(two), zero)
    assert logged_losses(two) == pytest.approx(logged_losses(one), rel=1e-4)
    return one, two


def check_same_weights(model_a, model_b, atol: float = 1e-5) -> None:
    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=lambda m: f"{k}: {m}")


# ---------------------------------------------------------------------------------------- SFT


@pytest.fixture(scope="module")
def sft_reference(tiny_run):
    """One process, batch 8: what the 2-rank runs must reproduce."""
    out = tiny_run["run_dir"] / "ds_sft_1proc" / "sft"
    run_stage_cli("sft", tiny_run["common"] + SFT + BATCH_1 + [f"output_dir={out}"])
    return out


@pytest.mark.parametrize("zero", [2, 3])
def test_sft_two_ranks_partition_and_match_one_process(tiny_run, sft_reference, zero):
    out = tiny_run["run_dir"] / f"ds_sft_zero{zero}" / "sft"
    extra = ["logger=wandb"] if zero == 3 else []  # one W&B run, from rank 0 only
    launch("sft", tiny_run["common"] + SFT + BATCH_2 + extra + [f"output_dir={out}", f"deepspeed=zero{zero}"])

    check_partition(rank_reports(out), zero)
    # The same first steps as one process with the same global batch.
    assert logged_losses(out) == pytest.approx(logged_losses(sft_reference), rel=1e-4)
    # final/ is a normal Hugging Face folder (ZeRO-3: consolidated from the shards) with the weights
    # the one-process run trained.
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    check_same_weights(final, AutoModelForCausalLM.from_pretrained(sft_reference / "final"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model/parameters"] == sum(p.numel() for p in final.parameters())
    assert metrics["train/trainable_delta_norm"] > 0
    # Rank 0 alone writes the stage's files; rank 1 logs to its own file.
    assert (out / "distributed" / "rank1.log").exists()
    assert "rank 1:" not in (out / "sft.log").read_text()
    if zero == 3:
        runs = list((out / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs


# ----------------------------------------------------------------------------------- pretrain

PRETRAIN = ["model.arch.hidden_size=64", "model.arch.intermediate_size=128", "model.arch.num_hidden_layers=2",
            "model.arch.num_attention_heads=4", "model.tokenizer.vocab_size=512", "data.limit=400", "data.block_size=64",
            "trainer.max_steps=3", "trainer.logging_steps=1", "trainer.save_steps=3", "trainer.warmup_steps=0",
            "logger=none"]


def test_pretrain_two_ranks_zero3_match_one_process(tiny_run):
    """Every rank trains the same tokenizer and builds the same model; ZeRO-3 then trains it as one process would."""
    one, two = one_and_two_ranks(tiny_run, "pretrain", PRETRAIN)
    check_same_weights(AutoModelForCausalLM.from_pretrained(two / "final"), AutoModelForCausalLM.from_pretrained(one / "final"))
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m2["eval/loss"] == pytest.approx(m1["eval/loss"], rel=1e-4)


# ---------------------------------------------------------------------------- RM and DPO (ZeRO-3)


def test_rm_two_ranks_zero3_match_one_process(tiny_prefs):
    one, two = one_and_two_ranks(tiny_prefs, "rm", RM)
    rm = AutoModelForSequenceClassification.from_pretrained(two / "final")
    assert rm.config.num_labels == 1 and (two / "final" / "reward_normalization.json").exists()
    check_same_weights(rm, AutoModelForSequenceClassification.from_pretrained(one / "final"))
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m2["eval/accuracy"] == pytest.approx(m1["eval/accuracy"])  # the report card sees the same model


def test_dpo_two_ranks_zero3_match_one_process(tiny_prefs):
    one, two = one_and_two_ranks(tiny_prefs, "dpo", DPO)
    assert logged_losses(two)[0] == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-5)  # policy == reference
    check_same_weights(AutoModelForCausalLM.from_pretrained(two / "final"), AutoModelForCausalLM.from_pretrained(one / "final"))
    m = json.loads((two / "metrics.json").read_text())
    # The frozen reference (partitioned by TRL under ZeRO-3) is gathered for its checksum: unchanged, and whole.
    assert m["ref/checksum_before"] == m["ref/checksum_after"]
    assert m["ref/checksum_before"] == pytest.approx(json.loads((one / "metrics.json").read_text())["ref/checksum_before"])


# ---------------------------------------------------------------------------------------- PPO

# One minibatch per iteration and one epoch, so the one-process run steps on exactly the batch the
# two ranks split; per-row sampling seeds, so both sample the same responses.
PPO = ["ppo.allow_failed_rm=true", "ppo.total_iterations=3", "ppo.rollout_batch_size=8", "ppo.mini_batch_size=8",
       "ppo.ppo_epochs=1", "ppo.ptx_coef=0", "generation.max_new_tokens=12", "generation.row_seeds=true",
       "eval.every=2", "eval.num_prompts=8", "eval.num_test_prompts=8", "checkpoint.every=2", "logger=none"]
PPO_COMPARED = ("rollout/score_mean", "rollout/response_len", "ppo/kl_ref", "ppo/value_loss", "ppo/value_mean",
                "ppo/return_mean", "ppo/entropy", "ppo/kl_coef", "gold/score_mean", "gold/sft_score_mean",
                "rm/score_mean", "gold/win_rate_vs_sft", "train/policy_delta_norm")


@pytest.fixture(scope="module")
def ppo_reference(tiny_rm):
    """One process, the whole batch of 8 in one micro-batch."""
    out = tiny_rm["run_dir"] / "ds_ppo_1proc" / "ppo"
    run_stage_cli("ppo", tiny_rm["common"] + PPO + ["ppo.micro_batch_size=8", f"output_dir={out}"])
    return out


@pytest.mark.parametrize("zero", [2, 3])
def test_ppo_two_ranks_partition_and_match_one_process(tiny_rm, ppo_reference, zero):
    out = tiny_rm["run_dir"] / f"ds_ppo_zero{zero}" / "ppo"
    # Micro-batches of 2 per rank: 2 accumulation steps per optimizer step.
    launch("ppo", tiny_rm["common"] + PPO + ["ppo.micro_batch_size=2", f"output_dir={out}", f"deepspeed=zero{zero}"])

    # Policy and value model: each rank steps half of the optimizer state (and under ZeRO-3 holds
    # half of the parameters).
    reports = rank_reports(out)
    for model in ("policy", "value"):
        check_partition([r[model] for r in reports], zero)
    # The same rollouts, losses, KL controller and monitor as one process on the whole batch.
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (ppo_reference, out))
    for key in PPO_COMPARED:
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    assert m2["train/policy_delta_norm"] > 0 and m2["train/reference_unchanged"] is True
    h1, h2 = ([json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()] for d in (ppo_reference, out))
    assert [r["iteration"] for r in h2] == [r["iteration"] for r in h1] == [0, 2, 3]
    for key in ("gold/score_mean", "rm/score_mean", "ppo/kl_ref"):  # greedy monitor responses: the same policy
        assert [r[key] for r in h2] == pytest.approx([r[key] for r in h1], rel=1e-4, abs=1e-6), key
    # final/ is a normal Hugging Face folder (ZeRO-3: gathered from the shards) with the weights
    # the one-process run trained.
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    check_same_weights(final, AutoModelForCausalLM.from_pretrained(ppo_reference / "final"))
    assert (out / "checkpoints" / "iter_2" / "policy").is_dir() and (out / "checkpoints" / "iter_2" / "align_checkpoint.json").exists()
    if zero == 3:
        # Resuming from the sharded checkpoint at iteration 2 redoes iteration 3 exactly.
        resumed = out.parent / "resumed"
        shutil.copytree(out, resumed)
        (resumed / "final" / "model.safetensors").unlink()
        launch("ppo", tiny_rm["common"] + PPO + ["ppo.micro_batch_size=2", f"output_dir={resumed}",
                                                 "deepspeed=zero3", "resume=true"])
        assert "resumed at iteration 2" in (resumed / "ppo.log").read_text()
        check_same_weights(AutoModelForCausalLM.from_pretrained(resumed / "final"), final, atol=1e-7)


def test_ppo_lora_two_ranks_zero2_with_ptx(tiny_rm):
    """ppo.mode=lora under ZeRO-2 with PPO-ptx (two loss terms, one engine backward) and several
    minibatches: completes, and leaves a merged final/ and an adapter."""
    out = tiny_rm["run_dir"] / "ds_ppo_lora_zero2" / "ppo"
    launch("ppo", tiny_rm["common"] + PPO + ["ppo.mode=lora", "ppo.ptx_coef=0.5", "ppo.ptx_batch_size=2",
                                             "ppo.total_iterations=2", "ppo.rollout_batch_size=16", "ppo.ppo_epochs=2",
                                             "ppo.micro_batch_size=2", "checkpoint.every=0", f"output_dir={out}",
                                             "deepspeed=zero2"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["ppo/ptx_loss"] > 0 and m["train/policy_delta_norm"] > 0 and m["train/reference_unchanged"] is True
    for r in rank_reports(out):
        assert r["policy"]["optimizer/trainable_total"] == m["model/policy_trainable_parameters"]  # the adapter only
        assert r["policy"]["optimizer/local_fraction"] == pytest.approx(0.5, abs=0.02)
    # final/ is the trained policy (not SFT), and final_adapter/ merges into exactly final/.
    final = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    sft = AutoModelForCausalLM.from_pretrained(tiny_rm["run_dir"] / "sft" / "final").state_dict()
    assert final.keys() == sft.keys() and any(not torch.equal(final[k], sft[k]) for k in final)
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(out / "final_adapter").merge_and_unload().state_dict()
    assert merged.keys() == final.keys()
    for k in merged:
        torch.testing.assert_close(merged[k], final[k], atol=1e-6, rtol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
