import pytest

from align.data import DataError, load_prompts


def test_prompts_load_with_limit_and_bad_rows_are_named(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "What is 1 plus 2?"}\n{"prompt": "Hi"}\n{"prompt": ""}\n')
    assert load_prompts(str(f), limit=2) == ["What is 1 plus 2?", "Hi"]
    with pytest.raises(DataError, match=r"p.jsonl, line 3, field 'prompt'"):
        load_prompts(str(f))
    g = tmp_path / "q.jsonl"
    g.write_text('{"question": "x"}\n')
    with pytest.raises(DataError, match="missing"):
        load_prompts(str(g))
