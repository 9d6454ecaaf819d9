"""`stages/prefs.py`: ranked lists from SFT samples + perturbations, annotated with noise."""

import json

from align.data import load_preferences
from align.farm import gold_score


def test_prefs_cli_writes_ranked_lists_with_gold_and_noise_ceiling(tiny_prefs):
    stage = tiny_prefs["run_dir"] / "prefs"
    metrics = json.loads((stage / "metrics.json").read_text())
    # Every prompt becomes a list, unless the annotator tied it completely (dropped and counted).
    assert metrics["prefs/train/prompts"] + metrics["prefs/train/all_tied_dropped"] == 48
    assert metrics["prefs/validation/prompts"] + metrics["prefs/validation/all_tied_dropped"] == 16
    # 25% flips: agreement with gold is well below 1 but far above chance.
    assert 0.55 < metrics["prefs/train/noise_ceiling"] < 0.95
    rows = [json.loads(line) for line in (stage / "train.jsonl").read_text().splitlines()]
    for row in rows:
        assert 2 <= len(row["responses"]) <= 4
        assert len(set(row["responses"])) == len(row["responses"])  # no duplicate candidates
        assert row["gold"] == [gold_score(row["prompt"], r) for r in row["responses"]]
        assert set(s.split(":")[0] for s in row["sources"]) <= {"policy", "perturb"}
    assert any(s == "policy" for row in rows for s in row["sources"])
    # The reward model's loader reads the file as K-wise ranked lists.
    examples, report = load_preferences(str(stage / "train.jsonl"))
    assert report.format == "ranked" and len(examples) == metrics["prefs/train/prompts"]
