"""Hydra multirun and Optuna searches from the real command line (docs/sweeps.md).

Both sweeps run on a copy of the tiny run's ``sft`` and ``prefs`` folders in a fresh run folder,
so the session's shared run folder is not touched.
"""

import json
import shutil

import optuna
import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import CONF, DPO_FAST, run_stage_cli
from tests.unit.test_tracking import _config, _of, wandb_records

STAGES = {"pretrain", "sft", "prefs", "rm", "ppo", "dpo"}
SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))


@pytest.fixture
def dpo_ready(tiny_prefs, tmp_path):
    """A fresh run folder ``<tmp>/t`` holding copies of the tiny run's ``sft`` and ``prefs``."""
    for stage in ("sft", "prefs"):
        shutil.copytree(tiny_prefs["run_dir"] / stage, tmp_path / "t" / stage,
                        ignore=shutil.ignore_patterns("checkpoints", "wandb"))
    return {"run_dir": tmp_path / "t", "common": [f"paths.output_root={tmp_path}", "run=t"]}


def compose_stage_with_hydra(stage, overrides):
    """Like ``conftest.compose_stage``, with the ``hydra`` node (sweeper, sweep dir) resolved."""
    from hydra import compose, initialize_config_dir

    import align.config  # noqa: F401  (registers ${align_root:})

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(stage, overrides=overrides, return_hydra_config=True)
        OmegaConf.resolve(cfg)
        return cfg


@pytest.mark.parametrize("name", SEARCHES)
def test_every_search_composes_with_its_stage(name):
    # Convention (docs/sweeps.md): hparams_search/<stage>_<what>.yaml belongs to <stage>.
    stage = name.split("_")[0]
    assert stage in STAGES, name
    text = (CONF / "hparams_search" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_") and f"make sweep SWEEP={name}" in text and "Hardware" in text
    cfg = compose_stage_with_hydra(stage, [f"+hparams_search={name}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.storage == "sqlite:///outputs/default/optuna.db"
    assert sweeper.study_name == f"default-{name}"
    assert cfg.hydra.sweep.dir == f"outputs/default/hparams_search/{name}"
    for key in sweeper.params:  # every searched key exists in the stage's config
        assert OmegaConf.select(cfg, key) is not None, (name, key)


def test_dpo_beta_multirun_makes_one_complete_stage_per_value(dpo_ready):
    fast = [o for o in DPO_FAST if not o.startswith("logger=")] + ["logger=wandb"]
    run_stage_cli("dpo", ["-m", "dpo.beta=0.1,0.5", *dpo_ready["common"], *fast])
    run_dir = dpo_ready["run_dir"]
    sweep = run_dir / "multirun" / "dpo"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert not (run_dir / "dpo").exists()  # a sweep never overwrites the run's own dpo/
    sft_record = json.loads((run_dir / "sft" / "wandb_artifact.json").read_text())
    for job, beta in (("0", 0.1), ("1", 0.5)):
        out = sweep / job
        for name in ("metrics.json", "config.yaml", "final/config.json", "final/model.safetensors"):
            assert (out / name).is_file(), out / name
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        assert cfg["dpo"]["beta"] == beta
        assert cfg["model"]["name_or_path"] == str(run_dir / "sft" / "final")  # the upstream still resolves
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["train/trainable_delta_norm"] > 0
        # W&B: grouped by the sweep folder, tagged with the swept value, lineage to the SFT artifact.
        records = wandb_records(out)
        (run,) = _of(records, "run")
        assert (run.run_group, run.job_type, run.display_name) == ("t/multirun/dpo", "dpo", f"t/dpo/{job}")
        assert list(run.tags) == ["sweep", f"dpo.beta={beta}"]
        assert _config(records)["dpo"]["beta"] == beta
        (art,) = [a for a in _of(records, "artifact") if a.type == "model"]
        assert art.name == "t-dpo" and "final/model.safetensors" in {c.path for c in art.manifest.contents}
        inputs = _config(records)["lineage"]["inputs"]
        assert inputs[0]["artifact"]["name"] == "t-sft" and inputs[0]["artifact"]["alias"] == sft_record["alias"]


def test_optuna_search_of_dpo_beta_reports_the_best_of_4_trials(dpo_ready):
    run_dir, common = dpo_ready["run_dir"], dpo_ready["common"]
    run_stage_cli("dpo", ["-m", "+hparams_search=dpo_beta", "hydra.sweeper.n_trials=4", *common, *DPO_FAST])
    sweep = run_dir / "hparams_search" / "dpo_beta"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert 0.02 <= results["best_params"]["dpo.beta"] <= 1.0
    values = [json.loads((sweep / str(job) / "metrics.json").read_text())["gold/win_rate_vs_sft"] for job in range(4)]
    assert results["best_value"] == max(values)  # direction: maximize what run(cfg) returned
    # The study persists in SQLite: every trial with the value its job folder reports.
    study = optuna.load_study(study_name="t-dpo_beta", storage=f"sqlite:///{run_dir}/optuna.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.value for t in complete) == sorted(values)


def test_a_search_run_again_continues_its_study(dpo_ready):
    run_dir, common = dpo_ready["run_dir"], dpo_ready["common"]
    first = ["-m", "+hparams_search=dpo_beta", "hydra.sweeper.n_trials=1", *common, *DPO_FAST]
    run_stage_cli("dpo", first)
    # The continuation gets its own folder (job folders are numbered from 0 on every invocation).
    run_stage_cli("dpo", [*first, f"hydra.sweep.dir={run_dir}/hparams_search/dpo_beta-2"])
    study = optuna.load_study(study_name="t-dpo_beta", storage=f"sqlite:///{run_dir}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert study.trials[0].params != study.trials[1].params
    assert (run_dir / "hparams_search" / "dpo_beta" / "0" / "metrics.json").is_file()
    assert (run_dir / "hparams_search" / "dpo_beta-2" / "0" / "metrics.json").is_file()
