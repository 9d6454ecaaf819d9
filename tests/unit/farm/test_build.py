"""Tests for align.farm.build: determinism, disjoint splits, file schemas, and the manifest."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from align.farm.build import allocate, build, split_tasks
from align.farm.gold import gold_score

REPO = Path(__file__).resolve().parents[3]
SMALL = dict(seed=3, n_train=300, n_validation=30, n_test=30, n_corpus_train=400,
             n_corpus_validation=40, progress=False)  # fmt: skip


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("farm_a")
    build(out, **SMALL)
    return out / "farm"


def test_allocate_hand_example():
    # Shares 2.5 / 2.5 / 5; y is capped at 1; the other 9 go 1:2 to x and z -> 3 and 6.
    caps = {"x": 9, "y": 1, "z": 9}
    assert allocate(10, {"x": 1, "y": 1, "z": 2}, caps) == {"x": 3, "y": 1, "z": 6}
    # Largest remainder: 200 * 0.2125 = 42.5 four times and 30; the two leftover items go to
    # the first two keys (ties break by order).
    weights = {"a": 0.2125, "b": 0.2125, "c": 0.2125, "d": 0.2125, "e": 0.15}
    expected = {"a": 43, "b": 43, "c": 42, "d": 42, "e": 30}
    assert allocate(200, weights, dict.fromkeys(weights, 999)) == expected
    with pytest.raises(ValueError, match="lower the split sizes"):
        allocate(10, {"x": 1, "y": 1}, {"x": 3, "y": 3})


def test_build_is_byte_identical_when_run_twice(small, tmp_path):
    build(tmp_path, **SMALL)
    names = sorted(p.name for p in small.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "farm").iterdir())
    assert len(names) == 10  # 3 prompt splits, 2 SFT splits, 2 corpus splits, 2 small preference sets, the manifest
    for name in names:
        assert (small / name).read_bytes() == (tmp_path / "farm" / name).read_bytes(), name


def test_splits_are_disjoint_and_sized(small):
    prompts = {s: [r["prompt"] for r in _jsonl(small / f"prompts_{s}.jsonl")]
               for s in ("train", "validation", "test")}  # fmt: skip
    assert [len(prompts[s]) for s in ("train", "validation", "test")] == [300, 30, 30]
    for split in prompts.values():
        assert len(set(split)) == len(split)
    assert not set(prompts["train"]) & set(prompts["validation"])
    assert not set(prompts["train"]) & set(prompts["test"])
    assert not set(prompts["validation"]) & set(prompts["test"])


def test_sft_rows_and_manifest(small):
    manifest = json.loads((small / "manifest.json").read_text())
    train_prompts = _jsonl(small / "prompts_train.jsonl")
    rows = _jsonl(small / "sft_train.jsonl")
    assert len(rows) == 300
    for row, prompt in zip(rows, train_prompts):
        user, assistant = row["messages"]
        assert user == {"role": "user", "content": prompt["prompt"]}
        assert assistant["role"] == "assistant" and row["family"] == prompt["family"]
        assert row["gold"] == gold_score(user["content"], assistant["content"])
    assert manifest["seed"] == 3
    assert manifest["counts"]["train"]["total"] == 300
    assert sum(v for k, v in manifest["counts"]["test"].items() if k != "total") == 30
    rate = manifest["demonstrator"]["gold_correct_rate"]["train"]["overall"]
    assert rate == round(sum(r["correct"] for r in rows) / 300, 4)
    perfect = manifest["demonstrator"]["gold_perfect_rate"]["train"]["overall"]
    assert perfect == round(sum(r["gold"] >= 0.99 for r in rows) / 300, 4)
    for name, entry in manifest["files"].items():
        data = (small / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_corpus_never_contains_validation_or_test_prompts(small):
    corpus = (small / "corpus_train.txt").read_text() + (small / "corpus_validation.txt").read_text()
    # 440 drawn lines + the fact table (about 992 facts x 6 repeats / 4 per line = 1488 lines)
    manifest = json.loads((small / "manifest.json").read_text())
    assert len(corpus.splitlines()) == 440 + manifest["corpus"]["fact_table_lines"]
    for split in ("validation", "test"):
        for row in _jsonl(small / f"prompts_{split}.jsonl"):
            assert row["prompt"] not in corpus
    assert "Question: " in corpus  # question/answer lines come from train prompts


def test_test_split_does_not_depend_on_train_size():
    assert split_tasks(0, 100, 20, 20)["test"] == split_tasks(0, 900, 20, 20)["test"]
    with pytest.raises(ValueError, match="lower the split sizes"):
        split_tasks(0, n_train=10_000)


def test_cli_writes_files(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "align.farm.build", "--out", str(tmp_path), "--seed", "1",
         "--n-train", "50", "--n-validation", "5", "--n-test", "5", "--n-corpus-train", "20",
         "--n-corpus-validation", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "[farm] done" in proc.stdout and "Warning" not in proc.stderr
    assert json.loads((tmp_path / "farm" / "manifest.json").read_text())["seed"] == 1


def test_shipped_data_is_reproducible(tmp_path):
    shipped = REPO / "data" / "farm" / "manifest.json"
    if not shipped.exists():
        pytest.skip("data/farm has not been built yet")
    manifest = build(tmp_path, seed=json.loads(shipped.read_text())["seed"], progress=False)
    assert manifest == json.loads(shipped.read_text())


def test_fact_table_covers_every_arithmetic_fact_the_same_number_of_times():
    import random
    import re
    from collections import Counter

    from align.farm.corpus import fact_lines

    lines = fact_lines(random.Random(0), repeats=3)
    sums = Counter(re.findall(r"\b(\d+) plus (\d+) is (\d+)\.", " ".join(lines)))
    # 21 x 21 sums, each exactly 3 times, each right.
    assert len(sums) == 441 and set(sums.values()) == {3}
    assert all(int(a) + int(b) == int(c) for a, b, c in sums)
    assert all(len(line.split(". ")) <= 4 for line in lines)
