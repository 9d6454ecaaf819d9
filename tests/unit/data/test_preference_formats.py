"""Tests for align.data.preference_formats: the finegrained format (FineGrainedRLHF QA feedback) on disk.

The other formats' parsers are tested through load_preferences in test_preferences.py, OpenAssistant trees in
test_trees.py.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest

from align.data import DataError, load_preferences, to_pairs
from align.data.preference_formats import finegrained_scores

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "finegrained_qa_11.json"


@pytest.mark.parametrize("labels,scores", [
    # Pairs (1,2) (1,3) (1,4) (2,3) (2,4) (3,4); 1 = first better, 2 = second better, 0 = tie; each answer
    # scores its wins plus half its ties.
    ([1, 1, 1, 1, 1, 1], [3.0, 2.0, 1.0, 0.0]),  # a total order, best first
    ([1, 1, 1, 0, 2, 2], [3.0, 0.5, 0.5, 2.0]),  # 1 beats all; 4 beats 2 and 3; 2 ties 3: one tie group
    ([1, 1, 2, 0, 2, 2], [2.0, 0.5, 0.5, 3.0]),  # fixture item 5: 4 > 1 > {2, 3}
    ([2, 2, 0, 0, 1, 1], [0.5, 2.5, 2.5, 0.5]),  # fixture item 9: two tie groups, {2, 3} > {1, 4}
    ([0, 1, 2, 1, 2, 2], [1.5, 1.5, 0.0, 3.0]),  # 1 ties 2 by label, 4 beats everything
    ([1, 2, 0, 1, 0, 0], [1.5, 1.5, 1.5, 1.5]),  # a cycle 1 > 2 > 3 > 1 with 4 tied to all: all tie
    ([0, 0, 0, 0, 0, 0], [1.5, 1.5, 1.5, 1.5]),  # fixture item 10: no preference at all
])
def test_scores_are_wins_plus_half_ties(labels, scores):
    assert finegrained_scores(labels) == scores


def test_fixture_rows_become_k4_lists_with_tie_groups():
    # The fixture is a pretty-printed JSON array, as the shared file: rows are 0-based items.
    err = _load_error(FIXTURE)
    assert (err.row, err.field, err.code) == (10, "preference", "all_tied")
    assert str(err).startswith(f"{FIXTURE}, item 10 (0-based), field 'preference': all 4 responses have the same score")
    examples, report = load_preferences(str(FIXTURE), on_bad_row="skip")
    assert report.format == "finegrained"  # detected from 'prediction 1' and 'preference'
    assert (report.rows_read, report.rows_kept, report.skipped) == (11, 10, Counter(all_tied=1))
    assert report.dropped_keys == {"passages", "gold", "feedback"}  # the prompt is the question alone
    first = examples[0]
    assert first.prompt == [{"role": "user", "content": "When does bloom by troye sivan come out?"}]
    assert first.origin == f"{FIXTURE}, item 0 (0-based)" and len(first.responses) == 4
    assert first.responses[0].startswith("Bloom is the second studio album by Australian singer")
    # Item 0's labels [0, 1, 2, 1, 0, 2]: 1 ties 2, beats 3, loses to 4; 2 beats 3, ties 4; 3 loses to 4.
    assert first.scores == [1.5, 2.0, 0.0, 2.5]
    tie_groups = [k for e in examples for k, n in Counter(e.scores).items() if n > 1]
    assert len(tie_groups) == 6  # items 5, 6, 7 (two tied), 8 (three tied) one each, item 9 two
    assert [len(set(e.scores)) for e in examples] == [4, 4, 4, 4, 4, 3, 3, 3, 2, 2]


def test_ties_never_become_pairs():
    examples, _ = load_preferences(str(FIXTURE), on_bad_row="skip")
    tied = examples[5]  # scores [2.0, 0.5, 0.5, 3.0]: predictions 2 and 3 tie
    pairs = to_pairs(tied, "all_pairs")
    assert len(pairs) == 5  # C(4, 2) = 6 pairs minus the tied one
    assert {(c, r) for c, r, _ in pairs}.isdisjoint({(tied.responses[1], tied.responses[2]),
                                                     (tied.responses[2], tied.responses[1])})
    two_groups = examples[9]  # [0.5, 2.5, 2.5, 0.5]: only the 4 pairs across the groups
    assert sorted(gap for _, _, gap in to_pairs(two_groups, "all_pairs")) == [2.0] * 4


ROW = {"question": "q?", "passages": [["Title", "text"]], "gold": "g", "prediction 1": "a", "prediction 2": "b",
       "prediction 3": "c", "prediction 4": "d", "preference": [1, 1, 1, 1, 1, 1]}


def _bad(**changes) -> dict:
    row = copy.deepcopy(ROW)
    for key, value in changes.items():
        if value is ...:
            del row[key.replace("_", " ")]
        else:
            row[key.replace("_", " ")] = value
    return row


def _load_error(path: Path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_preferences(str(path), **kwargs)
    return info.value


@pytest.mark.parametrize("row,field,code,message", [
    (_bad(prediction_3=...), "prediction 3", "missing_field", "missing field 'prediction 3'"),
    (_bad(prediction_2=" "), "prediction 2", "empty_response", "empty or whitespace"),
    (_bad(question=""), "question", "empty_question", "empty or whitespace"),
    (_bad(preference=[1, 1, 1, 1, 1]), "preference", "length_mismatch", "has 5 labels"),
    (_bad(preference="111111"), "preference", "wrong_type", "must be a list of 6 labels"),
    (_bad(preference=[1, 1, 3, 1, 1, 1]), "preference[2]", "bad_label", "label 3 is not one of 0 (tie)"),
    (_bad(preference=[1, "2", 1, 1, 1, 1]), "preference[1]", "wrong_type", "a label must be a whole number"),
    (_bad(prediction_4="a"), "prediction 4", "duplicate_responses", "same text as prediction 1"),
])
def test_bad_rows_name_the_item_and_field(tmp_path, row, field, code, message):
    path = tmp_path / "fg.json"
    path.write_text(json.dumps([ROW, row], indent=2))
    err = _load_error(path, format="finegrained")
    assert (err.source, err.row, err.field, err.code) == (str(path), 1, field, code)
    assert str(err).startswith(f"{path}, item 1 (0-based), field '{field}': ") and message in str(err), str(err)
    examples, report = load_preferences(str(path), on_bad_row="skip")
    assert len(examples) == 1 and report.skipped == Counter({code: 1})


def test_whole_number_float_labels_are_read(tmp_path):
    path = tmp_path / "fg.json"
    path.write_text(json.dumps([{**ROW, "preference": [2.0, 2, 2, 2, 2, 2]}]))
    (example,), _ = load_preferences(str(path))
    assert example.scores == [0.0, 1.0, 2.0, 3.0]
