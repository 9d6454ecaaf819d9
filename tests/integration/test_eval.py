"""`stages/eval.py` on a tiny run folder made by the real stages (pretrain, sft, prefs, rm).

PPO and DPO are not built by the fixtures yet. STAND-IN: the test copies the run folder to
tmp_path, writes a `dpo/final` that is `sft/final` with slightly perturbed weights, and a
synthetic `ppo/history.jsonl`; the real PPO/DPO stages replace these later. The shared
tiny_rm["run_dir"] is never written to.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import REPO, compose_stage, run_stage_cli

EVAL_FAST = ["data.num_prompts=16", "generation.max_new_tokens=12", "generation.batch_size=16",
             "best_of_n=[1,4]", "num_samples_logged=3"]


def _png_ok(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.std() > 0.01  # not a blank frame


@pytest.fixture(scope="module")
def eval_run(tiny_rm, tmp_path_factory):
    """A private copy of the tiny run with stand-ins for DPO's policy and PPO's history."""
    root = tmp_path_factory.mktemp("eval_outputs")
    run_dir = root / "t"
    for stage in ("pretrain", "sft", "rm"):
        shutil.copytree(tiny_rm["run_dir"] / stage / "final", run_dir / stage / "final")
    # STAND-IN for the DPO stage: SFT's weights plus small Gaussian noise, saved as a full model.
    model = AutoModelForCausalLM.from_pretrained(run_dir / "sft" / "final")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(run_dir / "dpo" / "final")
    for f in (run_dir / "sft" / "final").iterdir():  # tokenizer files, chat template
        if "token" in f.name or f.suffix == ".jinja":
            shutil.copy(f, run_dir / "dpo" / "final" / f.name)
    # STAND-IN for PPO's history: proxy reward rises steadily, gold rises then falls (over-optimization).
    history = [{"iteration": i, "samples": 64 * i, "gold/score_mean": 0.4 + 0.05 * i - 0.008 * i * i,
                "gold/sampled_score_mean": 0.3 + 0.04 * i - 0.007 * i * i, "rm/score_mean": 0.2 * i,
                "rm/sampled_score_mean": 0.18 * i - 0.1, "ppo/kl_ref": 0.6 * i} for i in range(8)]
    (run_dir / "ppo").mkdir()
    (run_dir / "ppo" / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    texts = REPO / "data" / "farm" / "corpus_validation.txt"  # held-out text of the farm's corpus
    run_stage_cli("eval", [f"paths.output_root={root}", "run=t", "logger=wandb", *EVAL_FAST, f"forgetting.texts={texts}",
                           "forgetting.limit=10"])
    return run_dir


def test_eval_cli_compares_every_policy_and_writes_report_and_plots(eval_run):
    out = eval_run / "eval"
    m = json.loads((out / "metrics.json").read_text())
    assert m["eval/policies"] == "base,sft,dpo,bon_1,bon_4" and m["eval/missing"] == "ppo"
    assert m["eval/num_prompts"] == 16 and m["eval/gold"] and m["eval/reward_model"] and m["eval/rm_normalized"]
    assert m["eval/ppo_history_points"] == 8
    for name in ("base", "sft", "dpo"):
        for key in ("gold/score_mean", "gold/score_sem", "gold/win_rate_vs_sft", "gold/sampled_score_mean",
                    "rm/score_mean", "rm/sampled_score_mean", "rm/win_rate_vs_sft", "kl/sft_mean", "kl/sft_sem",
                    "gen/response_len", "gen/no_eos_frac", "gen/sampled_response_len", "gen/sampled_no_eos_frac"):
            assert f"{name}/{key}" in m, f"{name}/{key}"
        assert 0 < m[f"{name}/gen/response_len"] <= 12 and 0 <= m[f"{name}/gen/no_eos_frac"] <= 1
    for n in (1, 4):
        for key in ("gold/score_mean", "gold/win_rate_vs_sft", "rm/score_mean", "kl/sft_mean", "gen/response_len"):
            assert f"bon_{n}/{key}" in m
    assert "bon_16/gold/score_mean" not in m  # best_of_n=[1,4]
    # The reference against itself: KL exactly 0, win rates exactly one half.
    assert m["sft/kl/sft_mean"] == 0.0 and m["sft/gold/win_rate_vs_sft"] == 0.5 and m["sft/rm/win_rate_vs_sft"] == 0.5
    assert m["dpo/kl/sft_mean"] > 0  # (base is 3 SFT steps from sft here: its KL is tiny and noisy)
    assert m["bon_1/kl/sft_mean"] == 0.0 and m["bon_4/kl/sft_mean"] == pytest.approx(0.6363, abs=1e-4)
    # The reward model's pick among 4 draws scores at least as high (on the RM) as the first draw.
    assert m["bon_4/rm/score_mean"] >= m["bon_1/rm/score_mean"]
    # Forgetting: every policy's perplexity on the general texts, and its ratio to SFT's.
    assert m["sft/forget/ppl_vs_sft"] == 1.0 and m["sft/forget/perplexity"] > 1
    assert m["dpo/forget/ppl_vs_sft"] == pytest.approx(m["dpo/forget/perplexity"] / m["sft/forget/perplexity"])
    assert m["dpo/forget/perplexity"] != m["sft/forget/perplexity"] and "base/forget/perplexity" in m
    assert "bon_1/forget/perplexity" not in m  # SFT's samples: no model of their own

    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ") and "policy" not in line and "---" not in line]
    rows = [line.split("|")[1].strip() for line in table[:5]]
    assert rows == ["base", "sft", "dpo", "bon_1", "bon_4"]  # one table, every policy
    assert "`ppo` (" in report  # missing policies are listed
    header = next(line for line in report.splitlines() if line.startswith("| policy"))
    assert header.endswith("| ppl (text) | ppl vs SFT |")
    for png in ("eval_frontier.png", "eval_overoptimization.png", "eval_win_rates.png"):
        assert f"]({png})" in report
        _png_ok(out / png)
    assert list((out / "wandb").glob("offline-run-*")), "the W&B offline run (with the table) is missing"


def test_eval_without_rm_gold_or_history(tiny_rm, tmp_path):
    # A real prompt set and no reward model: no gold columns, no RM columns, no best-of-n; the
    # plots that have no data say so (still non-empty images).
    from stages.eval import run

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Write a haiku about rain.", "What is love?"]))
    sft = tiny_rm["run_dir"] / "sft" / "final"
    cfg = compose_stage("eval", [f"paths.output_root={tmp_path}", "run=r", f"policies.sft={sft}", "logger=none",
                                 f"data.prompts={prompts}", "reward_model=null", "generation.max_new_tokens=6"])
    assert run(cfg) == 0.0
    out = tmp_path / "r" / "eval"
    m = json.loads((out / "metrics.json").read_text())
    assert m["eval/policies"] == "sft" and m["eval/missing"] == "base,ppo,dpo"
    assert not m["eval/gold"] and not m["eval/reward_model"]
    assert not any(k.startswith(("sft/gold/", "sft/rm/", "bon_")) for k in m)
    assert m["sft/kl/sft_mean"] == 0.0
    assert "gold" not in (out / "report.md").read_text().split("## Results")[1].split("## Plots")[0].split("\n")[2]
    for png in ("eval_frontier.png", "eval_overoptimization.png", "eval_win_rates.png"):
        _png_ok(out / png)


def test_eval_refuses_bad_settings_before_loading(tmp_path):
    from stages.eval import run

    with pytest.raises(ValueError, match="make sft"):
        run(compose_stage("eval", [f"paths.output_root={tmp_path}", "logger=none"]))
    with pytest.raises(ValueError, match="best_of_n"):
        run(compose_stage("eval", [f"paths.output_root={tmp_path}", "best_of_n=[0,4]"]))
    with pytest.raises(ValueError, match="gold"):
        run(compose_stage("eval", [f"paths.output_root={tmp_path}", "gold=sometimes"]))


def test_teacher_forced_logprobs_do_not_depend_on_padding(tiny_rm):
    # Batched (right-padded, mixed lengths) log-probs equal one-sequence log-softmax sums.
    from align.eval.policy import sequence_logprobs
    from align.generation import chat_prompt_ids, generate
    from align.models.loading import load_tokenizer

    path = tiny_rm["run_dir"] / "sft" / "final"
    tok, model = load_tokenizer(str(path)), AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(0)
    s = generate(model, tok, ["Say the word cat 3 times.", "What is 2 plus 3?"], 8, 4, do_sample=True, num_per_prompt=2)
    assert s.prompt_ids[0] == chat_prompt_ids(tok, "Say the word cat 3 times.") and len(s.texts) == 4
    batched = sequence_logprobs(model, s.prompt_ids, s.response_ids, tok.pad_token_id, batch_size=4)
    for i, (p, r) in enumerate(zip(s.prompt_ids, s.response_ids)):
        with torch.no_grad():
            logits = model(torch.tensor([p + r])).logits[0, len(p) - 1 : -1]
        manual = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(r)[:, None]).sum()
        assert batched[i].item() == pytest.approx(manual.item(), abs=1e-4)
    assert (batched < 0).all()


def test_eval_config_composes():
    cfg = compose_stage("eval", [])
    assert cfg.stage == "eval" and cfg.output_dir.endswith("default/eval")
    assert list(cfg.best_of_n) == [1, 4, 16] and cfg.generation.max_new_tokens == 64


def test_eval_refuses_a_non_finite_policy_or_an_unfinished_stage_before_sampling(tmp_path):
    """A policy whose weights hold NaN is refused up front (not by sampling's "probability tensor
    contains inf/nan"), and so is the final/ of a stage that did not finish (no metrics.json)."""
    from align.errors import CheckpointError, NonFiniteError
    from stages.eval import run
    from tests.unit.ppo.helpers import write_policy_and_rm

    _, sft, rm = write_policy_and_rm(tmp_path / "models")
    run_dir = tmp_path / "r"
    nan_policy = run_dir / "dpo" / "final"
    model = AutoModelForCausalLM.from_pretrained(sft)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    model.save_pretrained(nan_policy)
    for f in Path(sft).iterdir():  # the tokenizer
        if "token" in f.name or f.suffix == ".jinja":
            shutil.copy(f, nan_policy / f.name)
    common = [f"paths.output_root={tmp_path}", "run=r", f"policies.sft={sft}", "policies.base=null", "policies.ppo=null",
              "logger=none", "generation.max_new_tokens=4", "best_of_n=[]"]
    with pytest.raises(NonFiniteError, match=r"eval: non-finite weights of .*dpo/final \(model.layers.1.mlp.down_proj.weight\)"):
        run(compose_stage("eval", [*common, f"policies.dpo={nan_policy}", "reward_model=null"]))
    assert not (run_dir / "eval" / "eval_frontier.png").exists()  # refused before anything was measured

    # The reward model of an rm stage that started again and did not finish: refused before loading.
    stage = Path(rm).parent / "rm_stage"
    shutil.copytree(rm, stage / "final")
    (stage / "config.yaml").write_text("stage: rm\n")
    with pytest.raises(CheckpointError, match=r"rm_stage did not finish \(no metrics.json beside final/"):
        run(compose_stage("eval", [*common, "policies.dpo=null", f"reward_model={stage / 'final'}"]))
