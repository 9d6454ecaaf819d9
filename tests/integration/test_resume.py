"""Kill -9 and resume, through the real command lines of sft, rm and dpo (PPO: test_ppo.py).

Each stage is run once straight through, and once killed with SIGKILL (during a checkpoint
write, or at a random moment after one) and resumed with ``resume=true``: the resumed run must
end with the same weights and the same metrics as the uninterrupted one. A folder that held an
earlier, longer run is neither continued by ``resume=true`` (refused, naming the keys) nor
inherited by ``resume=false``.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from align.checkpoints import MARKER
from tests.conftest import REPO, run_stage_cli, stage_env

SFT = ["trainer.max_steps=8", "trainer.per_device_train_batch_size=8", "data.limit=48", "data.num_gold_prompts=8",
       "gold.max_new_tokens=12", "logger=none", "trainer.save_steps=2", "trainer.logging_steps=1"]
RM = ["trainer.max_steps=8", "trainer.per_device_train_batch_size=4", "logger=none", "trainer.save_steps=2",
      "trainer.logging_steps=1"]
DPO = ["trainer.max_steps=8", "trainer.per_device_train_batch_size=4", "trainer.logging_steps=1", "data.limit=32",
       "eval.num_prompts=8", "eval.max_new_tokens=12", "logger=none", "trainer.save_steps=2"]
# Not expected to match: wall-clock figures, and the resume bookkeeping itself.
VARIES = ("timing/", "perf/", "memory/", "resume/", "train/samples_per_s", "train/tokens_per_s")


def _complete(folder: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*") if (p / MARKER).exists())


def run_and_kill(stage: str, overrides: list[str], out: Path, *, during_write: bool, rng: random.Random) -> str:
    """Start ``stages/<stage>.py`` and SIGKILL it after its first complete checkpoint: while the
    next checkpoint is being written (a folder without its marker), or when a randomly chosen
    later checkpoint is complete plus a random delay. Returns what the kill hit."""
    proc = subprocess.Popen([sys.executable, str(REPO / "stages" / f"{stage}.py"), *overrides, f"output_dir={out}"],
                            cwd=REPO, env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints, deadline = out / "checkpoints", time.time() + 300
    earlier = set(checkpoints.glob("checkpoint-*"))  # an earlier run's: never what this run wrote
    target = rng.choice([2, 4, 6])  # kill after this checkpoint (random moment), or while writing the next one
    hit = None
    try:
        while hit is None:
            assert proc.poll() is None, f"{stage} ended before it could be killed"
            assert time.time() < deadline
            done = [s for s in _complete(checkpoints) if checkpoints / f"checkpoint-{s}" not in earlier]
            writing = [p for p in checkpoints.glob("checkpoint-*") if not (p / MARKER).exists()] if done else []
            if during_write and writing:
                hit = f"during the write of {writing[0].name}"
            elif done and done[-1] >= target and not during_write:
                time.sleep(rng.uniform(0.0, 0.05))
                hit = f"after checkpoint-{done[-1]}"
            time.sleep(0.001)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "metrics.json").exists(), f"{stage} finished before the kill ({hit})"
    return hit


def assert_same_run(a: Path, b: Path, weights: str = "model.safetensors") -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key, value in ma.items():
        if not key.startswith(VARIES):
            assert mb.get(key) == pytest.approx(value, rel=1e-6, abs=1e-9) if isinstance(value, float) else mb.get(key) == value, key
    wa, wb = load_file(a / "final" / weights), load_file(b / "final" / weights)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert (wa[name] == wb[name]).all(), f"final/{weights}: {name} differs"


def _cases(request):
    stage = request.param
    fixture = {"sft": "tiny_run", "rm": "tiny_prefs", "dpo": "tiny_prefs"}[stage]
    run = request.getfixturevalue(fixture)
    return stage, run["common"] + {"sft": SFT, "rm": RM, "dpo": DPO}[stage]


_STRAIGHT: dict[str, Path] = {}


@pytest.fixture(params=["sft", "rm", "dpo"])
def stage_case(request, tmp_path_factory):
    """(stage, overrides, the uninterrupted run's folder): one straight run per stage."""
    stage, overrides = _cases(request)
    if stage not in _STRAIGHT:
        _STRAIGHT[stage] = tmp_path_factory.mktemp(f"{stage}_straight") / "straight"
        run_stage_cli(stage, overrides + [f"output_dir={_STRAIGHT[stage]}"])
    return stage, overrides, _STRAIGHT[stage]


@pytest.mark.parametrize("during_write", [True, False], ids=["kill-during-checkpoint-write", "kill-at-random"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(stage_case, tmp_path, during_write):
    stage, overrides, straight = stage_case
    rng = random.Random(f"{stage}-{during_write}")

    killed = tmp_path / "killed"
    hit = run_and_kill(stage, overrides, killed, during_write=during_write, rng=rng)
    newest = max(_complete(killed / "checkpoints"))
    # What a kill mid-write leaves, made certain: a newer folder with a truncated file and no marker.
    partial = killed / "checkpoints" / f"checkpoint-{newest + 1}"
    if not partial.exists():
        shutil.copytree(killed / "checkpoints" / f"checkpoint-{newest}", partial)
        (partial / MARKER).unlink()
        (partial / "trainer_state.json").write_text('{"global_st')
    proc = run_stage_cli(stage, overrides + [f"output_dir={killed}", "resume=true"])
    log = (killed / f"{stage}.log").read_text()
    assert "resuming run" in log and f"checkpoint-{newest} " in log, hit
    assert "skipping incomplete checkpoint" in log, hit
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resume/resumed"] is True and metrics["resume/skipped_checkpoints"] >= 1
    assert proc.returncode == 0
    assert_same_run(straight, killed)


def test_a_folder_that_held_an_earlier_longer_run(tiny_run, tmp_path):
    """The reported failure: an earlier run's newer checkpoints must neither be resumed by a
    different run nor outlive a fresh start (rotation used to delete the new run's own)."""
    overrides = tiny_run["common"] + SFT
    straight = tmp_path / "straight"
    run_stage_cli("sft", overrides + [f"output_dir={straight}"])

    folder = tmp_path / "reused"
    run_stage_cli("sft", tiny_run["common"] + SFT + ["trainer.max_steps=12", "trainer.learning_rate=2e-3",
                                                     f"output_dir={folder}"])
    assert _complete(folder / "checkpoints") == [10, 12]
    refused = subprocess.run([sys.executable, str(REPO / "stages" / "sft.py"), *overrides, f"output_dir={folder}",
                              "resume=true"], cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    assert "belongs to another run" in refused.stderr and "trainer.learning_rate: 0.002 -> 0.001" in refused.stderr
    assert "trainer.max_steps: 12 -> 8" in refused.stderr and "Traceback" not in refused.stderr
    assert not (folder / "metrics.json").exists()  # the stage started again: the old completion marker is gone

    run_and_kill("sft", overrides, folder, during_write=False, rng=random.Random(3))
    assert max(_complete(folder / "checkpoints")) <= 8  # the earlier run's 10 and 12 were removed at the start
    run_stage_cli("sft", overrides + [f"output_dir={folder}", "resume=true"])
    assert_same_run(straight, folder)


def test_a_nan_loss_stops_sft_before_it_is_saved(tiny_run, tmp_path):
    out = tmp_path / "nan"
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "sft.py"), *tiny_run["common"], *SFT,
                           "trainer.learning_rate=1e6", f"output_dir={out}"],
                          cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "error: sft: non-finite" in proc.stderr and "at step" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "final").exists() and not (out / "metrics.json").exists()
    kept = _complete(out / "checkpoints")
    assert kept, "the last good checkpoint is kept"
    for step in kept:
        weights = load_file(out / "checkpoints" / f"checkpoint-{step}" / "model.safetensors")
        assert all(t.isfinite().all() for t in weights.values()), f"checkpoint-{step} holds non-finite weights"
    assert "traceback:" in (out / "sft.log").read_text()  # the full story is in the stage log


def test_the_same_config_twice_gives_bit_identical_results_and_records_its_environment(tmp_path):
    """What docs/reliability.md guarantees: same machine, threads and library versions -> the same
    numbers and weights (not across CPUs or versions; environment.json says what a run had)."""
    from tests.conftest import TINY_PRETRAIN

    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        run_stage_cli("pretrain", [f"paths.output_root={tmp_path}", "run=t", *TINY_PRETRAIN, "logger=none",
                                   f"output_dir={out}"])
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in runs)
    assert {k: v for k, v in ma.items() if not k.startswith(VARIES)} == \
           {k: v for k, v in mb.items() if not k.startswith(VARIES)}
    assert ma["resume/run_id"] != mb["resume/run_id"]  # two runs, not one resumed
    assert (runs[0] / "final" / "model.safetensors").read_bytes() == (runs[1] / "final" / "model.safetensors").read_bytes()
    env = json.loads((runs[0] / "environment.json").read_text())
    assert env["torch"] and env["transformers"] and env["torch_threads"] >= 1 and "git_commit" in env
