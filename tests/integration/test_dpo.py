"""`stages/dpo.py`: each reference mode from the command line, the log 2 start, reloading, refusals."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from align.models.loading import params_checksum
from tests.conftest import DPO_FAST, compose_stage, run_stage_cli


def _metrics(stage):
    return json.loads((stage / "metrics.json").read_text())


def _check_policy_moved_and_reloads(stage, sft_dir):
    """final/ is a full causal LM that plain transformers loads and generates with; it differs from SFT."""
    tok = AutoTokenizer.from_pretrained(stage / "final")
    policy = AutoModelForCausalLM.from_pretrained(stage / "final")
    sft = AutoModelForCausalLM.from_pretrained(sft_dir)
    moved = max((a - b).abs().max().item() for a, b in zip(policy.parameters(), sft.parameters()))
    assert moved > 0
    enc = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = policy.generate(**enc, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    return sft


def test_dpo_cli_copy_reference_starts_at_log2_keeps_the_reference_and_reports(tiny_dpo):
    stage, sft_dir = tiny_dpo["run_dir"] / "dpo", tiny_dpo["run_dir"] / "sft" / "final"
    m = _metrics(stage)
    for key in ("gold/score_mean", "gold/win_rate_vs_sft", "gold/sft_score_mean", "kl/sft_mean", "train/loss",
                "train/rewards/accuracies", "eval/loss", "eval/rewards/accuracies", "timing/train_s",
                "model/parameters", "memory/peak_rss_train_mb", "data/train/rows_kept", "train/pairs"):
        assert m[key] is not None, key
    assert 0.0 <= m["gold/win_rate_vs_sft"] <= 1.0 and math.isfinite(m["kl/sft_mean"])
    # Policy == reference at step 1, so the first logged DPO loss is -log sigmoid(0) = log 2.
    assert m["train/first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert m["train/trainable_delta_norm"] > 0 and m["train/steps"] == 3
    assert m["data/train/rows_kept"] == 16 and m["train/truncated_pairs"] == 0
    sft = _check_policy_moved_and_reloads(stage, sft_dir)
    # The frozen copy did not move, and it is the SFT model.
    assert m["ref/checksum_before"] == m["ref/checksum_after"] == pytest.approx(params_checksum(sft), rel=1e-9)
    assert not (stage / "final_adapter").exists()


@pytest.mark.parametrize("mode,extra", [
    ("adapter", ["peft=lora", "dpo.reference=adapter"]),
    ("adapter", ["peft=qlora", "dpo.reference=adapter", "dpo.loss=cdpo", "dpo.label_smoothing=0.1"]),
    ("precomputed", ["dpo.reference=precomputed", "data=prefs_small", "dpo.gold=null", "eval.prompts=null"]),
])
def test_dpo_cli_reference_modes(tiny_prefs, tmp_path, mode, extra):
    out, sft_dir = tmp_path / "dpo", tiny_prefs["run_dir"] / "sft" / "final"
    run_stage_cli("dpo", tiny_prefs["common"] + DPO_FAST + [f"output_dir={out}", *extra])
    m = _metrics(out)
    assert m["train/first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert m["train/trainable_delta_norm"] > 0
    sft = _check_policy_moved_and_reloads(out, sft_dir)
    if mode == "adapter":
        # The base weights under the adapters (the reference) did not move; final_adapter/ is a peft folder.
        assert m["ref/checksum_before"] == m["ref/checksum_after"]
        if "peft=lora" in extra:
            assert m["ref/checksum_before"] == pytest.approx(params_checksum(sft), rel=1e-9)
        assert (out / "final_adapter" / "adapter_config.json").exists()
        assert m["model/trainable_parameters"] < m["model/parameters"]
        assert m["model/loaded_in_4bit"] is ("peft=qlora" in extra)
    else:
        # No reference model at all; no oracle: gold keys absent, KL still measured.
        assert m["ref/checksum_before"] is None
        assert not any(k.startswith("gold/") for k in m) and math.isfinite(m["kl/sft_mean"])


def test_dpo_run_returns_minus_eval_loss_without_gold(tiny_sft, tmp_path):
    from stages.dpo import run

    sft = tiny_sft["run_dir"] / "sft" / "final"
    cfg = compose_stage("dpo", [f"paths.output_root={tmp_path}", "run=r", f"model.name_or_path={sft}",
                                "data=prefs_small", "dpo.gold=null", "dpo.loss=ipo", "dpo.pair_rule=adjacent",
                                *DPO_FAST, "trainer.max_steps=2"])
    value = run(cfg)
    m = _metrics(tmp_path / "r" / "dpo")
    assert value == -m["eval/loss"] and "gold/win_rate_vs_sft" not in m


@pytest.mark.parametrize("overrides,match", [
    (["dpo.reference=adapter"], "needs peft=lora or peft=qlora"),
    (["dpo.loss=simpo"], "trl.experimental"),
    (["dpo.loss=orpo"], "ORPOTrainer"),
    (["dpo.loss=cdpo"], "label_smoothing"),
    (["peft=prompt_tuning"], "not supported for DPO"),
    (["dpo.pair_rule=best_vs_best"], "dpo.pair_rule"),
])
def test_dpo_refuses_bad_combinations(tmp_path, overrides, match):
    from stages.dpo import run

    with pytest.raises(ValueError, match=match):
        run(compose_stage("dpo", [f"paths.output_root={tmp_path}", *overrides]))
