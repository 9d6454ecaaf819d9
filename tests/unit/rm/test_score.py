"""`python -m align.rm.score`: a tiny reward model on pair and ranked files, from its command line.

The reward model is a one-layer Llama with a seeded random head: its scores mean nothing, but
they are fixed, so every figure the command prints can be checked against a hand computation
from the scores, worked out here with plain ``transformers``, one unpadded sequence at a time.
"""

import json
import re
import subprocess
import sys
from itertools import combinations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from align.models.tokenizer import train_tokenizer
from align.rm.folder import load_reward_model
from align.rm.score import main
from tests.conftest import REPO, stage_env

TIE_MAX_LENGTH = 12  # the two "...that is all there is to say." replies share their last 12 tokens
SAY = " the answer is {} and that is all there is to say about it."


def _sums(n):
    return [(3 + i % 17, 5 + (7 * i) % 23) for i in range(n)]


def _pair_rows(n=24):
    rows = []
    for a, b in _sums(n):
        right, wrong = f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {a + b + 1}."
        rows.append({"prompt": f"What is {a} plus {b}?", "chosen": right, "rejected": wrong} if a % 2 else
                    {"prompt": f"What is {a} plus {b}?", "chosen": wrong, "rejected": right})  # some RM errors either way
    return rows


def _ranked_rows(n=12):
    """K = 4 lists: two replies the human ties (not a pair), and two that differ only in their first
    word; the human's order varies from list to list, so the RM gets some lists more right than others."""
    orders = ([2.0, 2.0, 3.0, 1.0], [1.0, 1.0, 3.0, 2.0], [3.0, 3.0, 1.0, 2.0], [1.0, 1.0, 2.0, 3.0])
    rows = []
    for i, (a, b) in enumerate(_sums(n)):
        rows.append({"prompt": f"What is {a} plus {b}?",
                     "responses": [f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {a + b}. Thanks.",
                                   "Yes:" + SAY.format(a + b), "No:" + SAY.format(a + b)],
                     "scores": orders[i % len(orders)]})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``lm/``: a tiny causal LM; ``rm/``: a reward model from it (seeded random head), both with a tokenizer."""
    root = tmp_path_factory.mktemp("score")
    texts = [f"What is {a} plus {b}? {a} plus {b} is {a + b}. Thanks. Yes: No:" + SAY.format(a + b) for a, b in _sums(40)]
    tok = train_tokenizer(texts * 5, vocab_size=300)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, max_position_embeddings=96)
    LlamaForCausalLM(cfg).save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    torch.manual_seed(1)
    rm = load_reward_model(str(root / "lm"), tok.pad_token_id, "float32", new_head=True)
    with torch.no_grad():
        rm.score.weight.normal_(0, 1.0)  # scores spread well apart: no accidental near-ties
    rm.save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    data = root / "data"
    data.mkdir()
    ranked = _ranked_rows()
    return {"root": root, "lm": root / "lm", "rm": root / "rm",
            "pairs": _write(data / "pairs.jsonl", _pair_rows()),
            "ranked": _write(data / "ranked.jsonl", ranked),
            "ranked4": _write(data / "ranked4.jsonl", ranked * 4)}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "align.rm.score", *map(str, args)], cwd=REPO, env=stage_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory):
    """The command on the pair file, the ranked file (truncated to TIE_MAX_LENGTH) and that file four times over."""
    out = tmp_path_factory.mktemp("runs")
    results = {}
    for name, extra in (("pairs", []), ("ranked", ["--max-length", TIE_MAX_LENGTH]),
                        ("ranked4", ["--max-length", TIE_MAX_LENGTH])):
        proc = _cli("--model", folders["rm"], "--prefs", folders[name], "--out", out / f"{name}.json", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[name] = (proc.stdout, json.loads((out / f"{name}.json").read_text()))
    return results


def _scores(rm_dir, rows, max_length=None):
    """Each row's rewards, by hand: the chat template, left-truncated, one sequence at a time, no padding."""
    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    out = []
    for row in rows:
        replies = row["responses"] if "responses" in row else [row["chosen"], row["rejected"]]
        scores = []
        for reply in replies:
            ids = tok.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                           {"role": "assistant", "content": reply}], tokenize=True,
                                          return_dict=True)["input_ids"]  # fmt: skip
            ids = ids[-max_length:] if max_length else ids
            with torch.no_grad():
                scores.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
        out.append(scores)
    return out


def _hand_accuracy(rewards, labels, tie_credit=0.5):
    credit, pairs, ties = 0.0, 0, 0
    for rew, lab in zip(rewards, labels):
        for i, j in combinations(range(len(lab)), 2):
            if lab[i] == lab[j]:
                continue  # the human tied them: not a pair
            hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
            pairs += 1
            if rew[hi] == rew[lo]:
                ties += 1
                credit += tie_credit
            else:
                credit += rew[hi] > rew[lo]
    return credit / pairs, pairs, ties


def _printed(stdout):
    """The printed figures: {name: [numbers on its line]}."""
    figures = {}
    for line in stdout.splitlines():
        m = re.match(r"(\S+(?: \S+)?)\s{2,}(.*)", line)
        if m:
            figures[m.group(1)] = [float(x) for x in re.findall(r"-?\d+\.\d+|-?\d+", m.group(2).split("  (")[0])]
    return figures


def test_printed_figures_and_the_json_agree(runs):
    for name in ("pairs", "ranked"):
        stdout, r = runs[name]
        p = _printed(stdout)
        assert p["lists"] == [r["eval/lists"]] and p["pairs"] == [r["eval/pairs"]]
        acc, low, high = p["accuracy"][0], p["accuracy"][2], p["accuracy"][3]  # "0.xxxx 95% CI [low, high]"
        assert p["accuracy"][1] == 95
        assert (acc, low, high) == pytest.approx((r["eval/accuracy"], r["eval/accuracy_ci_low"],
                                                  r["eval/accuracy_ci_high"]), abs=5e-5)  # printed to 4 decimals
        assert p["ece"][0] == pytest.approx(r["eval/ece"], abs=5e-5)
        corr = r["eval/length_corr"]  # null when every response has the same length
        assert p["length corr"] == ([] if corr is None else [pytest.approx(corr, abs=5e-5)])
        assert p["rm ties"] == [r["eval/rm_tied_pairs"]]
        assert p["rows"] == [r["data/rows_read"], r["data/rows_kept"], r["data/rows_skipped"], r["data/rows_truncated"]]
        assert r["eval/accuracy_ci_method"] == "percentile bootstrap over lists, 2000 resamples, seed 0"
        assert "percentile bootstrap over lists, 2000 resamples, seed 0" in stdout


def test_pair_file_accuracy_is_the_hand_computed_share_of_pairs_ordered_right(runs, folders):
    _, r = runs["pairs"]
    rows = _pair_rows()
    rewards = _scores(folders["rm"], rows, max_length=96)
    acc, pairs, ties = _hand_accuracy(rewards, [[1.0, 0.0]] * len(rows))
    assert r["format"] == "pairwise" and r["max_length"] == 96  # the model's position limit by default
    assert r["eval/lists"] == r["eval/pairs"] == pairs == len(rows) == r["data/rows_read"] == r["data/rows_kept"]
    assert 0 < acc < 1 and ties == 0  # the RM gets some right and some wrong
    assert r["eval/accuracy"] == pytest.approx(acc, abs=1e-12)
    assert r["eval/accuracy_ci_low"] <= r["eval/accuracy"] <= r["eval/accuracy_ci_high"]


def test_ranked_file_skips_human_ties_and_gives_rm_ties_half_credit(runs, folders):
    _, r = runs["ranked"]
    rows = _ranked_rows()
    rewards = _scores(folders["rm"], rows, max_length=TIE_MAX_LENGTH)
    labels = [row["scores"] for row in rows]
    acc, pairs, ties = _hand_accuracy(rewards, labels)
    assert pairs == 5 * len(rows)  # C(4,2) = 6 pairs per list, less the one the human tied
    assert ties >= len(rows)  # "Yes: ..." and "No: ..." are the same last 12 tokens: one tie per list
    assert r["eval/pairs"] == pairs and r["eval/lists"] == len(rows) and r["eval/rm_tied_pairs"] == ties
    assert r["eval/accuracy"] == pytest.approx(acc, abs=1e-12)
    # The tie rule is what it says: counted as a loss or a win, the figure would differ.
    assert r["eval/accuracy"] != pytest.approx(_hand_accuracy(rewards, labels, tie_credit=0.0)[0], abs=1e-6)
    assert r["eval/accuracy"] != pytest.approx(_hand_accuracy(rewards, labels, tie_credit=1.0)[0], abs=1e-6)
    assert r["data/rows_truncated"] == len(rows) and r["max_length"] == TIE_MAX_LENGTH


def test_the_interval_holds_the_estimate_and_narrows_with_more_lists(runs):
    _, one = runs["ranked"]
    _, four = runs["ranked4"]
    assert four["eval/lists"] == 4 * one["eval/lists"]
    assert four["eval/accuracy"] == pytest.approx(one["eval/accuracy"], abs=1e-12)  # the same lists, four times
    for r in (one, four):
        assert 0 <= r["eval/accuracy_ci_low"] <= r["eval/accuracy"] <= r["eval/accuracy_ci_high"] <= 1
    width_one = one["eval/accuracy_ci_high"] - one["eval/accuracy_ci_low"]
    width_four = four["eval/accuracy_ci_high"] - four["eval/accuracy_ci_low"]
    assert 0 < width_four < 0.75 * width_one  # about half: the width goes as 1 / sqrt(lists)


def test_a_causal_lm_folder_is_refused_in_one_line(folders):
    proc = _cli("--model", folders["lm"], "--prefs", folders["pairs"])
    assert proc.returncode == 1 and "accuracy" not in proc.stdout  # no report (stdout may hold a W&B notice)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: score: ") and "is a causal LM" in lines[-1], proc.stderr
    assert not any("Traceback" in line for line in lines)


def _main(capsys, *args):
    rc = main([*map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()[-1] if err.strip() else ""


def test_missing_inputs_and_broken_folders_are_clear_one_line_errors(folders, tmp_path, capsys):
    rm, pairs = folders["rm"], folders["pairs"]
    rc, out, err = _main(capsys, "--model", tmp_path / "nowhere", "--prefs", pairs)
    assert rc == 1 and out == "" and re.match(r"error: score: .*--model '.*nowhere' does not exist", err), err
    rc, out, err = _main(capsys, "--model", rm, "--prefs", tmp_path / "missing.jsonl")
    assert rc == 1 and out == "" and re.match(r"error: score: .*not found: '.*missing.jsonl'", err), err
    stage = tmp_path / "stage"
    (stage / "final").mkdir(parents=True)
    (stage / "final" / "config.json").write_text((rm / "config.json").read_text())
    rc, _, err = _main(capsys, "--model", stage, "--prefs", pairs)  # the stage folder, not its final/
    assert rc == 1 and f"pass --model {stage / 'final'}" in err, err
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in rm.iterdir():
        broken.joinpath(f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a half-written checkpoint
    rc, out, err = _main(capsys, "--model", broken, "--prefs", pairs)
    assert rc == 1 and out == "" and err.startswith(f"error: score: {broken}: cannot load its reward model"), err
    rc, _, err = _main(capsys, "--model", rm, "--prefs", pairs, "--max-length", 500)
    assert rc == 1 and "--max-length 500 is above the max_position_embeddings" in err and "(96)" in err, err


def test_a_malformed_row_stops_with_its_line_or_is_skipped_and_counted(folders, tmp_path, capsys):
    rows = _pair_rows(6)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]) + '{"prompt": "Hi", "chosen": "Hello"}\n'
                   + "".join(json.dumps(r) + "\n" for r in rows[3:]))
    rc, out, err = _main(capsys, "--model", folders["rm"], "--prefs", bad)
    assert rc == 1 and out == ""
    assert re.match(r"error: score: .*bad.jsonl, line 4, field 'rejected': missing field", err), err
    assert "--on-bad-row skip" in err and "on_bad_row=skip" not in err  # the flag that works here
    result = tmp_path / "out" / "skip.json"
    rc, out, _ = _main(capsys, "--model", folders["rm"], "--prefs", bad, "--on-bad-row", "skip", "--out", result)
    r = json.loads(result.read_text())
    assert rc == 0 and r["data/rows_read"] == 7 and r["data/rows_kept"] == 6 and r["data/rows_skipped"] == 1
    assert r["data/skipped/missing_field"] == 1 and r["eval/pairs"] == 6
    assert "read 7, kept 6, skipped 1 (missing_field: 1)" in out
    assert [p.name for p in result.parent.iterdir()] == ["skip.json"]  # written by a rename: no temp file left
