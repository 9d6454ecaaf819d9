"""Experiment tracking: Weights & Biases (offline automatically without credentials), TensorBoard, or none.

A stage opens one :class:`Tracker` before training. For TRL/Trainer-backed stages the tracker's
``report_to`` goes into the trainer config and the Trainer's own callback logs into the run the
tracker opened (``WandbCallback`` reuses an active ``wandb.run``); custom loops call
:meth:`Tracker.log`. Runs are grouped by run name with ``job_type`` = stage id, so a whole pipeline
(pretrain -> sft -> ...) shows up as one group in W&B.

Offline W&B runs are ordinary run folders under ``<stage dir>/wandb/offline-run-*`` that
``wandb sync`` uploads later. An online run that cannot reach the server (no network, a wrong
``WANDB_BASE_URL``, a server that does not answer) falls back to offline with a warning instead
of stopping the stage: the server is probed first (a TCP connection, :data:`PROBE_TIMEOUT_S`),
``wandb.init`` gets a short ``init_timeout`` (:data:`ONLINE_INIT_TIMEOUT_S`), and an init that
still fails is retried offline. The mode used is ``Tracker.mode`` (``offline_fallback`` then),
which every stage writes to ``metrics.json`` as ``logger/mode``. The API key never goes into a
message, the config or the metrics.

Lineage (docs/tracking.md): each stage logs its output folder as the artifact ``<run>-<stage>``
(:meth:`Tracker.log_stage_artifact`) and declares what it read (:meth:`Tracker.use_inputs`): an
upstream stage's artifact as input, data files by sha256. ``run.use_artifact`` refuses offline
runs, so offline inputs are recorded in ``<stage dir>/wandb_lineage.json`` and declared after
``wandb sync`` by ``python -m align.tracking link outputs/<run>`` (public API, one call per input).
Runs also carry the git commit and dirty flag, and a multirun job's sweep (group and tags).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

BACKENDS = ("wandb", "tensorboard", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")
REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_RECORD = "wandb_artifact.json"  # in a stage folder: the artifact its run logged
LINEAGE_RECORD = "wandb_lineage.json"    # in a stage folder: its run's inputs, linked or pending
NOT_IN_ARTIFACT = {"checkpoints", "wandb", "tensorboard"}  # folders a stage artifact leaves out
PROBE_TIMEOUT_S = 5.0  # a TCP connection to the W&B server before an online init
ONLINE_INIT_TIMEOUT_S = 30.0  # wandb.init's own limit online (wandb's default is 90 s); WANDB_INIT_TIMEOUT wins
OFFLINE_FALLBACK = "offline_fallback"


def wandb_has_credentials() -> bool:
    """True when an API key is in the environment or in ``~/.netrc`` (``wandb login`` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> ``online`` with credentials, else ``offline``; ``WANDB_MODE`` in the env wins."""
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.mode={mode!r} is not one of {', '.join(WANDB_MODES)}.")
    env = os.environ.get("WANDB_MODE")
    if mode == "auto" and env:
        return env
    if mode == "auto":
        return "online" if wandb_has_credentials() else "offline"
    return mode


def _scrub(text: str) -> str:
    """``text`` with the W&B API key (if one is set) replaced by ``***``."""
    key = os.environ.get("WANDB_API_KEY")
    return text.replace(key, "***") if key else text


def wandb_server_unreachable(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the W&B server at ``base_url`` cannot be reached (a TCP connection attempt), or None.

    Behind an HTTP(S) proxy (``HTTPS_PROXY``/``HTTP_PROXY``) the direct connection says nothing,
    so it is not tried (None): ``wandb.init``'s own timeout decides then.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    parts = urlsplit(base_url)
    if not parts.hostname:
        return f"{base_url!r} is not a URL"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        return str(e)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{parts.hostname}:{port}: {e.strerror or e}"


def git_state(repo: str | Path = REPO_ROOT) -> dict:
    """``{"commit": <HEAD sha>, "dirty": <tracked files changed>}``; ``None`` values outside git."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = hashlib.sha256()
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if not path.is_file():
            total.update(f.relative_to(path).as_posix().encode() + b"\0")
        total.update(h.digest())
    return h.hexdigest() if path.is_file() else total.hexdigest()


def stage_dir_of(path: str | Path) -> Path | None:
    """The stage folder ``path`` lies in (the folder itself or one of its two parents holding a
    ``metrics.json``: ``sft/final`` -> ``sft``, ``prefs/train.jsonl`` -> ``prefs``), else None."""
    path = Path(path).resolve()
    for candidate in [path, *path.parents][:3]:
        if (candidate / "metrics.json").is_file():
            return candidate
    return None


def stage_artifact_files(out_dir: str | Path) -> list[Path]:
    """What a stage artifact holds: the stage folder without checkpoints, tracker folders, logs
    and the tracking records (``final/``, ``metrics.json``, ``config.yaml``, data files, plots)."""
    out_dir = Path(out_dir)
    files = []
    for p in sorted(out_dir.rglob("*")):
        rel = p.relative_to(out_dir)
        if (not p.is_file() or rel.parts[0] in NOT_IN_ARTIFACT or p.suffix == ".log"
                or p.name in (ARTIFACT_RECORD, LINEAGE_RECORD) or any(x.startswith(".") for x in rel.parts)):
            continue
        files.append(p)
    return files


def artifact_name(run_name: str, stage: str) -> str:
    """``<run>-<stage>``, with characters W&B does not allow in artifact names replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{run_name}-{stage}")


class Tracker:
    """One experiment-tracking run for one stage.

    Args:
        backend: ``wandb``, ``tensorboard`` or ``none``.
        out_dir: The stage's output folder (W&B and TensorBoard files go below it).
        run_name: The pipeline run name (W&B group).
        stage: Stage id (W&B ``job_type``).
        project: W&B project.
        config: The resolved config as a plain dict (stored with the run).
        mode: W&B mode (see :func:`resolve_wandb_mode`).
        tags: Optional W&B tags.
        sweep: The Hydra multirun job this run is (``align.config.sweep_info``): ``group`` (the
            sweep folder under the run folder, e.g. ``multirun/dpo``), ``job`` (its number) and
            ``overrides`` (the swept values). W&B then groups the run as ``<run>/<group>``, names
            it ``<run>/<stage>/<job>`` and tags it ``sweep`` plus each override.
        log_artifacts: ``False``: :meth:`log_stage_artifact` logs nothing (no upload of big models).
    """

    def __init__(
        self,
        backend: str,
        out_dir: Path,
        run_name: str,
        stage: str,
        project: str = "align",
        config: dict | None = None,
        mode: str = "auto",
        tags: list[str] | None = None,
        sweep: dict | None = None,
        log_artifacts: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"logger.backend={backend!r} is not one of {', '.join(BACKENDS)}.")
        self.backend = backend
        self.out_dir = Path(out_dir)
        self.run_name, self.stage, self.sweep = run_name, stage, sweep
        self.log_artifacts = log_artifacts
        self.run = None
        self._tb = None
        self._inputs: list[dict] = []
        self._data: dict[str, str | None] = {}
        self.mode = backend  # the W&B mode used (online, offline, offline_fallback, disabled), else the backend
        if backend == "wandb":
            group, name, tags = run_name, f"{run_name}/{stage}", list(tags or [])
            if sweep:
                group, name = f"{run_name}/{sweep['group']}", f"{run_name}/{stage}/{sweep['job']}"
                tags += ["sweep", *(o[:64] for o in sweep.get("overrides", []))]  # W&B: tags <= 64 chars
            extra = {"git": git_state(), **({"sweep": sweep} if sweep else {})}
            self._init_wandb(resolve_wandb_mode(mode), project=project, group=group, job_type=stage, name=name,
                             dir=str(self.out_dir), config={**(config or {}), **extra}, tags=tags or None,
                             reinit="finish_previous")
        elif backend == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.tb_dir))
            # transformers 5 has no TrainingArguments.logging_dir: its callback reads this.
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.tb_dir)

    def _init_wandb(self, mode: str, **init_kw) -> None:
        """``wandb.init`` in ``mode``; online, an unreachable or unanswering server means offline (a warning)."""
        import wandb

        why = None
        if mode == "online":
            why = wandb_server_unreachable(wandb.setup().settings.base_url)
            if why is None:
                settings = {} if os.environ.get("WANDB_INIT_TIMEOUT") else {"init_timeout": ONLINE_INIT_TIMEOUT_S}
                try:
                    self.run = wandb.init(mode="online", settings=wandb.Settings(**settings), **init_kw)
                except Exception as e:  # noqa: BLE001 - wandb.errors.CommError/UsageError, timeouts: all mean "not online"
                    why = f"wandb.init failed: {type(e).__name__}: {e}"
        if self.run is None:
            if why is not None:
                why = _scrub(why).splitlines()[0][:300]
                log.warning("W&B: cannot log online (%s); logging offline instead. `make sync` (wandb sync) "
                            "uploads the run later.", why)
                init_kw["config"] = {**init_kw["config"], "logger_fallback": {"mode": OFFLINE_FALLBACK, "reason": why}}
                mode = "offline"
            self.run = wandb.init(mode=mode, **init_kw)
        self.mode = OFFLINE_FALLBACK if why is not None else mode
        log.info("W&B run %s (%s) in %s", self.run.id, self.mode, self.run.dir)

    def metrics(self) -> dict[str, str]:
        """``{"logger/mode": ...}`` for the stage's ``metrics.json``: the W&B mode used
        (``online``, ``offline``, ``offline_fallback``, ``disabled``) or the backend."""
        return {"logger/mode": self.mode}

    @property
    def tb_dir(self) -> Path:
        return self.out_dir / "tensorboard"

    @property
    def report_to(self) -> list[str]:
        """Value for ``TrainingArguments.report_to``."""
        return [] if self.backend == "none" else [self.backend]

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Log scalar metrics (custom loops and end-of-stage evaluation)."""
        if self.run is not None:
            self.run.log(metrics, step=step)
        elif self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, global_step=step)

    def log_table(self, name: str, columns: list[str], rows: list[list]) -> None:
        """Log a table of samples (W&B table; TensorBoard gets a markdown text block)."""
        # Plain strings: W&B types a column by its first row, and a str subclass (a multi-turn
        # ChatPrompt beside one-turn prompts) is another type to it.
        rows = [[str(v) if isinstance(v, str) else v for v in row] for row in rows]
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=rows)})
        elif self._tb is not None:
            header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
            body = "".join("| " + " | ".join(str(c).replace("\n", " ") for c in r) + " |\n" for r in rows)
            self._tb.add_text(name, header + body)

    def log_stage_artifact(self, out_dir: str | Path | None = None, kind: str = "model") -> dict | None:
        """Log the stage folder as the W&B artifact ``<run>-<stage>`` of type ``kind``.

        Call it after ``metrics.json`` is written and before :meth:`finish`. The artifact holds
        :func:`stage_artifact_files` (``final/``, ``metrics.json``, ``config.yaml``, data files; no
        checkpoints). Files are referenced in place (``policy="immutable"``): nothing is copied
        to W&B's staging folder, so an offline run uploads them from the stage folder at
        ``wandb sync`` time (do not rerun the stage into the same folder before syncing). Writes
        ``wandb_artifact.json`` (name, type, alias ``run-<id>``, digest) next to them, which the
        next stage's :meth:`use_upstream` reads. Returns that record (None without W&B).
        """
        if self.run is None or not self.log_artifacts:
            return None
        import wandb

        out_dir = Path(out_dir or self.out_dir)
        files = stage_artifact_files(out_dir)
        if not files:
            log.warning("%s holds nothing to log as an artifact", out_dir)
            return None
        metrics = out_dir / "metrics.json"
        metadata = {"stage": self.stage, "run": self.run_name, "git": git_state(),
                    "metrics": json.loads(metrics.read_text()) if metrics.is_file() else {}}
        art = wandb.Artifact(artifact_name(self.run_name, self.stage), type=kind, metadata=metadata)
        for f in files:
            art.add_file(str(f), name=f.relative_to(out_dir).as_posix(), policy="immutable")
        alias = f"run-{self.run.id}"
        self.run.log_artifact(art, aliases=[alias, "latest"])
        record = {"name": art.name.split(":")[0], "type": kind, "alias": alias, "digest": art.digest,
                  "files": len(files), "project": self.run.project, "entity": self.run.entity or None,
                  "run_id": self.run.id, "mode": "offline" if self.run.offline else "online"}
        (out_dir / ARTIFACT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        log.info("W&B artifact %s:%s (%s, %d files, digest %s)", record["name"], alias, kind, len(files), art.digest)
        return record

    def use_upstream(self, path: str | Path) -> dict | None:
        """Declare the stage folder ``path`` lies in (e.g. ``outputs/<run>/sft/final``) as an input.

        Online, the upstream's artifact (its ``wandb_artifact.json``) is declared with
        ``run.use_artifact("<run>-<stage>:run-<id>")``. Offline (W&B refuses ``use_artifact``) or
        when that artifact is not on the server yet, the input is recorded as pending in this
        stage's ``wandb_lineage.json`` and in the run config (``lineage``); ``link_lineage``
        declares it after ``wandb sync``. Returns the input entry (None: not a stage folder).
        """
        upstream = stage_dir_of(path)
        if upstream is None or upstream == self.out_dir.resolve():
            return None
        record_path = upstream / ARTIFACT_RECORD
        record = json.loads(record_path.read_text()) if record_path.is_file() else None
        entry = {"path": str(upstream), "artifact": None, "linked": False}
        if record:
            entry["artifact"] = {k: record[k] for k in ("name", "type", "alias", "digest", "project", "entity")}
        if record and self.run is not None and not self.run.offline:
            try:
                self.run.use_artifact(f"{record['name']}:{record['alias']}", type=record["type"])
                entry["linked"] = True
            except Exception as e:  # not synced yet (upstream ran offline): link later
                log.warning("W&B: %s:%s not found (%s); recorded for `python -m align.tracking link`",
                            record["name"], record["alias"], e)
        self._inputs = [i for i in self._inputs if i["path"] != entry["path"]] + [entry]
        self._write_lineage()
        return entry

    def use_inputs(self, *paths: str | Path | bool | None) -> dict:
        """Declare what the stage read: model folders, data files, hub ids (falsy values are skipped).

        A path inside an upstream stage folder becomes an upstream input (:meth:`use_upstream`);
        every local data file (and data folder outside a stage) gets its sha256; a name that is
        not a local path (a hub id) is recorded as it is. Paths inside this stage's own folder
        are ignored (pretrain's ``model.name_or_path`` is its own output). All of it goes into the
        run config under ``inputs``. Returns ``{path: sha256 | None}``.
        """
        if self.backend == "none":
            return {}
        own = self.out_dir.resolve()
        for raw in paths:
            if not raw:  # None, "", False (pretrain from scratch reads no model)
                continue
            p = Path(str(raw))
            if not p.exists():
                self._data[str(raw)] = None  # a hub id: its revision is in the log, not a hash
                continue
            if p.resolve() == own or own in p.resolve().parents:
                continue
            upstream = stage_dir_of(p)
            if upstream is not None:
                self.use_upstream(p)
            if p.is_file() or upstream is None:
                self._data[str(p.resolve())] = sha256_of(p)
        inputs = {"sha256": dict(self._data), "upstream": [i["path"] for i in self._inputs]}
        if self.run is not None:
            self.run.config.update({"inputs": inputs}, allow_val_change=True)
        elif self._tb is not None:
            self._tb.add_text("inputs", "```\n" + json.dumps(inputs, indent=2) + "\n```")
        return dict(self._data)

    def _write_lineage(self) -> None:
        if self.run is None:
            return
        record = {"run_id": self.run.id, "project": self.run.project, "entity": self.run.entity or None,
                  "mode": "offline" if self.run.offline else "online", "inputs": self._inputs}
        (self.out_dir / LINEAGE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        self.run.config.update({"lineage": {"inputs": self._inputs}}, allow_val_change=True)

    def finish(self, summary: dict | None = None) -> None:
        """Store final metrics as the run summary and close the run."""
        if self.run is not None:
            if summary:
                self.run.summary.update(summary)
            self.run.finish()
            self.run = None
        if self._tb is not None:
            if summary:
                self.log(summary)
            self._tb.close()
            self._tb = None


def pending_links(root: str | Path) -> list[tuple[Path, dict, dict]]:
    """``(lineage file, its run, input)`` for every input under ``root`` not yet declared in W&B."""
    out = []
    for path in sorted(Path(root).rglob(LINEAGE_RECORD)):
        record = json.loads(path.read_text())
        out += [(path, record, i) for i in record["inputs"] if i["artifact"] and not i["linked"]]
    return out


def link_lineage(root: str | Path, api=None) -> int:
    """Declare the pending upstream inputs of the runs under ``root`` (after ``wandb sync``).

    Offline runs cannot call ``use_artifact``; once synced, the public API can:
    ``Api().run(<entity>/<project>/<run id>).use_artifact(Api().artifact("<name>:run-<id>"))``.
    Each declared input is marked ``linked`` in its ``wandb_lineage.json``. Returns the count.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    done = 0
    for path, record, entry in pending_links(root):
        art = entry["artifact"]
        run_entity = record["entity"] or api.default_entity
        art_path = f"{art['entity'] or run_entity}/{art['project']}/{art['name']}:{art['alias']}"
        api.run(f"{run_entity}/{record['project']}/{record['run_id']}").use_artifact(api.artifact(art_path))
        entry["linked"] = True
        path.write_text(json.dumps(record, indent=2) + "\n")
        log.info("linked %s -> run %s", art_path, record["run_id"])
        done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    """``python -m align.tracking link outputs/<run>``: declare offline runs' inputs after sync."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "link":
        print("usage: python -m align.tracking link <run folder>  (after `wandb sync`)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pending = pending_links(argv[1])
    if not pending:
        print(f"nothing to link under {argv[1]}")
        return 0
    print(f"linked {link_lineage(argv[1])} of {len(pending)} upstream inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
