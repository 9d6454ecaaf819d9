"""The one place in ``align/`` that touches Hydra/OmegaConf objects (stages call these).

Components take plain arguments; stages turn config nodes into plain containers here.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from align.outputs import atomic_write_text
from align.runtime import environment

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

# ${align_root:} in conf/ resolves to the repository root, so shipped data is found from any cwd.
if not OmegaConf.has_resolver("align_root"):
    OmegaConf.register_new_resolver("align_root", lambda: str(REPO_ROOT))


def to_plain(node) -> object:
    """Resolve a config node into plain Python containers (``None`` stays ``None``)."""
    if node is None or not OmegaConf.is_config(node):
        return node
    return OmegaConf.to_container(node, resolve=True)


def stage_output_dir(cfg: DictConfig) -> Path:
    """The folder this stage writes to.

    Under ``@hydra.main`` it is Hydra's job output dir (which ``conf/`` sets to
    ``outputs/<run>/<stage>`` for single runs and to one job folder per combination under
    multirun); under ``compose`` (tests) it is ``cfg.output_dir``.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.output_dir)


def save_resolved_config(cfg: DictConfig, out_dir: Path) -> str:
    """Resolve ``cfg``, write it to ``out_dir/config.yaml`` and return the YAML text."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    atomic_write_text(out_dir / "config.yaml", text)
    return text


def setup_logging(out_dir: Path, stage: str) -> None:
    """Log to the console and to ``out_dir/<stage>.log`` (Hydra's handler does this under
    ``@hydra.main``; this covers ``run(cfg)`` called directly)."""
    root = logging.getLogger()
    target = str((out_dir / f"{stage}.log").resolve())
    if any(getattr(h, "baseFilename", None) == target for h in root.handlers):
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(target)
    fh.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(fh)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def begin_stage(cfg: DictConfig) -> Path:
    """The start every stage shares: seed, output folder, ``<stage>.log``, and the resolved
    config saved to ``config.yaml`` and logged. Returns the output folder."""
    from transformers import set_seed

    from align.distributed import is_main_process, setup_rank_logging

    set_seed(cfg.seed)
    out_dir = stage_output_dir(cfg)
    if not is_main_process():  # a multi-process launch: rank 0 alone writes the stage's files
        setup_rank_logging(out_dir, cfg.stage)
        return out_dir
    # The stage is no longer complete once it starts again: `make` and the next stages read
    # metrics.json (written last) as the completion marker, so it goes before anything else changes.
    (out_dir / "metrics.json").unlink(missing_ok=True)
    setup_logging(out_dir, cfg.stage)
    atomic_write_text(out_dir / "environment.json", json.dumps(environment(), indent=1) + "\n")
    logging.getLogger(f"align.{cfg.stage}").info("resolved config:\n%s", save_resolved_config(cfg, out_dir))
    return out_dir


def open_tracker(cfg: DictConfig, out_dir: Path):
    """The stage's experiment-tracking run, from the ``logger`` group (grouped by run name); only
    rank 0 of a multi-process launch opens one."""
    from align.distributed import is_main_process
    from align.tracking import Tracker

    return Tracker(
        cfg.logger.backend if is_main_process() else "none",  # one tracker run per stage: rank 0's
        out_dir, cfg.run, cfg.stage, cfg.logger.project, to_plain(cfg), cfg.logger.mode,
        sweep=sweep_info(cfg), log_artifacts=cfg.logger.get("log_artifacts", True),
    )


def sweep_info(cfg: DictConfig) -> dict | None:
    """The Hydra multirun job this process runs, for W&B grouping (None outside a multirun).

    ``group``: the sweep folder relative to the run folder (``multirun/dpo``,
    ``hparams_search/dpo_beta``); ``job``: the job number; ``overrides``: the job's values of the
    swept keys (the keys of ``hydra.sweeper.params`` and the comma/range overrides of a basic
    sweep, read from its ``multirun.yaml``), or all of the job's overrides when none is known.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    parser = OverridesParser.create()
    swept = set((hc.sweeper.get("params") or {}).keys())
    multirun = Path(hc.sweep.dir) / "multirun.yaml"  # the basic sweeper saves the command line's overrides here
    if multirun.is_file():
        swept |= {o.key_or_group for o in parser.parse_overrides(list(OmegaConf.load(multirun).hydra.overrides.task))
                  if o.is_sweep_override()}
    job = list(hc.overrides.task)
    overrides = [s for s, o in zip(job, parser.parse_overrides(job)) if o.key_or_group in swept] if swept else job
    sweep_dir = Path(hc.sweep.dir).resolve()
    try:
        group = sweep_dir.relative_to(Path(cfg.paths.run_dir).resolve()).as_posix()
    except ValueError:
        group = sweep_dir.name
    return {"group": group, "job": int(hc.job.num), "overrides": overrides, "dir": str(sweep_dir)}


def resume_state(cfg: DictConfig, checkpoint_dir: Path, prefix: str):
    """Start fresh or resume this stage's run (``resume``, ``resume_allow``): see
    :func:`align.checkpoints.start_run`."""
    from align.checkpoints import start_run
    from align.distributed import is_main_process

    return start_run(cfg.stage, to_plain(cfg), checkpoint_dir, prefix, resume=bool(cfg.resume),
                     allow=to_plain(cfg.get("resume_allow")) or (), main_process=is_main_process())


def default_config(stage: str) -> dict:
    """``conf/<stage>.yaml`` with no overrides, resolved into plain containers: the reference the
    config check (:mod:`align.config_checks`) compares the types of a run's keys with. Composed with
    Hydra's compose API, inside the running Hydra app when there is one, else from ``conf/``."""
    return copy.deepcopy(_default_config(stage))


@functools.lru_cache(maxsize=None)
def _default_config(stage: str) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name=stage)
    else:
        with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name=stage)
    return OmegaConf.to_container(cfg, resolve=True)
