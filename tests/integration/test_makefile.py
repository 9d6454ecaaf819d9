"""The Makefile's stage chaining and override routing (dry runs: `make -n` prints, runs nothing)."""

import subprocess

from tests.conftest import REPO


def _dry(*args):
    out = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "stages/" in line]


def test_args_reach_named_stages_only_and_stage_args_reach_their_stage():
    lines = _dry("sft", "rm", "RUN=dry-run-test", "ARGS=trainer.max_steps=2", "RM_ARGS=rm.loss=pairwise")
    pretrain = [l for l in lines if "stages/pretrain.py" in l]
    prefs = [l for l in lines if "stages/prefs.py" in l]
    rm = [l for l in lines if "stages/rm.py" in l]
    # A fresh run folder: the upstream stages are built first, without the named stages' ARGS
    # (pretrain and prefs have no trainer.max_steps / peft to take).
    assert pretrain and all("max_steps" not in l for l in pretrain)
    assert prefs and all("max_steps" not in l for l in prefs)
    assert rm and all("trainer.max_steps=2" in l and "rm.loss=pairwise" in l for l in rm)
    assert all("run=dry-run-test" in l for l in lines)


def test_upstream_zero_builds_nothing_first():
    lines = _dry("rm", "RUN=dry-run-test", "UPSTREAM=0")
    assert len(lines) == 1 and "stages/rm.py" in lines[0]


def test_a_lone_downstream_target_builds_the_whole_chain_in_order():
    # `make rm` on a fresh run folder: pretrain -> sft -> prefs -> rm (dry runs list a stage once
    # per rule that may build it; a real run builds each once: the marker exists after the first).
    lines = _dry("rm", "RUN=dry-run-test")
    order = []
    for line in lines:
        stage = line.split("stages/")[1].split(".py")[0]
        if stage not in order:
            order.append(stage)
    assert order == ["pretrain", "sft", "prefs", "rm"]


def _order(lines):
    order = []
    for line in lines:
        stage = line.split("stages/")[1].split(".py")[0]
        if stage not in order:
            order.append(stage)
    return order


def test_the_design_cards_commands_chain_through_the_run_folder():
    assert _order(_dry("sft", "rm", "ppo", "RUN=dry-run-test")) == ["pretrain", "sft", "prefs", "rm", "ppo"]
    assert _order(_dry("sft", "dpo", "RUN=dry-run-test")) == ["pretrain", "sft", "prefs", "dpo"]
    assert _order(_dry("ppo", "RUN=dry-run-test")) == ["pretrain", "sft", "prefs", "rm", "ppo"]
    # ARGS reach ppo only; PPO_ARGS reach ppo wherever it runs.
    lines = _dry("ppo", "RUN=dry-run-test", "ARGS=ppo.total_iterations=2", "PPO_ARGS=ppo.mode=lora")
    assert all(("ppo.total_iterations=2" in l) == ("stages/ppo.py" in l) for l in lines)
    assert any("stages/ppo.py" in l and "ppo.mode=lora" in l for l in lines)


def test_pipeline_continues_from_the_last_complete_stage_and_force_reruns(tmp_path):
    run = f"dry-run-pipeline-{tmp_path.name}"
    marker = REPO / "outputs" / run / "pretrain" / "metrics.json"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    try:
        out = subprocess.run(["make", "-n", "pipeline", f"RUN={run}", "ARGS=seed=3"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
        stages = [l for l in out.splitlines() if "stages/" in l]
        assert "pipeline: pretrain is complete" in out
        assert _order(stages) == ["sft", "prefs", "rm", "ppo"]  # pretrain is reused, not redone
        assert all("resume=true" in l and "seed=3" in l for l in stages)  # a killed stage continues its run
        forced = _dry("pipeline", f"RUN={run}", "FORCE=1")
        assert _order(forced) == ["pretrain", "sft", "prefs", "rm", "ppo"]
        assert any("stages/pretrain.py" in l and "resume=true" not in l for l in forced)
        fresh = _dry("pipeline-dpo", f"RUN={run}", "RESUME=false")
        assert _order(fresh) == ["sft", "prefs", "dpo"] and all("resume=false" in l for l in fresh)
    finally:
        import shutil

        shutil.rmtree(REPO / "outputs" / run)


def test_a_recipe_runs_its_own_stages_each_with_its_config():
    lines = _dry("pipeline", "RECIPE=hh", "RUN=dry-run-recipe-test")
    assert _order(lines) == ["sft", "rm", "ppo", "dpo", "eval"]  # no pretrain, no prefs: HH-RLHF is the data
    for line in lines:
        stage = line.split("stages/")[1].split(".py")[0]
        assert f"experiment=hh/{stage}" in line and "run=dry-run-recipe-test" in line
    bad = subprocess.run(["make", "-n", "pipeline", "RECIPE=nope"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "RECIPE=nope: no conf/experiment/nope/recipe.mk; recipes: hh" in bad.stderr
