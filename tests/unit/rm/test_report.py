"""The report card's pair bookkeeping and the gate."""

import pytest

from align.rm.report import accuracy_interval, apply_gate, policy_mask, report_card

GATE = {"min_eval_accuracy": 0.6, "min_gold_accuracy": 0.85, "max_ece": 0.15, "max_abs_length_corr": 0.6}


def test_report_card_counts_pairs_and_accuracy(tmp_path):
    rewards = [[2.0, 1.0, 0.0], [0.0, 1.0]]
    labels = [[1.0, 1.0, 0.0], [1.0, 0.0]]  # pairs: (0>2), (1>2), (0>1 in prompt 2)
    gold = [[1.0, 0.5, 0.0], [0.2, 0.9]]  # gold pairs: 0>1, 0>2, 1>2, and 1>0 in prompt 2
    m = report_card(rewards, labels, [[3, 4, 5], [2, 2]], tmp_path, gold=gold,
                    policy_mask=[[True, False, False], [False, True]])
    assert m["eval/pairs"] == 3
    assert m["eval/accuracy"] == pytest.approx(2 / 3)  # (2>0), (1>0) right; (0 > 1) wrong
    assert m["gold/pairs"] == 4 and m["gold/accuracy"] == 1.0
    assert m["reward/mean"] == pytest.approx(1.5)  # policy responses only: 2.0 and 1.0
    assert (tmp_path / "rm_calibration.png").exists() and (tmp_path / "rm_reward_vs_gold.png").exists()


def test_gate_names_each_failed_check():
    good = {"eval/accuracy": 0.7, "gold/accuracy": 0.9, "eval/ece": 0.05, "eval/length_corr": -0.1}
    assert apply_gate(good, GATE) == {"gate/passed": True, "gate/failed": ""}
    bad = {"eval/accuracy": 0.5, "gold/accuracy": 0.8, "eval/ece": 0.3, "eval/length_corr": 0.9}
    out = apply_gate(bad, GATE)
    assert out["gate/passed"] is False
    for name in ("eval/accuracy", "gold/accuracy", "eval/ece", "eval/length_corr"):
        assert name in out["gate/failed"]
    no_gold = {"eval/accuracy": 0.7, "eval/ece": 0.05, "eval/length_corr": float("nan")}
    assert apply_gate(no_gold, GATE)["gate/passed"] is True


def test_report_card_without_a_folder_draws_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = report_card([[2.0, 1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0, 0.0], [1.0, 0.0]], [[3, 4, 5], [2, 2]], None,
                    gold=[[1.0, 0.5, 0.0], [0.2, 0.9]])
    assert m["eval/pairs"] == 3 and m["gold/pairs"] == 4 and list(tmp_path.iterdir()) == []


def test_accuracy_interval_counts_lists_and_reward_ties():
    rewards = [[2.0, 2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]
    labels = [[2.0, 1.0, 0.0], [1.0, 0.0], [1.0, 1.0]]  # list 3: the human tied both, so no pair
    # Pairs: list 1: (0>1) tie 1/2, (0>2) right, (1>2) right; list 2: (0>1) wrong. Accuracy 2.5 / 4.
    m = accuracy_interval(rewards, labels)
    assert report_card(rewards, labels, [[1, 2, 3], [1, 2], [1, 2]], None)["eval/accuracy"] == pytest.approx(2.5 / 4)
    assert m["eval/lists"] == 2 and m["eval/rm_tied_pairs"] == 1
    # Two lists: a resample is list 1 twice (2.5 / 3), list 2 twice (0 / 1), or one of each (2.5 / 4).
    assert m["eval/accuracy_ci_low"] == pytest.approx(0.0) and m["eval/accuracy_ci_high"] == pytest.approx(2.5 / 3)


def test_policy_mask_needs_sources_on_every_list():
    from align.data.preferences import RankedExample

    def ex(sources):
        return RankedExample([{"role": "user", "content": "q"}], ["a", "b"], [1.0, 0.0], "x", sources=sources)

    assert policy_mask([ex(["policy", "perturb:wrong"]), ex(["perturb:a", "policy"])]) == [[True, False], [False, True]]
    assert policy_mask([ex(["policy", "perturb:wrong"]), ex(None)]) is None
    assert policy_mask([ex(["perturb:a", "perturb:b"])]) is None
