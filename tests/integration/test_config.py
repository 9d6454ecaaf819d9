"""Every config composes, for every stage and every option of every group."""

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF, compose_stage

STAGES = ["pretrain", "sft", "prefs", "rm", "ppo", "dpo", "eval"]
DATA_FOR = {"pretrain": {"farm_text"}, "sft": {"farm_sft", "hub_sft"}, "prefs": set(),
            "rm": {"farm_prefs", "prefs_small", "hh_rlhf"}, "ppo": {"farm_prompts"},
            "dpo": {"farm_prefs", "prefs_small", "hh_rlhf"}, "eval": set()}
GROUPS = ["model", "peft", "logger", "deepspeed", "data", "debug", "experiment"]


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _groups_of(stage):
    """The config groups in the stage's own defaults list."""
    defaults = OmegaConf.load(CONF / f"{stage}.yaml").defaults
    return {next(iter(d)) for d in defaults if isinstance(d, dict) or OmegaConf.is_dict(d)}


def _cases():
    for stage in STAGES:
        yield stage, []
        for group in GROUPS:
            if group not in _groups_of(stage):
                continue
            for opt in _options(group):
                # Convention (docs/design.md): experiment/<stage>_<name>.yaml belongs to <stage>.
                if group == "experiment" and not opt.startswith(f"{stage}_"):
                    continue
                yield stage, [f"{group}={opt}"]


@pytest.mark.parametrize("stage,overrides", list(_cases()), ids=lambda x: x if isinstance(x, str) else ",".join(x))
def test_composes_and_resolves(stage, overrides):
    if overrides and overrides[0].startswith("data=") and overrides[0][5:] not in DATA_FOR[stage]:
        pytest.skip("data option of another stage")
    cfg = compose_stage(stage, overrides)
    assert cfg.stage == stage
    container = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert container["output_dir"].endswith(f"default/{stage}")


def test_stage_id_is_the_same_everywhere():
    # STYLE: one stage id in conf/<id>.yaml, stages/<id>.py, the output folder and the Make target.
    makefile = (CONF.parent / "Makefile").read_text()
    for stage in STAGES:
        assert (CONF.parent / "stages" / f"{stage}.py").exists()
        assert f"\n{stage}:" in makefile
        assert compose_stage(stage, []).output_dir.endswith(f"/{stage}")


def test_every_stage_lists_the_groups_it_is_tested_with():
    # Guards _groups_of: a stage that silently lost its groups would skip its composition cases.
    assert {"model", "logger", "debug", "experiment"} <= _groups_of("prefs")
    assert {"model", "data", "peft", "logger", "deepspeed"} <= _groups_of("rm")
    assert "peft" not in _groups_of("pretrain")


def test_every_experiment_names_its_stage_and_says_how_to_run_it():
    for path in (CONF / "experiment").glob("*.yaml"):
        assert path.stem.split("_")[0] in STAGES, path.name
        text = path.read_text()
        assert text.startswith("# @package _global_"), path.name
        assert "make " in text and "Expected" in text and "Hardware" in text, path.name
