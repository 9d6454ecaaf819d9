"""The diagnostic bench scripts, from their command lines, on the tiny run's real models.

`bench/rm_breakdown.py` must agree with the RM stage's own report card on the same held-out file,
and `bench/backbone_knowledge.py` must print one row of fractions per model.
"""

import json
import subprocess
import sys

import pytest

from align.farm.annotators import strict_pairs
from align.farm.gold import gold_score
from tests.conftest import REPO, stage_env


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *map(str, args)], cwd=REPO,
                          env=stage_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_rm_breakdown_matches_the_rm_report_card(tiny_rm):
    run = tiny_rm["run_dir"]
    prefs = run / "prefs" / "validation.jsonl"
    out = _run("rm_breakdown.py", run / "rm" / "final", "--prefs", prefs)
    row = next(line.split() for line in out.splitlines() if line.startswith("all "))
    accuracy, pairs = float(row[1]), int(row[2])
    rows = [json.loads(line) for line in prefs.read_text().splitlines() if line.strip()]
    expected_pairs = sum(len(strict_pairs([gold_score(r["prompt"], x) for x in r["responses"]])) for r in rows)
    metrics = json.loads((run / "rm" / "metrics.json").read_text())
    assert pairs == expected_pairs == metrics["gold/pairs"]
    assert accuracy == pytest.approx(metrics["gold/accuracy"], abs=5e-4)  # printed to 3 decimals


def test_backbone_knowledge_prints_fractions_per_model(tiny_sft):
    run = tiny_sft["run_dir"]
    out = _run("backbone_knowledge.py", run / "pretrain" / "final", run / "sft" / "final").splitlines()
    header, rows = out[0].split(), [line.split() for line in out[1:] if line.strip()]
    assert header[:3] == ["model", "plus", "minus"] and "color" in header
    assert [r[0].split("/")[-2] for r in rows] == ["pretrain", "sft"]
    for row in rows:
        values = [float(v) for v in row[1:]]
        assert len(values) == 8 and all(0.0 <= v <= 1.0 for v in values)


def test_backbone_knowledge_top1_picks_the_most_likely_candidate():
    sys.path.insert(0, str(REPO / "bench"))
    from backbone_knowledge import _top1
    from transformers import LlamaConfig, LlamaForCausalLM

    from align.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["The owl is red. The owl is blue."] * 20, vocab_size=300)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2)).eval()  # fmt: skip
    same = ["The owl is red.", "The owl is red."]  # equal scores: argmax is the first
    assert _top1(model, tokenizer, [(same, 0)]) == 1.0
    assert _top1(model, tokenizer, [(same, 1)]) == 0.0
