"""Every config composes and passes the value checks, for every stage and every option of every
group; bad overrides fail on the real command line with one message, before any work."""

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from align.config import default_config
from align.config_checks import check_values
from tests.conftest import CONF, REPO, compose_stage, stage_env

STAGES = ["pretrain", "sft", "prefs", "rm", "ppo", "dpo", "eval"]
DATA_FOR = {"pretrain": {"farm_text"}, "sft": {"farm_sft", "hub_sft"}, "prefs": set(),
            "rm": {"farm_prefs", "prefs_small", "hh_rlhf", "hh_rlhf_1312", "oasst_trees", "finegrained_qa"},
            "ppo": {"farm_prompts"},
            "dpo": {"farm_prefs", "prefs_small", "hh_rlhf", "hh_rlhf_1312", "oasst_trees", "finegrained_qa"}, "eval": set()}
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
    check_values(container, default_config(stage))  # types and ranges of every shipped option pass


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


@pytest.mark.parametrize("stage,overrides,message", [
    ("sft", ["trainer.learning_rate=abc"], "trainer.learning_rate='abc' is not a number (trl.SFTConfig.learning_rate)"),
    ("pretrain", ["data.block_size=0"], "data.block_size=0 must be >= 1"),
    ("sft", ["+trainer.seed=42"], "trainer.seed is set by the sft stage itself"),
    ("rm", ["rm.gate.max_ece=abc"], "rm.gate.max_ece='abc' is not a number"),
    ("pretrain", ["data.train.source=/nonexistent/corpus.txt"], "data.train.source=/nonexistent/corpus.txt: no such file"),
], ids=lambda x: x if isinstance(x, str) else ",".join(x) if isinstance(x, list) else None)
def test_bad_overrides_fail_on_the_command_line_before_any_work(stage, overrides, message, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), f"paths.output_root={tmp_path}", "run=c",
                           "logger=none", *overrides], cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    # The message and where the traceback is, last. (Before them a library may have warned at import:
    # bitsandbytes 0.50 on a CPU with avx512_bf16 says its optional `kernels` package is missing.)
    lines = [line for line in proc.stderr.strip().splitlines() if "kernels-community" not in line]
    assert len(lines) == 2 and lines[0].startswith(f"error: {stage}: {message}"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and lines[1].startswith("(the traceback is in the stage log")
    stage_dir = tmp_path / "c" / stage
    assert not (stage_dir / "config.yaml").exists() and not (stage_dir / "final").exists()  # nothing started
