"""Shared helpers: compose a stage config like Hydra does, and run a stage's real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

# Small enough that a whole pretrain takes seconds; the stage code path is the default one.
TINY_PRETRAIN = [
    "model.arch.hidden_size=64",
    "model.arch.intermediate_size=128",
    "model.arch.num_hidden_layers=2",
    "model.arch.num_attention_heads=4",
    "model.tokenizer.vocab_size=512",
    "data.limit=3000",
    "data.block_size=64",
    "trainer.max_steps=40",
    "trainer.per_device_train_batch_size=16",
    "trainer.logging_steps=10",
    "trainer.save_steps=20",
    "logger=none",
]


def compose_stage(stage: str, overrides: list[str]):
    """The config ``stages/<stage>.py`` would see with these command-line overrides."""
    import align.config  # noqa: F401  (registers the ${align_root:} resolver)

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(stage, overrides=overrides)


def stage_env() -> dict:
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def run_stage_cli(stage: str, overrides: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python stages/<stage>.py overrides...`` from the repository root, as a user would."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{stage}.py"), *overrides],
        cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"stages/{stage}.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """A run folder holding a finished tiny ``pretrain`` stage, made by its real command line."""
    root = tmp_path_factory.mktemp("outputs")
    common = [f"paths.output_root={root}", "run=t"]
    run_stage_cli("pretrain", common + TINY_PRETRAIN)
    return {"root": root, "run_dir": root / "t", "common": common}


SFT_FAST = ["trainer.max_steps=3", "trainer.per_device_train_batch_size=8", "data.limit=48",
            "data.num_gold_prompts=8", "gold.max_new_tokens=12", "logger=none", "trainer.save_steps=2"]
RM_FAST = ["trainer.max_steps=4", "trainer.per_device_train_batch_size=8", "logger=none", "trainer.save_steps=2"]
PREFS_FAST = ["prompts.num_train=48", "prompts.num_validation=16", "sampling.max_new_tokens=16", "logger=none"]


@pytest.fixture(scope="session")
def tiny_sft(tiny_run) -> dict:
    """The tiny run with a finished ``sft`` stage (full fine-tuning), by its real command line."""
    run_stage_cli("sft", tiny_run["common"] + SFT_FAST + ["logger=wandb"])
    return tiny_run


@pytest.fixture(scope="session")
def tiny_prefs(tiny_sft) -> dict:
    """The tiny run with a finished ``prefs`` stage (K=4 ranked lists), by its real command line."""
    run_stage_cli("prefs", tiny_sft["common"] + PREFS_FAST)
    return tiny_sft


@pytest.fixture(scope="session")
def tiny_rm(tiny_prefs) -> dict:
    """The tiny run with a finished ``rm`` stage (K=4 ranked loss), by its real command line."""
    run_stage_cli("rm", tiny_prefs["common"] + RM_FAST)
    return tiny_prefs


DPO_FAST = ["trainer.max_steps=3", "trainer.per_device_train_batch_size=8", "trainer.logging_steps=1",
            "data.limit=16", "eval.num_prompts=8", "eval.max_new_tokens=12", "logger=none", "trainer.save_steps=2"]


@pytest.fixture(scope="session")
def tiny_dpo(tiny_prefs) -> dict:
    """The tiny run with a finished ``dpo`` stage (sigmoid loss, frozen-copy reference), by its real command line."""
    run_stage_cli("dpo", tiny_prefs["common"] + DPO_FAST)
    return tiny_prefs
