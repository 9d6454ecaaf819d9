"""The whole shared real-data files (../shared/data) through their shipped configs (conf/data): the counts
their README states, and the train/validation splits. Fast: no model, no tokenizer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import align.config  # noqa: F401 - registers ${align_root:}
from align.data import load_preferences

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "data"  # CI checks shared/ out beside the repository


def needs(name: str):
    return pytest.mark.skipif(not (SHARED / name).exists(), reason=f"{SHARED / name} not present")


def load_config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml"), resolve=True)


def load_parts(name: str):
    """``{"train": (examples, report), "validation": ...}`` as a stage loads data=<name>."""
    cfg = load_config(name)
    return {split: load_preferences(cfg[split]["source"], cfg[split]["split"], format=cfg["format"],
                                    on_bad_row=cfg["on_bad_row"], holdout=cfg[split]["holdout"])
            for split in ("train", "validation")}


def first_turns(examples) -> set[str]:
    return {e.prompt[0]["content"].strip() for e in examples}


@needs("oasst_en_100_tree.jsonl")
def test_oasst_trees_give_the_readme_groups():
    examples, report = load_preferences(str(SHARED / "oasst_en_100_tree.jsonl"))
    assert report.format == "oasst_tree" and (report.rows_read, report.rows_kept) == (100, 100)
    sizes = Counter(len(e.responses) for e in examples)
    assert sizes == Counter({3: 117, 2: 57, 4: 27, 6: 6, 5: 3, 9: 1, 8: 1})  # K = 2..9
    # The README's 211 groups (638 replies) are those whose siblings all carry a rank; one more group (line 59,
    # "thank youuu!!!") has 3 ranked replies and a 4th unranked one, kept as K = 3 with the 4th left out.
    assert len(examples) == 212 == 211 + 1 and sum(sizes.elements()) == 641 == 638 + 3
    # 22 synthetic messages: the roots of 5 synthetic trees and their 17 ranked replies (kept: human ranks).
    assert report.inner == Counter(groups=212, replies_unranked=1, replies_synthetic=17,
                                   **{"groups_skipped/too_few_ranked": 2})
    assert all(e.prompt[-1]["role"] == "user" and len(e.prompt) % 2 == 1 for e in examples)


@needs("oasst_en_100_tree.jsonl")
def test_oasst_trees_config_splits_by_tree():
    parts = load_parts("oasst_trees")
    (train, tr), (val, vr) = parts["train"], parts["validation"]
    assert (tr.rows_kept, tr.held_out, vr.rows_kept, vr.held_out) == (81, 19, 19, 81)  # trees
    assert (len(train), len(val)) == (172, 40)  # groups
    assert not first_turns(train) & first_turns(val)  # every group of a tree on the same side


@needs("finegrained_qa_feedback_dev.json")
def test_finegrained_gives_500_prompts_with_tie_groups():
    examples, report = load_preferences(str(SHARED / "finegrained_qa_feedback_dev.json"), on_bad_row="skip")
    # 500 prompts, of which 12 have every answer tied (all six labels 0): counted, skipped.
    assert report.format == "finegrained" and (report.rows_read, report.rows_kept) == (500, 488)
    assert report.skipped == Counter(all_tied=12)
    assert all(len(e.responses) == 4 for e in examples)
    with_tie = [e for e in examples if len(set(e.scores)) < 4]
    assert len(with_tie) == 174
    assert sum(n > 1 for e in examples for n in Counter(e.scores).values()) == 184  # tie groups
    parts = load_parts("finegrained_qa")
    (train, tr), (val, vr) = parts["train"], parts["validation"]
    assert (len(train), len(val)) == (427, 61) and tr.held_out == 61 and vr.held_out == 427
    assert not first_turns(train) & first_turns(val)


@needs("hh_rlhf_harmless_1312.jsonl")
def test_hh_1312_config_splits_train_and_validation():
    parts = load_parts("hh_rlhf_1312")
    (train, tr), (val, vr) = parts["train"], parts["validation"]
    assert (len(train), len(val)) == (1176, 131)
    for report in (tr, vr):  # the 5 bad rows are counted by both loads
        assert report.rows_read == 1312 and report.skipped == Counter(empty_response=4, diverges_early=1)
    assert len(train) + len(val) + tr.rows_skipped == 1312
    assert not first_turns(train) & first_turns(val)
