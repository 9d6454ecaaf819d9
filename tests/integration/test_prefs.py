"""`stages/prefs.py`: ranked lists from SFT samples + perturbations, annotated with noise."""

import json

import pytest

from align.data import load_preferences
from align.farm import gold_score
from tests.conftest import PREFS_FAST, run_stage_cli


def test_prefs_cli_writes_ranked_lists_with_gold_and_noise_ceiling(tiny_prefs):
    stage = tiny_prefs["run_dir"] / "prefs"
    metrics = json.loads((stage / "metrics.json").read_text())
    # Every prompt becomes a list, unless the annotator tied it completely (dropped and counted).
    assert metrics["prefs/train/prompts"] + metrics["prefs/train/all_tied_dropped"] == 48
    assert metrics["prefs/validation/prompts"] + metrics["prefs/validation/all_tied_dropped"] == 16
    # 25% flips: agreement with gold is well below 1 but far above chance.
    assert 0.55 < metrics["prefs/train/noise_ceiling"] < 0.95
    rows = [json.loads(line) for line in (stage / "train.jsonl").read_text().splitlines()]
    for row in rows:
        assert 2 <= len(row["responses"]) <= 4
        assert len(set(row["responses"])) == len(row["responses"])  # no duplicate candidates
        assert row["gold"] == [gold_score(row["prompt"], r) for r in row["responses"]]
        assert set(s.split(":")[0] for s in row["sources"]) <= {"policy", "perturb"}
    assert any(s == "policy" for row in rows for s in row["sources"])
    # The reward model's loader reads the file as K-wise ranked lists.
    examples, report = load_preferences(str(stage / "train.jsonl"))
    assert report.format == "ranked" and len(examples) == metrics["prefs/train/prompts"]


def test_prefs_passes_rank_every_prompt_again_with_fresh_candidates(tiny_sft, tmp_path):
    # passes_train=2: each of the 8 prompts is ranked twice, from fresh samples and fresh labels.
    out = tmp_path / "prefs_passes"
    overrides = [o for o in PREFS_FAST if not o.startswith("prompts.num_")]
    run_stage_cli("prefs", tiny_sft["common"] + overrides + [
        "prompts.num_train=8", "prompts.num_validation=4", "prompts.passes_train=2", f"output_dir={out}"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prefs/train/prompts"] + metrics["prefs/train/all_tied_dropped"] == 16
    assert metrics["prefs/validation/prompts"] + metrics["prefs/validation/all_tied_dropped"] == 4
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    by_prompt = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], []).append(row)
    assert len(by_prompt) == 8 and max(len(v) for v in by_prompt.values()) == 2
    twice = [v for v in by_prompt.values() if len(v) == 2]
    assert any(a["responses"] != b["responses"] or a["scores"] != b["scores"] for a, b in twice)


def test_prefs_refuses_zero_passes(tiny_sft, tmp_path):
    with pytest.raises(AssertionError, match="passes_train=0 must be >= 1"):
        run_stage_cli("prefs", tiny_sft["common"] + PREFS_FAST + ["prompts.passes_train=0", f"output_dir={tmp_path / 'p0'}"])


def test_prefs_checks_the_validation_prompts_before_sampling_the_train_split(tiny_sft, tmp_path):
    """Issue 14, item 7: a bad validation file used to fail only after the whole train split was
    sampled (train.jsonl already written); both files are read and checked first now."""
    import subprocess
    import sys

    from tests.conftest import REPO, stage_env

    bad = tmp_path / "validation.jsonl"
    bad.write_text('{"prompt": "What is 2 plus 3?"}\n{"prompt": ""}\n')
    out = tmp_path / "prefs_bad"
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "prefs.py"), *tiny_sft["common"], *PREFS_FAST,
                           f"prompts.validation={bad}", f"output_dir={out}"],
                          cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: prefs:" in proc.stderr and "validation.jsonl" in proc.stderr and "line 2" in proc.stderr, proc.stderr
    assert not (out / "train.jsonl").exists() and not (out / "metrics.json").exists()
