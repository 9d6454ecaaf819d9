"""`stages/pretrain.py` from its command line: a normal HF folder that generates."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import TINY_PRETRAIN, compose_stage


def test_pretrain_cli_writes_the_output_contract(tiny_run):
    stage = tiny_run["run_dir"] / "pretrain"
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["train/steps"] == 40
    assert metrics["eval/loss"] < metrics["train/loss"] + 2.0  # finite, sane
    assert (stage / "config.yaml").exists() and (stage / "pretrain.log").exists()
    # Hydra's own record of the run lands in the same folder (hydra.run.dir is the stage dir).
    assert (stage / ".hydra" / "overrides.yaml").exists()


def test_pretrained_folder_loads_in_plain_transformers_and_generates(tiny_run):
    final = tiny_run["run_dir"] / "pretrain" / "final"
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    ids = tok("What is 2 plus 3?", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5 or tok.eos_token_id in out[0].tolist()


def test_pretraining_changed_the_weights_and_lowered_the_loss(tiny_run):
    # Rebuild the untrained model with the same seed and config: the trained one must differ
    # and predict the validation corpus better.
    from align.models.loading import build_tiny_llama

    final = tiny_run["run_dir"] / "pretrain" / "final"
    tok = AutoTokenizer.from_pretrained(final)
    trained = AutoModelForCausalLM.from_pretrained(final)
    cfg = compose_stage("pretrain", TINY_PRETRAIN)
    fresh = build_tiny_llama(tok, seed=cfg.seed, **dict(cfg.model.arch))
    w0 = fresh.model.layers[0].mlp.up_proj.weight
    w1 = trained.model.layers[0].mlp.up_proj.weight
    assert not torch.allclose(w0, w1)
    ids = tok("What is 7 plus 12? 7 plus 12 is 19.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert trained(ids, labels=ids).loss < fresh(ids, labels=ids).loss


def test_continued_pretraining_of_an_existing_model(tiny_run, tmp_path):
    # model.init=pretrained: domain adaptation of any from_pretrained model on raw text.
    from stages.pretrain import run

    final = tiny_run["run_dir"] / "pretrain" / "final"
    corpus = tmp_path / "domain.txt"
    corpus.write_text("".join(f"The owl lives in the forest number {i}.\n" for i in range(300)))
    cfg = compose_stage("pretrain", [
        f"paths.output_root={tmp_path}", "run=cpt", "model.init=pretrained", f"model.name_or_path={final}",
        f"data.train.source={corpus}", f"data.validation.source={corpus}", "data.block_size=32",
        "trainer.max_steps=5", "trainer.per_device_train_batch_size=8", "logger=none",
    ])
    loss = run(cfg)
    before = AutoModelForCausalLM.from_pretrained(final)
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "cpt" / "pretrain" / "final")
    assert loss > 0
    assert not torch.allclose(before.model.norm.weight, after.model.norm.weight) or not torch.allclose(
        before.model.layers[0].self_attn.q_proj.weight, after.model.layers[0].self_attn.q_proj.weight
    )
