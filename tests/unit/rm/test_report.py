"""The report card's pair bookkeeping and the gate."""

import pytest

from align.rm.report import apply_gate, report_card

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
