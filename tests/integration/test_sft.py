"""`stages/sft.py` on the tiny default: every PEFT method trains, saves and reloads in plain libraries."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import SFT_FAST as FAST
from tests.conftest import compose_stage


def _generate(model, tok, prompt="What is 2 plus 3?"):
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:]


def test_full_sft_cli_chains_from_pretrain_and_reports_gold(tiny_sft):
    # The real command line (in the fixture), reading the run's pretrain/final by default.
    tiny_run = tiny_sft
    stage = tiny_run["run_dir"] / "sft"
    metrics = json.loads((stage / "metrics.json").read_text())
    for key in ("eval/loss", "gold/score_mean", "gold/base_score_mean", "gold/gain_vs_base", "gold/win_rate_vs_base", "data/train/rows_kept"):
        assert key in metrics, key
    assert metrics["data/train/rows_kept"] == 48
    assert metrics["train/trainable_delta_norm"] > 0
    assert list((stage / "wandb").glob("offline-run-*")), "a real offline W&B run folder"
    # Full fine-tuning: the saved weights differ from the starting checkpoint.
    start = AutoModelForCausalLM.from_pretrained(tiny_run["run_dir"] / "pretrain" / "final")
    tuned = AutoModelForCausalLM.from_pretrained(stage / "final")
    assert not torch.allclose(start.model.layers[0].mlp.up_proj.weight, tuned.model.layers[0].mlp.up_proj.weight)
    tok = AutoTokenizer.from_pretrained(stage / "final")
    assert len(_generate(tuned, tok)) > 0


@pytest.mark.parametrize("method", ["lora", "qlora", "prompt_tuning", "prefix_tuning", "ia3"])
def test_peft_methods_train_save_and_reload_with_peft(tiny_run, tmp_path, method):
    from peft import AutoPeftModelForCausalLM

    from stages.sft import run

    pretrained = tiny_run["run_dir"] / "pretrain" / "final"
    merge = ["peft.merge=true"] if method in ("lora", "ia3") else []
    cfg = compose_stage("sft", [f"paths.output_root={tmp_path}", "run=p", f"model.name_or_path={pretrained}",
                                f"peft={method}", *FAST, *merge])
    run(cfg)
    stage = tmp_path / "p" / "sft"
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["train/trainable_delta_norm"] > 0
    assert metrics["model/trainable_parameters"] < metrics["model/parameters"]
    assert (stage / "final" / "adapter_config.json").exists()
    model = AutoPeftModelForCausalLM.from_pretrained(stage / "final")
    tok = AutoTokenizer.from_pretrained(stage / "final")
    assert len(_generate(model, tok)) > 0
    if method == "lora":
        # LoRA's B matrices start at zero: non-zero after training means the adapter learned.
        b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert b and any(p.abs().sum() > 0 for p in b)
    if merge:
        merged = AutoModelForCausalLM.from_pretrained(stage / "final_merged")
        torch.testing.assert_close(
            merged(torch.tensor([[5, 6, 7]])).logits, model(input_ids=torch.tensor([[5, 6, 7]])).logits,
            atol=1e-4, rtol=1e-4,
        )


def test_packing_runs_padding_free(tiny_run, tmp_path):
    from stages.sft import run

    pretrained = tiny_run["run_dir"] / "pretrain" / "final"
    cfg = compose_stage("sft", [f"paths.output_root={tmp_path}", "run=k", f"model.name_or_path={pretrained}",
                                "trainer.packing=true", *FAST])
    run(cfg)
    assert json.loads((tmp_path / "k" / "sft" / "metrics.json").read_text())["train/trainable_delta_norm"] > 0


def test_config_errors_come_before_any_model_is_loaded(tmp_path):
    from stages.sft import run

    cfg = compose_stage("sft", [f"paths.output_root={tmp_path}", "peft=prompt_tuning", "peft.merge=true"])
    with pytest.raises(ValueError, match="peft.merge=true is not possible"):
        run(cfg)
    cfg = compose_stage("sft", [f"paths.output_root={tmp_path}", "peft=prefix_tuning", "trainer.packing=true"])
    with pytest.raises(ValueError, match="packing"):
        run(cfg)
    cfg = compose_stage("sft", [f"paths.output_root={tmp_path}", "run=none-yet"])
    with pytest.raises(FileNotFoundError, match="make pretrain"):
        run(cfg)


def test_bad_data_row_fails_with_file_line_and_field(tiny_run, tmp_path):
    from stages.sft import run

    bad = tmp_path / "bad.jsonl"
    good = '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}\n'
    bad.write_text(good + '{"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "x"}]}\n')
    pretrained = tiny_run["run_dir"] / "pretrain" / "final"
    cfg = compose_stage("sft", [f"paths.output_root={tmp_path}", f"model.name_or_path={pretrained}",
                                f"data.train.source={bad}", *FAST])
    with pytest.raises(ValueError, match=r"bad.jsonl.*line 2.*messages\[1\]\.role.*pass data\.on_bad_row=skip"):
        run(cfg)  # the hint names the override Hydra accepts, not a bare on_bad_row=skip


def test_documented_text_and_alpaca_formats_train_under_the_default_assistant_only_loss(tiny_run, tmp_path, caplog):
    # trainer.assistant_only_loss=true is the default; TRL refuses it on text rows, so the stage
    # turns it off for them (logged), and Alpaca rows become messages (the loss stays on the reply).
    from stages.sft import run

    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": f"What is {i} plus 1? {i + 1}."}) + "\n" for i in range(8)))
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": f"What is {i} plus 1?", "input": "", "output": f"{i + 1}."}
                                  for i in range(8)], indent=2))
    pretrained = tiny_run["run_dir"] / "pretrain" / "final"
    for name, path in (("text", text), ("alpaca", alpaca)):
        out = tmp_path / name
        cfg = compose_stage("sft", [f"paths.output_root={tmp_path}", f"output_dir={out}", f"model.name_or_path={pretrained}",
                                    f"data.train.source={path}", f"data.validation.source={path}", "data.gold_prompts=null",
                                    *FAST])
        run(cfg)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["data/train/rows_kept"] == 8 and metrics["eval/loss"] > 0, name
    assert "trainer.assistant_only_loss turned off" in caplog.text
