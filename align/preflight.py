"""Pre-flight of a stage's paths and lengths: before the first model loads, not after training.

:func:`check_paths` walks the config's leaves that name inputs (keys ``source``, ``name_or_path``,
``prompts``, ``gold_prompts``, ``ptx``, the ``train``/``validation``/``test`` files under ``data``
and ``prompts``, eval's ``policies.sft``/``extra_policies``) and checks that each local path
exists and is readable; a path into this run's folder that is missing names the stage that
writes it (``make sft RUN=<run>``). Hub ids (not an existing local path, and not shaped like one)
are left to transformers/datasets. It then checks that the stage's output folder can be written
and that nothing of the wrong kind stands where the stage writes (a file named ``final``).

:func:`check_model_limits` reads the ``config.json`` of local model folders (JSON only, no
model is loaded) and refuses a length key above the model's ``max_position_embeddings``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from align.errors import ConfigError

INPUT_NAMES = {"source", "name_or_path", "prompts", "gold_prompts", "ptx"}  # any leaf with this key name
SPLIT_NAMES = {"train", "validation", "test"}  # a file when directly under data.* or prompts.*
EVAL_INPUTS = ("policies.sft", "extra_policies.*", "forgetting.texts")  # eval: every other policy and the RM may be missing
DATA_SUFFIXES = (".jsonl", ".json", ".txt", ".csv", ".parquet", ".gz", ".arrow", ".yaml", ".md", ".bin",
                 ".safetensors")

# Inputs a stage reads only in some settings: (stage, key) -> whether it is read.
READ_WHEN = {
    ("pretrain", "model.name_or_path"): lambda c: c.get("model", {}).get("init") == "pretrained",
    ("ppo", "data.ptx"): lambda c: (c["ppo"].get("ptx_coef") or 0) > 0,
    ("ppo", "data.validation"): lambda c: bool(c["eval"].get("every")),
    ("ppo", "data.test"): lambda c: bool(c["eval"].get("final")),
}

# What the stage writes in its folder: folders, and files.
OUTPUT_DIRS = ("final", "final_merged", "final_adapter", "checkpoints")
OUTPUT_FILES = ("metrics.json", "config.yaml", "train.jsonl", "validation.jsonl", "history.jsonl", "report.md")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def input_paths(plain: dict) -> list[tuple[str, str]]:
    """``(key, value)`` of every input path the stage reads (strings only; null is off)."""
    stage = plain["stage"]
    found = []
    for key, value in _leaves(plain):
        last, top = key.rsplit(".", 1)[-1], key.split(".")[0]
        if not isinstance(value, str) or top in ("hydra", "trainer", "deepspeed", "peft", "logger", "paths"):
            continue
        if stage == "eval":
            wanted = any(_match(key, p) for p in EVAL_INPUTS) or (top in ("data",) and last == "prompts")
        else:
            wanted = last in INPUT_NAMES or (last in SPLIT_NAMES and key.count(".") == 1 and top in ("data", "prompts"))
        read = READ_WHEN.get((stage, key), lambda c: True)
        if wanted and read(plain):
            found.append((key, value))
    return found


def looks_local(value: str) -> bool:
    """A local path (it exists, or is shaped like a path) rather than a hub id like ``org/name``."""
    if os.path.lexists(value) or value.startswith(("/", "./", "../", "~", "\\")) or value.count("/") >= 2:
        return True
    if value.lower().endswith(DATA_SUFFIXES) or not _HUB_ID.match(value):
        return True
    return "/" in value and Path(value.split("/")[0]).is_dir()  # outputs/x: under an existing folder


def check_paths(plain: dict, out_dir: Path) -> None:
    """Every input path exists and is readable; the stage's outputs can be written.

    Args:
        plain: The stage's resolved config (plain containers).
        out_dir: The stage's output folder.

    Raises:
        ConfigError: Naming the key and the path, and which stage builds a missing one.
    """
    for key, value in input_paths(plain):
        if not looks_local(value):
            continue
        path = Path(value).expanduser()
        if not path.exists():
            raise ConfigError(f"{key}={value}: no such file or folder. {_builder_hint(plain, path, key)}")
        if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            raise ConfigError(f"{key}={value}: not readable (permissions); fix them or point {key} at a readable copy.")
        if key.rsplit(".", 1)[-1] == "name_or_path" or key.startswith(("policies.", "extra_policies.")):
            if not path.is_dir():
                raise ConfigError(f"{key}={value} is a file; a model folder (config.json + weights) or a hub id is expected.")
    check_outputs(Path(out_dir))


def _builder_hint(plain: dict, path: Path, key: str) -> str:
    run_dir = Path(plain.get("paths", {}).get("run_dir", "outputs/default")).resolve()
    try:
        stage = path.resolve().relative_to(run_dir).parts[0]
    except (ValueError, IndexError):
        return f"Check {key} (relative paths are from the folder you run in: {Path.cwd()})."
    run = plain.get("run", "default")
    return (f"It is written by the `{stage}` stage of run `{run}`: run `make {stage} RUN={run}` "
            f"(or python stages/{stage}.py run={run}) first, or point {key} at an existing path.")


def check_outputs(out_dir: Path) -> None:
    """The stage folder can be created and written; no file stands where a folder goes (and back)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"the stage folder {out_dir} is a file; remove it or choose another run=/output_dir=.")
    existing = next(p for p in [out_dir, *out_dir.absolute().parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the stage folder {out_dir}: {existing} is not writable; "
                          "choose another paths.output_root= (or fix the permissions).")
    for name in OUTPUT_DIRS:
        p = out_dir / name
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{p} is a file where the stage writes its {name}/ folder; move or remove it.")
        if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"{p}/ is not writable; fix its permissions or choose another run=.")
    for name in OUTPUT_FILES:
        p = out_dir / name
        if p.is_dir():
            raise ConfigError(f"{p} is a folder where the stage writes the file {name}; move or remove it.")
        if p.exists() and not os.access(p, os.W_OK):
            raise ConfigError(f"{p} is not writable; fix its permissions or choose another run=.")


# ----------------------------------------------------------------------------- lengths vs. the model


# (length keys, summed) -> the model whose positions they use, per stage.
LENGTH_LIMITS = {
    "pretrain": [(("data.block_size",), "model.name_or_path")],
    "sft": [(("trainer.max_length",), "model.name_or_path"), (("gold.max_new_tokens",), "model.name_or_path")],
    "prefs": [(("sampling.max_new_tokens",), "model.name_or_path")],
    "rm": [(("data.max_length",), "model.name_or_path")],
    "dpo": [(("data.max_length",), "model.name_or_path"), (("eval.max_new_tokens",), "model.name_or_path")],
    "ppo": [(("max_prompt_length", "generation.max_new_tokens"), "model.name_or_path"),
            (("max_prompt_length", "generation.max_new_tokens"), "reward_model.name_or_path")],
    "eval": [(("rm.max_length",), "reward_model"), (("generation.max_new_tokens",), "policies.sft")],
}


def model_position_limit(path: str) -> int | None:
    """``max_position_embeddings`` (or ``n_positions``) from a local model folder's config.json;
    None for a hub id, a missing folder or a config without one. An adapter folder is read through
    its merged sibling (``final_merged/``) when there is one."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file() and (folder / "adapter_config.json").is_file():
        folder = folder.parent / "final_merged"
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for node in (config, config.get("text_config") or {}):
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            if isinstance(node.get(name), int) and not isinstance(node.get(name), bool):
                return node[name]
    return None


def check_model_limits(plain: dict) -> None:
    """Refuse a length (or a sum of lengths) above the model's position limit.

    Pretrain with ``model.init=scratch`` builds its model from ``model.arch``: its
    ``max_position_embeddings`` is the limit.

    Raises:
        ConfigError: Naming the key(s), the value and the model's limit.
    """
    stage = plain["stage"]
    for keys, model_key in LENGTH_LIMITS.get(stage, []):
        values = [_get(plain, k) for k in keys]
        if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
            continue
        if stage == "pretrain" and plain.get("model", {}).get("init") == "scratch":
            limit, source = _get(plain, "model.arch.max_position_embeddings"), "model.arch.max_position_embeddings"
        else:
            path = _get(plain, model_key)
            limit = model_position_limit(path) if isinstance(path, str) else None
            source = f"the max_position_embeddings of {model_key}={path}"
        if isinstance(limit, int) and sum(values) > limit:
            what = " + ".join(f"{k}={v}" for k, v in zip(keys, values))
            total = f" = {sum(values)}" if len(keys) > 1 else ""
            raise ConfigError(f"{what}{total} is above {source} ({limit}): the model has no position embedding "
                              f"past {limit} tokens. Lower {' or '.join(keys)} to fit {limit}.")


def _get(plain: dict, key: str):
    node = plain
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, f"{name}.")
        else:
            yield name, value


def _match(key: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(key, pattern)
