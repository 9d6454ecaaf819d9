"""The output contract every stage follows.

``outputs/<run>/<stage>/`` holds ``final/`` (a checkpoint plain ``transformers``/``peft`` load),
``metrics.json`` (a flat dict with slash-namespaced keys), ``config.yaml`` (the resolved config)
and the logs. Files are written atomically (temp file + rename) so a run that dies never leaves a
half-written ``metrics.json`` behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

FINAL = "final"
METRICS = "metrics.json"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_metrics(out_dir: str | Path, metrics: Mapping[str, object]) -> Path:
    """Write ``metrics.json``: a flat dict of numbers/strings/bools with slash-namespaced keys.

    Raises:
        TypeError: If a value is nested or not JSON-serialisable (the contract is a flat dict).
    """
    path = Path(out_dir) / METRICS
    atomic_write_text(path, metrics_text(metrics))
    return path


def metrics_text(metrics: Mapping[str, object]) -> str:
    """The JSON text :func:`write_metrics` writes: keys sorted, NaN/inf as null.

    Raises:
        TypeError: If a value is nested or not JSON-serialisable.
    """
    flat = {}
    for key, value in metrics.items():
        if hasattr(value, "item"):  # torch / numpy scalars
            value = value.item()
        if not isinstance(value, (int, float, str, bool)) and value is not None:
            raise TypeError(f"metrics[{key!r}] is a {type(value).__name__}; metrics.json is flat.")
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN/inf; null says "not measurable" honestly
        flat[key] = value
    return json.dumps(dict(sorted(flat.items())), indent=2) + "\n"


def read_metrics(stage_dir: str | Path) -> dict:
    """Read a stage's ``metrics.json``."""
    return json.loads((Path(stage_dir) / METRICS).read_text(encoding="utf-8"))
