"""Crafted files (issue 14, item 4): nothing in a checkpoint or model folder is unpickled.

Each payload is a real pickle that creates a file when it is unpickled; the tests put it where
earlier code read it (PPO's ``state.pt``; a model's ``pytorch_model.bin``) and check the file is
never created.
"""

from __future__ import annotations

import pytest
import torch

import align.ppo.checkpoint as ckpt
from align.checkpoints import start_run
from align.errors import CheckpointError
from align.ppo.distributed import DataParallel
from align.ppo.models import PPOModels
from align.ppo.steps import DeepSpeedSteps, lr_lambda, make_steps


class Payload:
    """Unpickling this calls ``open(path, "w")``: the file ``path`` appears."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_payload(path, witness) -> None:
    torch.save({"iteration": 99, "policy": Payload(witness)}, path)


def test_the_payload_is_real(tmp_path):
    """What the old ``torch.load(weights_only=False)`` did with it: the witness file appears."""
    write_payload(tmp_path / "state.pt", tmp_path / "pwned")
    torch.load(tmp_path / "state.pt", weights_only=False)
    assert (tmp_path / "pwned").exists()


def _steps():
    models = PPOModels("full", torch.nn.Linear(3, 2), torch.nn.Linear(3, 1))
    return make_steps(models, DataParallel(), policy_lr=0.1, value_lr=0.2, eps=1e-5, weight_decay=0.0, max_grad_norm=1.0,
                      schedule=lr_lambda("constant", 1), micro=1, accumulation=1, precision="fp32",
                      device=torch.device("cpu"))


def test_a_legacy_state_pt_is_refused_and_never_unpickled(tmp_path):
    ckpts = tmp_path / "checkpoints"
    (ckpts / "iter_9").mkdir(parents=True)
    write_payload(ckpts / "iter_9" / "state.pt", tmp_path / "pwned")
    run = start_run("ppo", {"seed": 1}, ckpts, ckpt.PREFIX, resume=True)
    assert run.resumed_from is None and run.skipped[0][0] == "iter_9"
    with pytest.raises(CheckpointError, match=r"iter_9: a checkpoint in the old format \(state.pt, a pickle\).*resume=false"):
        ckpt.resume_folder(run, ckpts)
    for load in (ckpt.read_state, _steps().load,
                 DeepSpeedSteps(None, {}, DataParallel(config={}), accumulation=1).load):
        with pytest.raises(CheckpointError, match="old format"):
            load(ckpts / "iter_9")
    assert not (tmp_path / "pwned").exists()


def test_a_state_pt_beside_a_complete_checkpoint_is_not_read(tmp_path):
    """A crafted ``state.pt`` dropped into a complete new-format checkpoint changes nothing."""
    ckpts = tmp_path / "checkpoints"
    steps = _steps()
    run = start_run("ppo", {"seed": 1}, ckpts, ckpt.PREFIX, resume=False)
    steps.save_checkpoint(ckpts, 2, {"kl": {"value": 0.1}, "ptx_position": 0}, 2, run)
    write_payload(ckpts / "iter_2" / "state.pt", tmp_path / "pwned")
    resumed = start_run("ppo", {"seed": 1}, ckpts, ckpt.PREFIX, resume=True)
    state = _steps().load(ckpt.resume_folder(resumed, ckpts))
    assert state["iteration"] == 2 and not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------ model folders (align/models/loading.py)


@pytest.fixture
def tiny_model(tmp_path):
    from align.models.loading import build_tiny_llama
    from tests.unit.data.helpers import make_tokenizer

    tok = make_tokenizer()
    model = build_tiny_llama(tok, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    return tok, model


def test_a_pickle_only_model_folder_is_refused_without_running_the_payload(tmp_path, tiny_model):
    from align.models.loading import load_causal_lm

    tok, model = tiny_model
    folder = tmp_path / "model"
    model.config.save_pretrained(folder)
    tok.save_pretrained(folder)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["model.embed_tokens.weight"] = Payload(tmp_path / "pwned")
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(Exception) as info:  # noqa: PT011  (transformers' own refusal)
        load_causal_lm(str(folder))
    assert "weights_only" in str(info.value) or "Weights only load failed" in str(info.value), info.value
    assert not (tmp_path / "pwned").exists()


def test_a_pytorch_model_bin_beside_model_safetensors_is_not_read(tmp_path, tiny_model):
    from align.models.loading import load_causal_lm

    tok, model = tiny_model
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    torch.save({"model.embed_tokens.weight": Payload(tmp_path / "pwned")}, folder / "pytorch_model.bin")
    loaded = load_causal_lm(str(folder), dtype="float32")
    assert not (tmp_path / "pwned").exists()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
