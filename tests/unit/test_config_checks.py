"""align.config_checks and align.preflight on configs composed from the real conf/ (tests/conftest.py)."""

import dataclasses
import os
import shutil
import typing

import pytest
import torch

from align.config import default_config, to_plain
from align.config_checks import (
    STAGE_SETS,
    TRAINER_CLASSES,
    check_config,
    check_values,
    trainer_class,
)
from align.errors import ConfigError
from tests.conftest import CONF, compose_stage

STAGES = ["pretrain", "sft", "prefs", "rm", "ppo", "dpo", "eval"]
AS_ROOT = os.geteuid() == 0  # root reads and writes everything: permission cases cannot fail


def _values(stage, overrides):
    check_values(to_plain(compose_stage(stage, overrides)), default_config(stage))


def _refused(stage, overrides, *parts, full=False):
    cfg = compose_stage(stage, overrides)
    with pytest.raises(ConfigError) as err:
        check_config(cfg) if full else check_values(to_plain(cfg), default_config(stage))
    for part in parts:
        assert part in str(err.value), str(err.value)
    return str(err.value)


def _model_folder(path, max_positions=256):
    from transformers import LlamaConfig

    path.mkdir(parents=True, exist_ok=True)
    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=max_positions).to_json_file(str(path / "config.json"))
    return path


@pytest.fixture
def run_root(tmp_path):
    """An outputs root whose run `t` holds what every stage reads from earlier stages (real files)."""
    run = tmp_path / "t"
    for stage in ("pretrain", "sft", "rm"):
        _model_folder(run / stage / "final")
    _model_folder(tmp_path / "long_model", max_positions=2048)  # for hh_rlhf's max_length 512
    (run / "prefs").mkdir()
    for split in ("train", "validation"):
        shutil.copy(CONF.parent / "data" / "farm" / f"prefs_{split}_small.jsonl", run / "prefs" / f"{split}.jsonl")
    return tmp_path


def _common(root):
    return [f"paths.output_root={root}", "run=t"]


# ----------------------------------------------------------------------------- the shipped configs pass


@pytest.mark.parametrize("stage", STAGES)
def test_every_default_config_passes(stage, run_root):
    check_config(compose_stage(stage, _common(run_root)))


@pytest.mark.parametrize("stage,overrides", [
    ("sft", ["experiment=sft_lora"]), ("sft", ["debug=tiny"]), ("sft", ["peft=qlora"]), ("rm", ["data=prefs_small"]),
    ("rm", ["data=hh_rlhf", "rm.gold=null", "model.name_or_path=${paths.output_root}/long_model"]), ("rm", ["rm.loss=pairwise"]), ("dpo", ["peft=lora", "dpo.reference=adapter"]),
    ("ppo", ["ppo.mode=lora", "ppo.ptx_coef=0"]), ("pretrain", ["debug=tiny"]), ("eval", ["+extra_policies.x=${paths.run_dir}/rm/final"]),
])
def test_shipped_options_and_experiments_pass(stage, overrides, run_root):
    check_config(compose_stage(stage, _common(run_root) + overrides))


# ----------------------------------------------------------------------------- trainer.*: the class's fields


def _trainer_fields():
    """(stage, field, a value of the wrong type) for every init field of every stage's trainer class."""
    for stage in TRAINER_CLASSES:
        cls = trainer_class(stage, {"rm": {"loss": "ranked"}})
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name in STAGE_SETS[stage]:
                continue
            text = str(hints[f.name])
            if "str" in text.replace("transformers", "") and "Enum" not in text:
                continue  # a string field takes the string
            yield stage, f.name, "abc"


@pytest.mark.parametrize("stage,field,bad", list(_trainer_fields()))
def test_every_trainer_field_is_type_checked(stage, field, bad):
    # Derived from the dataclass, so a field added upstream is checked too (no hand list).
    prefix = "" if field in (compose_stage(stage, []).trainer or {}) else "+"
    _refused(stage, [f"{prefix}trainer.{field}={bad}"], f"trainer.{field}='abc'")


@pytest.mark.parametrize("override,part", [
    ("trainer.learning_rate=abc", "is not a number"),
    ("trainer.gradient_accumulation_steps=2.5", "is not an integer"),
    ("trainer.gradient_checkpointing=1", "is not true or false"),
    ("trainer.lr_scheduler_type=cosin", "is not one of linear, cosine"),
    ("trainer.save_strategy=sometimes", "one of no, steps, epoch"),
])
def test_trainer_types(override, part):
    _refused("sft", [override], part, "set e.g. trainer.")


def test_trainer_ints_are_accepted_for_floats_and_enums_by_value():
    _values("sft", ["trainer.learning_rate=1", "trainer.num_train_epochs=2", "trainer.lr_scheduler_type=linear",
                    "trainer.eval_strategy=steps", "+trainer.eval_steps=5", "trainer.save_steps=0.5"])


def test_unknown_trainer_key_names_the_nearest_field():
    msg = _refused("sft", ["+trainer.lerning_rate=1e-3"], "trainer.lerning_rate", "trl.SFTConfig")
    assert "did you mean trainer.learning_rate?" in msg


def test_the_class_follows_the_stage():
    # rm: TrainingArguments for the ranked losses, RewardConfig for pairs; pretrain has no TRL fields.
    _refused("rm", ["+trainer.disable_dropout=false"], "not a transformers.TrainingArguments field")
    _values("rm", ["rm.loss=pairwise", "+trainer.disable_dropout=false"])
    _refused("pretrain", ["+trainer.packing=true"], "not a transformers.TrainingArguments field")


@pytest.mark.parametrize("stage,override,fix", [
    ("sft", "+trainer.seed=42", "seed=<n>"),
    ("pretrain", "+trainer.bf16=true", "precision=bf16"),
    ("rm", "+trainer.fp16=true", "precision=fp16"),
    ("sft", "+trainer.report_to=wandb", "logger=wandb"),
    ("dpo", "+trainer.output_dir=/tmp/x", "run=<name>"),
    ("sft", "+trainer.deepspeed=x.json", "deepspeed=zero1"),
    ("dpo", "+trainer.beta=0.2", "dpo.beta"),
    ("dpo", "+trainer.max_length=64", "data.max_length"),
    ("rm", "+trainer.center_rewards_coefficient=0.01", "rm.center_rewards_coefficient"),
    ("sft", "+trainer.resume_from_checkpoint=x", "resume=true"),
])
def test_keys_the_stage_sets_name_the_key_to_use(stage, override, fix):
    _refused(stage, [override], "is set by the", fix)


@pytest.mark.parametrize("override,part", [
    ("trainer.learning_rate=0", "must be > 0"),
    ("trainer.learning_rate=-1e-3", "must be > 0"),
    ("trainer.per_device_train_batch_size=0", "must be >= 1"),
    ("trainer.gradient_accumulation_steps=0", "must be >= 1"),
    ("trainer.warmup_steps=-1", "must be >= 0"),
    ("trainer.max_grad_norm=-1", "must be >= 0"),
    ("trainer.num_train_epochs=0", "trains nothing"),
    ("trainer.max_steps=0", "must be -1"),
    ("trainer.save_steps=0", "would never save"),
    ("trainer.logging_steps=2.5", "whole number"),
    ("trainer.save_total_limit=0", "must be >= 1"),
    ("trainer.max_length=0", "must be >= 1"),
])
def test_trainer_ranges(override, part):
    _refused("sft", [override], override.split("=")[0], part)


def test_zero_epochs_are_fine_with_max_steps_and_save_steps_0_without_saving():
    _values("sft", ["trainer.num_train_epochs=0", "trainer.max_steps=5"])
    _values("sft", ["trainer.save_strategy=no", "trainer.save_steps=0"])


# ----------------------------------------------------------------------------- the other groups: types from the defaults


@pytest.mark.parametrize("stage,override,part", [
    ("sft", "seed=abc", "seed='abc' is not an integer"),
    ("ppo", "ppo.total_iterations=2.5", "is not an integer"),
    ("ppo", "ppo.policy_lr=abc", "is not a number"),
    ("ppo", "ppo.policy_lr=null", "is not a number"),
    ("ppo", "ppo.whiten_advantages=1", "is not true or false"),
    ("rm", "rm.gate.max_ece=abc", "rm.gate.max_ece='abc' is not a number"),
    ("rm", "rm.margin=yes", "is not true or false"),
    ("pretrain", "resume=maybe", "is not true or false"),
    ("eval", "best_of_n=4", "is not a list"),
    ("prefs", "sampling.top_k=0.5", "is not an integer"),
    ("ppo", "ppo.kl=3", "expected a group of keys"),
])
def test_other_groups_types(stage, override, part):
    _refused(stage, [override], part, "set ")


def test_other_groups_accept_what_their_default_allows():
    _values("ppo", ["ppo.policy_lr=1", "ppo.no_eos_penalty=null", "run=2", "data.gold=null"])
    _values("sft", ["data.gold_prompts=null"])
    _values("dpo", ["eval.prompts=null", "dpo.gold=null"])
    _values("eval", ["reward_model=null", "best_of_n=[]"])


@pytest.mark.parametrize("stage,override,part", [
    ("pretrain", "data.block_size=0", "must be >= 1"),
    ("sft", "data.limit=0", "must be >= 1"),
    ("sft", "gold.batch_size=0", "must be >= 1"),
    ("ppo", "ppo.total_iterations=0", "must be >= 1"),
    ("ppo", "ppo.micro_batch_size=-4", "must be >= 1"),
    ("ppo", "generation.max_new_tokens=0", "must be >= 1"),
    ("ppo", "max_prompt_length=0", "must be >= 1"),
    ("ppo", "ppo.policy_lr=0", "must be > 0"),
    ("ppo", "ppo.kl.init_kl_coef=-0.1", "must be >= 0"),
    ("ppo", "ppo.gamma=1.5", "in [0, 1]"),
    ("ppo", "checkpoint.keep=0", "must be >= 1"),
    ("rm", "data.max_length=0", "must be >= 1"),
    ("rm", "rm.gate.min_eval_accuracy=60", "in [0, 1]"),
    ("dpo", "eval.num_prompts=0", "must be >= 1"),
    ("prefs", "prompts.num_train=0", "must be >= 1"),
    ("prefs", "sampling.temperature=0", "must be > 0"),
    ("prefs", "sampling.top_p=1.5", "in (0, 1]"),
    ("eval", "generation.num_samples=0", "must be >= 1"),
    ("eval", "rm.max_length=-1", "must be >= 1"),
    ("sft", "seed=-1", "in [0, 2**32)"),
    ("pretrain", "model.arch.num_hidden_layers=0", "must be >= 1"),
])
def test_other_groups_ranges(stage, override, part):
    _refused(stage, [override], override.split("=")[0], part)


def test_precision():
    _refused("sft", ["precision=fp8"], "precision='fp8' is not one of auto, fp32, bf16, fp16")
    if not torch.cuda.is_available():
        msg = _refused("pretrain", ["precision=fp16"], "precision=fp16 needs a CUDA GPU", "precision=fp32")
        assert "trainer.precision" not in msg


# ----------------------------------------------------------------------------- paths


def test_missing_input_file_names_its_key(run_root, tmp_path):
    _refused("pretrain", _common(run_root) + [f"data.train.source={tmp_path}/nope.txt"],
             "data.train.source=", "no such file or folder", full=True)
    _refused("ppo", _common(run_root) + [f"data.test={tmp_path}/nope.jsonl"], "data.test=", full=True)
    _refused("prefs", _common(run_root) + [f"prompts.validation={tmp_path}/nope.jsonl"], "prompts.validation=", full=True)
    _refused("sft", _common(run_root) + [f"data.gold_prompts={tmp_path}/nope.jsonl"], "data.gold_prompts=", full=True)


def test_inputs_read_only_in_some_settings_are_checked_only_then(run_root, tmp_path):
    check_config(compose_stage("ppo", _common(run_root) + ["ppo.ptx_coef=0", f"data.ptx={tmp_path}/nope.jsonl"]))
    _refused("ppo", _common(run_root) + [f"data.ptx={tmp_path}/nope.jsonl"], "data.ptx=", full=True)
    check_config(compose_stage("eval", _common(run_root)))  # ppo/ and dpo/ are missing: eval skips them


def test_missing_run_folder_input_says_which_stage_builds_it(run_root):
    shutil.rmtree(run_root / "t" / "sft")
    msg = _refused("dpo", _common(run_root), "model.name_or_path=", full=True)
    assert "`make sft RUN=t`" in msg
    shutil.rmtree(run_root / "t" / "prefs")
    assert "`make prefs RUN=t`" in _refused("rm", _common(run_root) + [f"model.name_or_path={run_root}/t/rm/final"],
                                              "data.train.source=", full=True)


def test_hub_ids_are_left_to_transformers(run_root):
    check_config(compose_stage("sft", _common(run_root) + ["model=qwen2_5_0_5b_instruct", "data=hub_sft"]))


def test_a_model_path_that_is_a_file(run_root):
    f = run_root / "model.bin"
    f.write_text("x")
    _refused("sft", _common(run_root) + [f"model.name_or_path={f}"], "is a file; a model folder", full=True)


def test_a_file_where_final_or_checkpoints_goes(run_root):
    out = run_root / "t" / "dpo"
    out.mkdir()
    (out / "final").write_text("not a folder")
    _refused("dpo", _common(run_root), f"{out / 'final'} is a file where the stage writes its final/ folder", full=True)
    (out / "final").unlink()
    (out / "checkpoints").write_text("")
    _refused("dpo", _common(run_root), "checkpoints/ folder", full=True)
    (out / "checkpoints").unlink()
    (out / "metrics.json").mkdir()
    _refused("dpo", _common(run_root), "is a folder where the stage writes the file metrics.json", full=True)


def test_the_stage_folder_is_a_file(run_root):
    (run_root / "t" / "dpo").write_text("")
    _refused("dpo", _common(run_root), "is a file", full=True)


@pytest.mark.skipif(AS_ROOT, reason="root can read and write any file")
def test_unreadable_input_and_unwritable_output(run_root, tmp_path):
    data = tmp_path / "text.txt"
    data.write_text("a b c\n")
    data.chmod(0)
    try:
        _refused("pretrain", _common(run_root) + [f"data.train.source={data}"], "not readable", full=True)
    finally:
        data.chmod(0o644)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _refused("pretrain", [f"paths.output_root={locked}"], "not writable", full=True)
    finally:
        locked.chmod(0o700)


# ----------------------------------------------------------------------------- lengths vs. the model's positions


def test_lengths_above_the_models_position_limit(run_root):
    _refused("sft", _common(run_root) + ["trainer.max_length=512"],
             "trainer.max_length=512 is above the max_position_embeddings of model.name_or_path", "(256)", full=True)
    _refused("rm", _common(run_root) + ["data.max_length=300"], "data.max_length=300", full=True)
    _refused("ppo", _common(run_root) + ["max_prompt_length=200", "generation.max_new_tokens=64"],
             "max_prompt_length=200 + generation.max_new_tokens=64 = 264", full=True)
    _refused("pretrain", _common(run_root) + ["data.block_size=512"], "model.arch.max_position_embeddings (256)", full=True)
    check_config(compose_stage("sft", _common(run_root) + ["trainer.max_length=256"]))  # equal fits


def test_the_limit_is_read_from_the_reward_model_too(run_root):
    _model_folder(run_root / "t" / "rm" / "final", max_positions=100)
    _refused("ppo", _common(run_root), "reward_model.name_or_path", "(100)", full=True)
