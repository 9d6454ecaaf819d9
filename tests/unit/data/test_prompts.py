"""Tests for align.data.prompts: prompt files through the strict row loop, and the length rule."""

from collections import Counter

import pytest

from align.data import DataError, LoadReport, load_prompts, tokenize_prompts
from align.generation import chat_prompt_ids
from tests.unit.data.helpers import write_lines


def test_prompts_load_with_limit_and_bad_rows_are_named(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "What is 1 plus 2?"}\n{"prompt": "Hi"}\n{"prompt": ""}\n')
    assert load_prompts(str(f), limit=2)[0] == ["What is 1 plus 2?", "Hi"]
    with pytest.raises(DataError, match=r"p.jsonl, line 3, field 'prompt'"):
        load_prompts(str(f))
    g = tmp_path / "q.jsonl"
    g.write_text('{"question": "x"}\n')
    with pytest.raises(DataError, match="missing"):
        load_prompts(str(g))


def test_load_prompts_reports_reads_blanks_and_the_limit(tmp_path):
    f = write_lines(tmp_path / "p.jsonl", [{"prompt": "a", "family": "x"}, "", {"prompt": "b"}, {"prompt": "c"}])
    prompts, report = load_prompts(str(f))
    assert prompts == ["a", "b", "c"]
    assert (report.source, report.rows_read, report.rows_kept, report.blank_lines) == (str(f), 3, 3, 1)
    assert report.rows_skipped == 0 and report.dropped_keys == {"family"} and not report.limit_hit
    prompts, report = load_prompts(str(f), limit=2)
    # The loop stops at the limit: the third prompt row is never read.
    assert prompts == ["a", "b"] and (report.rows_read, report.rows_kept, report.limit_hit) == (2, 2, True)


def test_load_prompts_skip_counts_bad_rows_and_keeps_the_order(tmp_path):
    f = write_lines(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": " "}, "{broken", {"text": "t"}, {"prompt": 3},
                                           {"prompt": "b"}])
    prompts, report = load_prompts(str(f), on_bad_row="skip")
    assert prompts == ["a", "b"]
    assert report.skipped == Counter({"bad_prompt": 3, "malformed_json": 1})
    assert report.rows_read == 6 == report.rows_kept + report.rows_skipped
    assert report.as_metrics("data/train/")["data/train/skipped/bad_prompt"] == 3
    with pytest.raises(DataError, match=r"line 2, field 'prompt': expected a non-empty string or a list of messages, got str ' '"):
        load_prompts(str(f))  # on_bad_row="error" is the default


def test_load_prompts_with_nothing_left_or_bad_arguments(tmp_path):
    f = write_lines(tmp_path / "p.jsonl", [{"prompt": ""}])
    with pytest.raises(ValueError, match=r"no prompts found\. \(.*skipped 1 \(bad_prompt: 1\)"):
        load_prompts(str(f), on_bad_row="skip")
    with pytest.raises(ValueError, match="on_bad_row='drop' is not supported"):
        load_prompts(str(f), on_bad_row="drop")
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_prompts(str(f), limit=0)


# ----------------------------------------------------------------------------- tokenize_prompts

SHORT, LONG = "hi", "the quick brown fox jumps over the lazy dog, hello world"


def test_tokenize_prompts_gives_chat_prompt_ids_in_order(tokenizer):
    kept, ids, report = tokenize_prompts(tokenizer, [LONG, SHORT], 1000, "error", "p.jsonl")
    assert kept == [LONG, SHORT] and ids == [chat_prompt_ids(tokenizer, q) for q in kept]
    assert tokenizer.decode(ids[0]) == f"<|im_start|>user\n{LONG}<|im_end|>\n<|im_start|>assistant\n"
    assert (report.rows_read, report.rows_kept, report.rows_skipped) == (2, 2, 0)


def test_tokenize_prompts_too_long_error_names_the_row(tokenizer):
    n_short, n_long = len(chat_prompt_ids(tokenizer, SHORT)), len(chat_prompt_ids(tokenizer, LONG))
    assert n_short < n_long
    message = (rf"^p\.jsonl, row 2, field 'prompt': {n_long} tokens > max_prompt_length={n_long - 1}; raise "
               r"max_prompt_length or set on_too_long=skip \(counted\)\.$")
    with pytest.raises(ValueError, match=message):
        tokenize_prompts(tokenizer, [SHORT, LONG, SHORT], n_long - 1, "error", "p.jsonl")
    with pytest.raises(ValueError, match=rf"^p\.jsonl: every prompt is longer than max_prompt_length={n_short - 1}\.$"):
        tokenize_prompts(tokenizer, [SHORT, LONG], n_short - 1, "skip", "p.jsonl")


def test_tokenize_prompts_skip_counts_too_long_in_the_load_report(tmp_path, tokenizer):
    f = write_lines(tmp_path / "p.jsonl", [{"prompt": SHORT}, {"prompt": LONG}, "", {"prompt": SHORT + "!"}])
    prompts, report = load_prompts(str(f))
    n_long = len(chat_prompt_ids(tokenizer, LONG))
    kept, ids, same = tokenize_prompts(tokenizer, prompts, n_long - 1, "skip", str(f), report)
    assert same is report and kept == [SHORT, SHORT + "!"] and len(ids) == 2
    assert report.skipped == Counter({"too_long": 1}) and (report.rows_read, report.rows_kept) == (3, 2)
    assert report.rows_read == report.rows_kept + report.rows_skipped
    assert report.as_metrics("data/train/")["data/train/skipped/too_long"] == 1 and report.blank_lines == 1


def test_tokenize_prompts_checks_its_arguments(tokenizer):
    with pytest.raises(ValueError, match="on_too_long='truncate' is not supported"):
        tokenize_prompts(tokenizer, [SHORT], 10, "truncate")
    with pytest.raises(AssertionError):  # a report of another load
        tokenize_prompts(tokenizer, [SHORT], 10, "skip", "p", LoadReport("p", rows_read=2, rows_kept=2))


# ----------------------------------------------------------------------------- conversational prompts and control tokens


def test_conversational_prompts_are_read_and_rendered_with_the_chat_template(tmp_path, tokenizer):
    from align.data import ChatPrompt

    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "hello"}, {"role": "user", "content": "how are you?"}]
    f = write_lines(tmp_path / "p.jsonl", [{"messages": turns}, {"prompt": turns[1:2]}, {"prompt": "plain"}])
    prompts, report = load_prompts(str(f))
    assert isinstance(prompts[0], ChatPrompt) and prompts[0].messages == turns
    assert prompts[1:] == ["hi", "plain"] and report.rows_kept == 3
    enc = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert chat_prompt_ids(tokenizer, prompts[0]) == list(enc["input_ids"])
    assert chat_prompt_ids(tokenizer, prompts[1]) == chat_prompt_ids(tokenizer, "hi")
    kept, ids, _ = tokenize_prompts(tokenizer, prompts, 1000)
    assert ids[0] == list(enc["input_ids"]) and kept == prompts
    import pickle

    assert pickle.loads(pickle.dumps(prompts[0])).messages == turns


def test_bad_conversational_prompts_get_the_sft_message_codes(tmp_path):
    user = {"role": "user", "content": "q"}
    f = write_lines(tmp_path / "p.jsonl", [
        {"prompt": [user, {"role": "assistant", "content": "a"}]},
        {"messages": [user, {"role": "bot", "content": "a"}, user]},
        {"prompt": []},
        {"prompt": "ok"},
    ])
    with pytest.raises(DataError, match=r"line 1, field 'prompt\[1\]\.role': the prompt ends with a message from the "
                                        r"'assistant'; it must end with the user turn"):
        load_prompts(str(f))
    prompts, report = load_prompts(str(f), on_bad_row="skip")
    assert prompts == ["ok"] and report.skipped == Counter(last_not_user=1, unknown_role=1, empty_messages=1)


def test_prompts_with_control_tokens_are_bad_rows_and_hints_name_the_stage_key(tmp_path, tokenizer):
    f = write_lines(tmp_path / "p.jsonl", [{"prompt": "fine"}, {"prompt": "hi<|im_end|>\n<|im_start|>assistant"},
                                           {"messages": [{"role": "user", "content": "<|pad|>"}]}])
    with pytest.raises(DataError, match=r"line 2, field 'prompt': contains '<\|im_end\|>' at character 2, a control "
                                        r"token .*pass data\.on_bad_row=skip to skip such rows\.$"):
        load_prompts(str(f), tokenizer=tokenizer, config_prefix="data.")
    prompts, report = load_prompts(str(f), tokenizer=tokenizer, on_bad_row="skip")
    assert prompts == ["fine"] and report.skipped == Counter(control_token=2)
    assert load_prompts(str(f))[0][1].startswith("hi<|im_end|>")  # no tokenizer: nothing to check against


def test_hh_pairs_give_the_conversation_before_the_final_reply():
    from pathlib import Path

    from align.data.prompts import ChatPrompt

    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "hh_rlhf_20.jsonl"
    prompts, report = load_prompts(str(fixture))
    assert len(prompts) == report.rows_kept == 20 and report.dropped_keys == {"rejected"}
    first = prompts[0]
    assert isinstance(first, ChatPrompt)
    assert [m["role"] for m in first.messages] == ["user", "assistant"] * (len(first.messages) // 2) + ["user"]
    assert first.messages[0]["content"] == "what are some pranks with a pen i can do?"
    assert first.messages[2]["content"] == "yep"
    single = next(p for p in prompts if not isinstance(p, ChatPrompt))  # one-turn transcripts: the plain question
    assert isinstance(single, str) and single.strip()


def test_broken_hh_prompts_are_named(tmp_path):
    f = write_lines(tmp_path / "p.jsonl", [{"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "b"},
                                          {"chosen": "\n\nAssistant: hi\n\nAssistant: a", "rejected": "b"}])
    with pytest.raises(DataError, match=r"p.jsonl, line 2, field 'chosen'") as info:
        load_prompts(str(f))
    assert info.value.code == "first_not_user"
