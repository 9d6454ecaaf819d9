"""A real W&B offline run folder and real TensorBoard event files."""

import hashlib
import json
from pathlib import Path

import pytest

from align.tracking import (
    ARTIFACT_RECORD,
    LINEAGE_RECORD,
    OFFLINE_FALLBACK,
    Tracker,
    artifact_name,
    git_state,
    link_lineage,
    pending_links,
    resolve_wandb_mode,
    sha256_of,
    stage_artifact_files,
    stage_dir_of,
    wandb_server_unreachable,
)


def test_wandb_offline_run_is_a_real_syncable_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = Tracker("wandb", tmp_path, "myrun", "sft", config={"lr": 0.1})
    assert tracker.report_to == ["wandb"]
    tracker.log({"train/loss": 1.5}, step=1)
    tracker.log_table("samples", ["prompt", "response"], [["a", "b"]])
    from align.data.prompts import ChatPrompt  # multi-turn prompts beside one-turn ones: one column type

    chat = ChatPrompt([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                       {"role": "user", "content": "and?"}])
    tracker.log_table("mixed", ["prompt", "response"], [["plain", "b"], [chat, "c"]])
    tracker.finish({"gold/score_mean": 0.5})
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = [p.name for p in runs[0].iterdir()]
    assert any(name.endswith(".wandb") for name in files), files  # the file `wandb sync` uploads


def test_tensorboard_writes_event_files(tmp_path):
    tracker = Tracker("tensorboard", tmp_path, "r", "sft")
    tracker.log({"train/loss": 1.0}, step=0)
    tracker.finish({"eval/loss": 0.5})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    with pytest.raises(ValueError):
        resolve_wandb_mode("sometimes")
    with pytest.raises(ValueError):
        Tracker("mlflow", tmp_path, "r", "s")


# --- lineage, provenance and sweeps (a real offline run; its .wandb file is what `wandb sync` uploads)


def wandb_records(stage_dir):
    """The protobuf records of the one offline run under ``stage_dir/wandb`` (what `wandb sync`
    uploads). The .wandb file is a LevelDB-style log: a 7-byte header (":W&B", version), then
    32 KiB blocks of chunks, each with a 7-byte header (crc32, length, type: full/first/middle/last)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = list(Path(stage_dir).glob("wandb/offline-run-*/*.wandb"))
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        chunks = chunk if kind in (1, 2) else chunks + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            records.append(record)
    return records


def _of(records, kind):
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def _config(records):
    """The run's config as synced: initial config plus every later update."""
    items = list(_of(records, "run")[0].config.update)
    for c in _of(records, "config"):
        items += list(c.update)
    return {i.key: json.loads(i.value_json) for i in items}


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # staging stays in tmp


def _fake_stage(root, name):
    """A finished stage folder: what a stage leaves (final/, metrics.json, config.yaml) plus what
    its artifact must leave out (checkpoints, the log)."""
    stage = root / name
    (stage / "final").mkdir(parents=True)
    (stage / "final" / "model.safetensors").write_bytes(b"weights")
    (stage / "final" / "config.json").write_text("{}")
    (stage / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (stage / "checkpoints" / "checkpoint-2" / "model.safetensors").write_bytes(b"old")
    (stage / "metrics.json").write_text('{"eval/loss": 1.0}')
    (stage / "config.yaml").write_text("stage: x\n")
    (stage / f"{name}.log").write_text("log\n")
    return stage


def test_stage_artifact_is_logged_offline_and_sync_uploads_it_from_the_stage_folder(tmp_path, offline):
    stage = _fake_stage(tmp_path / "r", "sft")
    tracker = Tracker("wandb", stage, "r", "sft")
    record = tracker.log_stage_artifact(stage, "model")
    run_id = tracker.run.id
    tracker.finish()
    assert record["name"] == "r-sft" and record["alias"] == f"run-{run_id}" and record["mode"] == "offline"
    assert json.loads((stage / ARTIFACT_RECORD).read_text()) == record
    (art,) = [a for a in _of(wandb_records(stage), "artifact") if a.type == "model"]
    assert art.name == "r-sft" and set(art.aliases) == {f"run-{run_id}", "latest"}
    assert art.digest == record["digest"]
    paths = {c.path: c.local_path for c in art.manifest.contents}
    assert set(paths) == {"final/model.safetensors", "final/config.json", "metrics.json", "config.yaml"}
    # Referenced in place (nothing copied to a staging folder): `wandb sync` reads these files.
    assert all(Path(p).is_file() and Path(p).resolve().is_relative_to(stage.resolve()) for p in paths.values())


def test_downstream_records_its_upstream_artifact_and_data_hashes(tmp_path, offline):
    run_dir = tmp_path / "r"
    sft = _fake_stage(run_dir, "sft")
    up = Tracker("wandb", sft, "r", "sft")
    up_record = up.log_stage_artifact(sft, "model")
    up.finish()
    prefs = _fake_stage(run_dir, "prefs")
    (prefs / "train.jsonl").write_text('{"prompt": "hi"}\n')
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "a"}\n')

    rm = run_dir / "rm"
    rm.mkdir()
    tracker = Tracker("wandb", rm, "r", "rm")
    hashes = tracker.use_inputs(sft / "final", prefs / "train.jsonl", str(data), "org/hub-dataset", None, False)
    tracker.finish()

    assert hashes[str(data.resolve())] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert hashes[str((prefs / "train.jsonl").resolve())] == hashlib.sha256(b'{"prompt": "hi"}\n').hexdigest()
    assert hashes["org/hub-dataset"] is None  # a hub id: no local file to hash
    assert not any("final" in k for k in hashes)  # model folders are pinned by their artifact, not hashed
    lineage = json.loads((rm / LINEAGE_RECORD).read_text())
    by_path = {Path(i["path"]).name: i for i in lineage["inputs"]}
    assert by_path["sft"]["artifact"]["name"] == "r-sft"
    assert by_path["sft"]["artifact"]["alias"] == up_record["alias"]
    assert by_path["sft"]["linked"] is False  # offline: W&B refuses use_artifact; `link` declares it later
    assert by_path["prefs"]["artifact"] is None  # prefs logged no artifact (logger=none there)
    config = _config(wandb_records(rm))  # what the synced run's config will hold
    assert config["inputs"]["sha256"] == hashes
    assert [i["artifact"] and i["artifact"]["name"] for i in config["lineage"]["inputs"]] == ["r-sft", None]
    git = config["git"]
    assert set(git) == {"commit", "dirty"}
    assert git["commit"] is None or len(git["commit"]) == 40


def test_link_lineage_declares_pending_inputs_once(tmp_path):
    stage = tmp_path / "r" / "dpo"
    stage.mkdir(parents=True)
    art = {"name": "r-sft", "type": "model", "alias": "run-abc", "digest": "d", "project": "align", "entity": None}
    record = {"run_id": "xyz", "project": "align", "entity": None, "mode": "offline",
              "inputs": [{"path": "/x/sft", "artifact": art, "linked": False},
                         {"path": "/x/prefs", "artifact": None, "linked": False}]}
    (stage / LINEAGE_RECORD).write_text(json.dumps(record))

    class Api:  # stands in for wandb.Api(): the one call this makes needs the W&B server
        default_entity = "me"
        calls = []

        def artifact(self, path):
            return ("artifact", path)

        def run(self, path):
            api = self

            class Run:
                def use_artifact(self, artifact):
                    api.calls.append((path, artifact))
            return Run()

    assert [e["artifact"]["name"] for _, _, e in pending_links(tmp_path)] == ["r-sft"]
    assert link_lineage(tmp_path, api=Api()) == 1
    assert Api.calls == [("me/align/xyz", ("artifact", "me/align/r-sft:run-abc"))]
    assert json.loads((stage / LINEAGE_RECORD).read_text())["inputs"][0]["linked"] is True
    assert link_lineage(tmp_path, api=Api()) == 0 and len(Api.calls) == 1


def test_a_multirun_job_is_grouped_by_its_sweep_and_tagged_with_its_overrides(tmp_path, offline):
    sweep = {"group": "multirun/dpo", "job": 1, "overrides": ["dpo.beta=0.5"], "dir": str(tmp_path)}
    tracker = Tracker("wandb", tmp_path, "r", "dpo", sweep=sweep)
    tracker.finish()
    (run,) = _of(wandb_records(tmp_path), "run")
    assert (run.run_group, run.job_type, run.display_name) == ("r/multirun/dpo", "dpo", "r/dpo/1")
    assert list(run.tags) == ["sweep", "dpo.beta=0.5"]
    assert _config(wandb_records(tmp_path))["sweep"] == sweep


def test_without_wandb_lineage_calls_are_harmless(tmp_path):
    stage = _fake_stage(tmp_path / "r", "sft")
    for backend in ("none", "tensorboard"):
        tracker = Tracker(backend, stage, "r", "sft")
        assert tracker.log_stage_artifact(stage) is None
        tracker.use_inputs(stage / "final")
        tracker.finish()
    assert not (stage / ARTIFACT_RECORD).exists() and not (stage / LINEAGE_RECORD).exists()


def test_provenance_helpers(tmp_path):
    stage = _fake_stage(tmp_path / "r", "prefs")
    (stage / "train.jsonl").write_text("x\n")
    assert stage_dir_of(stage / "final" / "config.json") == stage.resolve()
    assert stage_dir_of(stage / "train.jsonl") == stage.resolve()
    assert stage_dir_of(tmp_path) is None
    names = {p.relative_to(stage).as_posix() for p in stage_artifact_files(stage)}
    assert names == {"final/model.safetensors", "final/config.json", "metrics.json", "config.yaml", "train.jsonl"}
    assert sha256_of(stage / "train.jsonl") == hashlib.sha256(b"x\n").hexdigest()
    folder = sha256_of(stage / "final")
    (stage / "final" / "config.json").write_text('{"a": 1}')
    assert sha256_of(stage / "final") != folder  # a folder's hash covers its files' contents
    assert artifact_name("my run/1", "sft") == "my-run-1-sft"
    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # not a git repository


def test_unreachable_server_with_a_key_falls_back_offline_fast_and_says_so(tmp_path, monkeypatch):
    """A W&B API key and no reachable server (a closed local port): the run goes offline with a
    warning, recorded as ``logger/mode: offline_fallback``, instead of W&B stopping the stage after
    its init timeout. The key reaches no file."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = "fake" + "k3y" * 12
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    assert wandb_server_unreachable(f"http://127.0.0.1:{port}")
    import wandb

    wandb.teardown()  # W&B reads WANDB_BASE_URL when its process-wide state is set up: start afresh

    tracker = Tracker("wandb", tmp_path, "r", "sft", config={"lr": 0.1})
    assert tracker.mode == OFFLINE_FALLBACK and tracker.run.offline
    assert tracker.metrics() == {"logger/mode": "offline_fallback"}
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.finish({"eval/loss": 0.5})
    (run,) = list((tmp_path / "wandb").glob("offline-run-*"))
    assert list(run.glob("*.wandb"))  # a real run `wandb sync` uploads later
    config = _config(wandb_records(tmp_path))
    assert config["logger_fallback"]["mode"] == OFFLINE_FALLBACK
    assert f"127.0.0.1:{port}" in config["logger_fallback"]["reason"]
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f


def test_tracker_mode_is_the_backend_without_wandb(tmp_path):
    assert Tracker("none", tmp_path, "r", "s").metrics() == {"logger/mode": "none"}
