"""`stages/rm.py`: ranked (K=4) and pairwise training, the report card, and reloading the model."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import RM_FAST, compose_stage, run_stage_cli


def _png_ok(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.std() > 0.01  # not a blank frame


def test_rm_cli_on_k4_ranked_prefs_writes_report_card_and_loads(tiny_rm):
    stage = tiny_rm["run_dir"] / "rm"  # made by the real command line (conftest.tiny_rm)
    m = json.loads((stage / "metrics.json").read_text())
    for key in ("eval/accuracy", "gold/accuracy", "eval/ece", "eval/length_corr", "eval/top1_accuracy",
                "gold/top1_accuracy", "eval/margin_mean", "reward/mean", "reward/std", "gate/passed"):
        assert key in m, key
    assert 0.0 <= m["gold/accuracy"] <= 1.0 and m["eval/pairs"] > 0
    assert m["train/trainable_delta_norm"] > 0
    assert isinstance(m["gate/passed"], bool) and (m["gate/passed"] or m["gate/failed"])
    _png_ok(stage / "rm_calibration.png")
    _png_ok(stage / "rm_reward_vs_gold.png")
    # Plain transformers reloads the reward model and scores text; the normalization file is there.
    tok = AutoTokenizer.from_pretrained(stage / "final")
    rm = AutoModelForSequenceClassification.from_pretrained(stage / "final")
    norm = json.loads((stage / "final" / "reward_normalization.json").read_text())
    assert norm == {"mean": m["reward/mean"], "std": m["reward/std"]}
    good = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"},
                                    {"role": "assistant", "content": "2 plus 3 is 5."}], return_tensors="pt", return_dict=True)
    with torch.no_grad():
        assert rm(**good).logits.shape == (1, 1)


@pytest.mark.parametrize("loss,extra", [("pairwise", ["rm.margin=true", "rm.center_rewards_coefficient=0.01"]),
                                        ("plackett_luce", []), ("ranked", ["peft=lora"]),
                                        ("ranked", ["peft=qlora"]),
                                        ("ranked", ["rm.readout_layers=1", "rm.lm_coefficient=0.5"])])
def test_rm_losses_and_lora_on_the_shipped_small_prefs(tiny_sft, tmp_path, loss, extra):
    from stages.rm import run

    sft = tiny_sft["run_dir"] / "sft" / "final"
    cfg = compose_stage("rm", [f"paths.output_root={tmp_path}", "run=r", f"model.name_or_path={sft}",
                               "data=prefs_small", "data.limit=32", f"rm.loss={loss}", *RM_FAST, *extra])
    gold_acc = run(cfg)
    m = json.loads((tmp_path / "r" / "rm" / "metrics.json").read_text())
    assert m["gold/accuracy"] == gold_acc
    assert m["train/trainable_delta_norm"] > 0
    assert m["data/train/rows_kept"] == 32
    # final/ always reloads in plain transformers as a one-label reward model (LoRA: merged).
    rm = AutoModelForSequenceClassification.from_pretrained(tmp_path / "r" / "rm" / "final")
    assert rm.config.num_labels == 1
    n_sft = AutoModelForSequenceClassification.from_pretrained(sft).config.num_hidden_layers
    # Read-out layers (default 2) go on top of the SFT layers in full fine-tuning; PEFT adds none.
    n_readout = 0 if any(e.startswith("peft=") for e in extra) else 1 if "rm.readout_layers=1" in extra else 2
    assert rm.config.num_hidden_layers == n_sft + n_readout == n_sft + m["model/readout_layers"]
    if any(e.startswith("peft=") for e in extra):
        assert (tmp_path / "r" / "rm" / "final_adapter" / "adapter_config.json").exists()
    # QLoRA: the base really was 4-bit while training (and only then).
    assert m["model/loaded_in_4bit"] is ("peft=qlora" in extra)


def test_rm_refuses_prompt_tuning_and_unknown_loss(tmp_path):
    from stages.rm import run

    with pytest.raises(ValueError, match="not supported for reward models"):
        run(compose_stage("rm", [f"paths.output_root={tmp_path}", "peft=prompt_tuning"]))
    with pytest.raises(ValueError, match="rm.loss"):
        run(compose_stage("rm", [f"paths.output_root={tmp_path}", "rm.loss=hinge"]))
    with pytest.raises(ValueError, match="readout_layers"):
        run(compose_stage("rm", [f"paths.output_root={tmp_path}", "rm.readout_layers=-1"]))
    with pytest.raises(ValueError, match="rm.loss=ranked"):
        run(compose_stage("rm", [f"paths.output_root={tmp_path}", "rm.loss=pairwise", "rm.lm_coefficient=1.0"]))


def test_rm_from_an_adapter_without_merged_copy_says_how_to_fix(tmp_path):
    from stages.rm import run

    adapter = tmp_path / "sft" / "final"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="peft.merge=true"):
        run(compose_stage("rm", [f"paths.output_root={tmp_path}", f"model.name_or_path={adapter}", "data=prefs_small"]))


HH = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hh_rlhf_harmless_sample.jsonl"


@pytest.mark.skipif(not HH.exists(), reason="../shared/data is not beside the repository")
def test_rm_cli_on_hh_rlhf_pairs_without_gold(tiny_sft, tmp_path):
    # Real human preference pairs through TRL's RewardTrainer, from the command line; no oracle,
    # so no gold metrics; long transcripts are left-truncated and counted, never dropped.
    out = tmp_path / "hh"
    run_stage_cli("rm", tiny_sft["common"] + RM_FAST + [f"output_dir={out}", "data=hh_rlhf", "rm.gold=null",
                                                        "rm.loss=pairwise", "data.limit=32",
                                                        "data.max_length=256"])  # the tiny model's limit
    m = json.loads((out / "metrics.json").read_text())
    assert "gold/accuracy" not in m and 0.0 <= m["eval/accuracy"] <= 1.0
    assert m["data/train/rows_kept"] == 32 and m["data/validation/rows_skipped"] == 1  # line 87: empty reply
    assert m["train/truncated_sequences"] > 0 and m["data/train/rows_truncated"] > 0


SHARED = HH.parent


@pytest.mark.skipif(not (SHARED / "oasst_en_100_tree.jsonl").exists(), reason="../shared/data is not beside the repository")
@pytest.mark.parametrize("data,train_kept,val_kept,val_held_out", [
    ("oasst_trees", 16, 40, 81),  # K-wise groups of OpenAssistant trees; validation: 19 held-out trees, 40 groups
    ("finegrained_qa", 16, 61, 427),  # K = 4 lists with tie groups
])
def test_rm_cli_on_a_shared_file_split_by_holdout(tiny_sft, tmp_path, data, train_kept, val_kept, val_held_out):
    # One file, two loads: the stage passes data.<split>.holdout; the ranked loss trains on tie groups.
    out = tmp_path / data
    run_stage_cli("rm", tiny_sft["common"] + RM_FAST + [f"output_dir={out}", f"data={data}", "rm.gold=null",
                                                        "data.limit=16", "data.max_length=256"])
    m = json.loads((out / "metrics.json").read_text())
    unit = "groups" if data == "oasst_trees" else "rows_kept"
    assert m[f"data/train/{unit}"] == train_kept and m[f"data/validation/{unit}"] == val_kept
    assert m["data/validation/rows_held_out"] == val_held_out and 0.0 <= m["eval/accuracy"] <= 1.0


def test_score_command_on_the_rms_own_validation_file_reproduces_its_report_card(tiny_rm, tmp_path):
    # `python -m align.rm.score` on rm/final and the stage's held-out file, with the stage's
    # data.max_length (128) and rm.eval_batch_size (64): the figures `make rm` wrote.
    import subprocess
    import sys

    from tests.conftest import REPO, stage_env

    run = tiny_rm["run_dir"]
    out = tmp_path / "score.json"
    proc = subprocess.run([sys.executable, "-m", "align.rm.score", "--model", str(run / "rm" / "final"),
                           "--prefs", str(run / "prefs" / "validation.jsonl"), "--max-length", "128",
                           "--batch-size", "64", "--out", str(out)],
                          cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r, m = json.loads(out.read_text()), json.loads((run / "rm" / "metrics.json").read_text())
    assert r["eval/pairs"] == m["eval/pairs"] > 0
    assert r["eval/accuracy"] == m["eval/accuracy"]
    for key in ("eval/ece", "eval/length_corr", "eval/top1_accuracy", "eval/margin_mean", "reward/mean", "reward/std"):
        assert r[key] == pytest.approx(m[key], abs=1e-9), key
    for key in ("rows_read", "rows_kept", "rows_skipped", "rows_truncated"):
        assert r[f"data/{key}"] == m[f"data/validation/{key}"], key
    assert r["eval/accuracy_ci_low"] <= r["eval/accuracy"] <= r["eval/accuracy_ci_high"]
    for key in ("eval/accuracy_ci_low", "eval/accuracy_ci_high", "eval/lists"):  # the stage reports the same interval
        assert r[key] == m[key], key
    assert f"{m['eval/accuracy']:.4f}" in proc.stdout
