"""Tests for align.data.trees and the oasst_tree preference format: OpenAssistant trees on disk."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest

from align.data import DataError, load_preferences
from tests.unit.data.helpers import write_lines

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TREES = FIXTURES / "oasst_trees_6.jsonl"


def prompter(text: str, *replies: dict, **extra) -> dict:
    return {"role": "prompter", "text": text, "replies": list(replies), **extra}


def assistant(text: str, *replies: dict, rank: int | None = None, **extra) -> dict:
    return {"role": "assistant", "text": text, "replies": list(replies), **({"rank": rank} if rank is not None else {}),
            **extra}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


# Two groups: the root's replies a0 (rank 0) and a1 (rank 1); under a0, the follow-up "more?" with x (rank 1),
# y (rank 0) and z (no rank: left out). "thanks" under a1 has one reply: no group.
TREE = {"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": prompter(
    "hi",
    assistant("a0", prompter("more?", assistant("x", rank=1), assistant("y", rank=0, synthetic=True),
                             assistant("z")), rank=0, lang="en"),
    assistant("a1", prompter("thanks", assistant("welcome")), rank=1),
)}


def load_error(path: Path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_preferences(str(path), **kwargs)
    return info.value


def test_a_tree_gives_one_ranked_list_per_sibling_group(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [TREE])
    examples, report = load_preferences(str(path))
    assert report.format == "oasst_tree"  # detected: prompt is a message object
    root, follow_up = examples
    assert root.prompt == [user("hi")]
    assert (root.responses, root.scores) == (["a0", "a1"], [1.0, 0.0])  # rank r -> max(ranks) - r
    # The prompt is the path from the root to the parent, prompter -> user; z (unranked) is left out.
    assert follow_up.prompt == [user("hi"), bot("a0"), user("more?")]
    assert (follow_up.responses, follow_up.scores) == (["x", "y"], [0.0, 1.0])
    assert root.origin == f"{path}, line 1, prompt.replies"
    assert follow_up.origin == f"{path}, line 1, prompt.replies[0].replies[0].replies"
    # One tree read and kept; inside it two groups, one unranked reply left out, one synthetic reply kept.
    assert (report.rows_read, report.rows_kept, report.rows_skipped) == (1, 1, 0)
    assert report.inner == Counter(groups=2, replies_unranked=1, replies_synthetic=1)
    assert report.as_metrics("data/t/")["data/t/groups"] == 2
    assert {"message_tree_id", "tree_state", "prompt.**.lang"} <= report.dropped_keys


def test_groups_with_fewer_than_two_ranked_replies_are_counted_not_kept(tmp_path):
    tree = {"prompt": prompter("q", assistant("only ranked", rank=0), assistant("unranked"),
                               assistant("b", prompter("again", assistant("c", rank=0), assistant("d", rank=1))))}
    no_group = {"prompt": prompter("q2", assistant("r1"), assistant("r2"))}  # two replies, none ranked
    path = write_lines(tmp_path / "t.jsonl", [tree, no_group, TREE])
    examples, report = load_preferences(str(path))  # a tree without a group is skipped even with on_bad_row=error
    assert [e.responses for e in examples] == [["c", "d"], ["a0", "a1"], ["x", "y"]]
    assert examples[0].prompt == [user("q"), bot("b"), user("again")]
    assert (report.rows_read, report.rows_kept, report.skipped) == (3, 2, Counter(no_ranked_group=1))
    # The kept trees' counts only: the root of line 1 is a skipped group; its two unranked replies are not
    # counted as left out of a kept group.
    assert report.inner == Counter(groups=3, **{"groups_skipped/too_few_ranked": 1}, replies_unranked=1,
                                   replies_synthetic=1)
    assert report.rows_read == report.rows_kept + report.rows_skipped


def with_(tree: dict, path: str, key: str, value) -> dict:
    """A copy of ``tree`` with ``key`` of the message at ``path`` (reply indices split by '/') set; a value
    of ``...`` deletes it."""
    tree = copy.deepcopy(tree)
    message = tree["prompt"]
    for i in filter(None, path.split("/")):
        message = message["replies"][int(i)]
    if value is ...:
        del message[key]
    else:
        message[key] = value
    return tree


@pytest.mark.parametrize("path,key,value,field,code,message", [
    ("0/0/1", "text", ..., "prompt.replies[0].replies[0].replies[1].text", "missing_field", "missing field 'text'"),
    ("0/0", "text", 3, "prompt.replies[0].replies[0].text", "wrong_type", "text must be a string"),
    ("1/0/0", "text", "  ", "prompt.replies[1].replies[0].replies[0].text", "empty_content", "empty or whitespace"),
    ("", "role", "assistant", "prompt.role", "wrong_role", "the root message must be the prompter's"),
    ("0", "role", "prompter", "prompt.replies[0].role", "wrong_role", "a reply to a prompter message"),
    ("0", "role", "bot", "prompt.replies[0].role", "unknown_role", "unknown role 'bot'"),
    ("0/0/1", "rank", 2, "prompt.replies[0].replies[0].replies[1].rank", "bad_rank", "rank 2 is above 1"),
    ("0/0/1", "rank", -1, "prompt.replies[0].replies[0].replies[1].rank", "bad_rank", "below 0"),
    ("1", "rank", "first", "prompt.replies[1].rank", "wrong_type", "a rank must be a whole number"),
    ("1", "rank", 0, "prompt.replies", "all_tied", "all 2 responses have the same score"),
    ("1", "text", "a0", "prompt.replies[1].text", "duplicate_responses", "same text as prompt.replies[0].text"),
    ("0/0", "replies", "none", "prompt.replies[0].replies[0].replies", "wrong_type", "must be a list of messages"),
])
def test_bad_messages_name_the_file_row_and_field(tmp_path, path, key, value, field, code, message):
    bad_tree = with_(TREE, path, key, value)
    file = write_lines(tmp_path / "t.jsonl", [TREE, TREE, bad_tree])
    err = load_error(file, format="oasst_tree")
    assert (err.source, err.row, err.field, err.code) == (str(file), 3, field, code)
    assert str(err).startswith(f"{file}, line 3, field '{field}': ") and message in str(err), str(err)
    # Skipped, the whole tree is one bad row; the good trees' counts are untouched by it.
    examples, report = load_preferences(str(file), on_bad_row="skip")
    assert len(examples) == 4 and report.skipped == Counter({code: 1}) and report.inner["groups"] == 4
    assert report.inner["replies_unranked"] == 2


def test_more_than_max_responses_siblings_are_refused(tmp_path):
    tree = {"prompt": prompter("q", *(assistant(f"r{i}", rank=i) for i in range(10)))}
    err = load_error(write_lines(tmp_path / "t.jsonl", [tree]))
    assert (err.field, err.code) == ("prompt.replies", "too_many_responses") and "at most 9" in str(err)


def test_limit_and_length_apply_to_each_group(tmp_path, tokenizer):
    # With the test tokenizer, TREE's groups are 24 and 49 tokens long (prompt + reply); this text makes 158.
    long = "the quick brown fox jumps over the lazy dog " * 8
    long_follow_up = with_(TREE, "0/0", "text", long)  # only the follow-up group's prompt is long
    long_root = with_(TREE, "", "text", long)  # both groups' prompts are
    path = write_lines(tmp_path / "t.jsonl", [long_follow_up, TREE, long_root])
    examples, report = load_preferences(str(path), limit=3)
    assert len(examples) == 3 and report.limit_hit and report.rows_kept == 2 and report.inner["groups"] == 3
    examples, report = load_preferences(str(path), tokenizer=tokenizer, max_length=100, on_too_long="skip")
    assert [e.responses for e in examples] == [["a0", "a1"], ["a0", "a1"], ["x", "y"]]
    # Line 1 is kept without its follow-up group; line 3, every group too long, is a skipped row.
    assert (report.rows_kept, report.skipped) == (2, Counter(too_long=1))
    assert report.inner == Counter(groups=3, replies_unranked=2, replies_synthetic=2, **{"groups_skipped/too_long": 3})
    assert report.rows_read == report.rows_kept + report.rows_skipped
    examples, report = load_preferences(str(path), tokenizer=tokenizer, max_length=100, on_too_long="truncate")
    assert len(examples) == 6 and report.truncated == 3  # truncated counts groups
    err = load_error(path, tokenizer=tokenizer, max_length=100)
    assert (err.row, err.code, err.field) == (1, "too_long", "prompt.replies[0].replies[0].replies[0].text")


def test_fixture_trees_groups_paths_and_counts():
    examples, report = load_preferences(str(TREES))
    # Lines 1..6 hold 1, 3, 1, 1, 5, 1 groups (K = 3, 2 2 2, 9, 2, 2 2 2 2 3, 2).
    assert [len(e.responses) for e in examples] == [3, 2, 2, 2, 9, 2, 2, 2, 2, 2, 3, 2]
    assert (report.rows_read, report.rows_kept) == (6, 6)
    # Line 6's root has 3 unranked replies and a deeper prompter 2: two groups with no ranks. Line 5's last group
    # has a 4th, unranked, reply. Lines 1 and 4 are synthetic trees (3 + 2 replies).
    assert report.inner == Counter(groups=12, replies_unranked=1, replies_synthetic=5,
                                   **{"groups_skipped/too_few_ranked": 2})
    deep = examples[3]  # line 2: root group, the first answer's follow-up, then the second answer's
    assert deep.origin == f"{TREES}, line 2, prompt.replies[1].replies[0].replies"
    assert [m["role"] for m in deep.prompt] == ["user", "assistant", "user"]
    assert deep.prompt[0]["content"].startswith("How to protect my eyes when I have to stare at my ")
    assert deep.prompt[1]["content"].startswith("You should rest your eyes by either closing it or ")
    assert deep.prompt[2]["content"].startswith("Thanks! It was really helpful. Are there more ways")
    assert deep.responses[0].startswith("Yes, there are several ways to protect your eyes") and deep.scores == [1.0, 0.0]
    thanks = examples[10]  # line 5, prompt.replies[1].replies[4]: ranks 0, 1, 2 and one unranked reply
    assert thanks.prompt[-1] == user("thank youuu!!!") and len(thanks.prompt) == 3 and thanks.scores == [2.0, 1.0, 0.0]
    assert not any(r.startswith("No problem! If you have anything") for r in thanks.responses)
    nine = examples[4]  # line 3: nine replies ranked 0..8 in list order
    assert nine.prompt == [user("There is a weird smell in my apartment, should I be concerned? what is the best "
                                "course of action here?")]
    assert nine.scores == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
