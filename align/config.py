"""The one place in ``align/`` that touches Hydra/OmegaConf objects (stages call these).

Components take plain arguments; stages turn config nodes into plain containers here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from align.outputs import atomic_write_text

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

    set_seed(cfg.seed)
    out_dir = stage_output_dir(cfg)
    setup_logging(out_dir, cfg.stage)
    logging.getLogger(f"align.{cfg.stage}").info("resolved config:\n%s", save_resolved_config(cfg, out_dir))
    return out_dir


def open_tracker(cfg: DictConfig, out_dir: Path):
    """The stage's experiment-tracking run, from the ``logger`` group (grouped by run name)."""
    from align.tracking import Tracker

    return Tracker(
        cfg.logger.backend, out_dir, cfg.run, cfg.stage, cfg.logger.project, to_plain(cfg), cfg.logger.mode
    )
