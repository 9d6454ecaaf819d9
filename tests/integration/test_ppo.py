"""`stages/ppo.py` on the tiny run: full and lora modes from the command line, the gate refusal,
the options (PPO-ptx, critic warm-up, fixed KL, k3, linear schedule), and resume after a kill."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import REPO, compose_stage, run_stage_cli, stage_env

PPO_FAST = ["ppo.allow_failed_rm=true", "ppo.total_iterations=3", "ppo.rollout_batch_size=8", "ppo.mini_batch_size=4",
            "ppo.micro_batch_size=2", "generation.max_new_tokens=12", "eval.every=2", "eval.num_prompts=8",
            "eval.num_test_prompts=8", "checkpoint.every=2", "logger=none"]


def _png_ok(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert mpimg.imread(path).std() > 0.01


def _generates(folder):
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_ppo_cli_trains_the_policy_keeps_the_reference_and_saves_a_loadable_model(tiny_rm, tmp_path, mode):
    out = tmp_path / f"ppo_{mode}"
    logger = ["logger=wandb"] if mode == "lora" else []  # a real offline W&B run, tables included
    run_stage_cli("ppo", tiny_rm["common"] + PPO_FAST + [f"ppo.mode={mode}", f"output_dir={out}", *logger])
    m = json.loads((out / "metrics.json").read_text())
    for key in ("ppo/policy_loss", "ppo/value_loss", "ppo/clipfrac", "ppo/approx_kl", "ppo/kl_ref", "ppo/kl_coef",
                "ppo/entropy", "rollout/score_mean", "rollout/response_len", "rollout/no_eos_frac",
                "gold/score_mean", "gold/win_rate_vs_sft", "gold/sft_score_mean", "rm/win_rate_vs_sft", "perf/samples_per_s", "perf/peak_rss_mb"):
        assert key in m, key
    assert m["train/policy_delta_norm"] > 0
    assert m["train/reference_unchanged"] is True
    assert 0.0 <= m["gold/win_rate_vs_sft"] <= 1.0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in history] == [0, 2, 3]  # 0: the SFT policy
    assert {"gold/score_mean", "rm/score_mean", "rm/sampled_score_mean", "kl/sft_mean", "gen/response_len"} <= set(history[0])
    _png_ok(out / "ppo_gold_vs_proxy.png")
    _generates(out / "final")
    if mode == "lora":
        from peft import AutoPeftModelForCausalLM

        assert AutoPeftModelForCausalLM.from_pretrained(out / "final_adapter") is not None
    assert (out / "checkpoints" / "iter_2" / "state.pt").exists()
    if mode == "lora":
        runs = list((out / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_ppo_refuses_a_reward_model_that_failed_its_gate(tiny_rm, tmp_path):
    from stages.ppo import run

    rm = tmp_path / "rm"
    shutil.copytree(tiny_rm["run_dir"] / "rm" / "final", rm / "final")
    (rm / "metrics.json").write_text(json.dumps({"gate/passed": False, "gate/failed": "gold/accuracy 0.5 < 0.85"}))
    over = tiny_rm["common"] + [f"reward_model.name_or_path={rm / 'final'}", f"output_dir={tmp_path / 'ppo'}", "logger=none"]
    with pytest.raises(ValueError, match=r"failed its quality gate \(gold/accuracy 0.5 < 0.85\).*allow_failed_rm=true"):
        run(compose_stage("ppo", over))
    assert not (tmp_path / "ppo" / "metrics.json").exists()


def test_ppo_options_ptx_warmup_fixed_kl_k3_linear(tiny_rm, tmp_path):
    from stages.ppo import run

    out = tmp_path / "ppo_opts"
    over = [o for o in PPO_FAST if not o.startswith(("eval.every", "checkpoint.every"))] + [
        f"output_dir={out}", "ppo.mode=lora", "ppo.ptx_coef=0.5", "ppo.ptx_batch_size=2", "ppo.critic_warmup_iterations=1",
        "ppo.kl.kind=fixed", "ppo.kl.kl_coef=0.2", "ppo.kl_estimator=k3", "ppo.lr_scheduler=linear", "ppo.entropy_coef=0.01",
        "eval.every=0", "eval.final=false", "checkpoint.every=0",
    ]
    run(compose_stage("ppo", tiny_rm["common"] + over))
    m = json.loads((out / "metrics.json").read_text())
    assert m["ppo/ptx_loss"] > 0 and m["ppo/kl_coef"] == 0.2  # fixed: never moves
    assert m["ppo/lr"] < 5.0e-5  # linear decay
    assert "gold/win_rate_vs_sft" not in m  # eval.final=false


@pytest.mark.parametrize("bad, match", [
    (["ppo.mini_batch_size=3"], "multiple of mini_batch_size"),
    (["ppo.micro_batch_size=8"], "micro_batch_size"),
    (["ppo.mode=half"], "ppo.mode='half'"),
    (["max_prompt_length=4"], r"row 1, field 'prompt'.*max_prompt_length=4"),
    (["ppo.mode=lora", "deepspeed=zero3"], r"ppo.mode=lora cannot run under DeepSpeed ZeRO-3.*deepspeed=zero2"),
])
def test_ppo_config_errors_are_clear(tiny_rm, tmp_path, bad, match):
    from stages.ppo import run

    with pytest.raises(ValueError, match=match):
        run(compose_stage("ppo", tiny_rm["common"] + PPO_FAST + [f"output_dir={tmp_path / 'p'}", *bad]))


def test_ppo_resume_after_a_kill_matches_an_uninterrupted_run(tiny_rm, tmp_path):
    common = tiny_rm["common"] + PPO_FAST + ["ppo.total_iterations=6", "checkpoint.every=2", "checkpoint.keep=1",
                                             "eval.every=3"]
    straight = tmp_path / "straight"
    run_stage_cli("ppo", common + [f"output_dir={straight}"])

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(REPO / "stages" / "ppo.py"), *common, f"output_dir={killed}"],
                            cwd=REPO, env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "iter_2" / "state.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()  # it really died mid-way
    run_stage_cli("ppo", common + [f"output_dir={killed}", "resume=true"])

    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    same = {k: v for k, v in a.items() if not k.startswith(("perf/", "timing/"))}
    for key, value in same.items():
        assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert (straight / "history.jsonl").read_text() == (killed / "history.jsonl").read_text()
    wa = AutoModelForCausalLM.from_pretrained(straight / "final").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(killed / "final").state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
