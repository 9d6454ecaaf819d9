"""The eval table, report.md and the plots, from hand-made results (no models)."""

import pytest

from align.eval.plots import frontier_plot, message_plot, overoptimization_plot, win_rate_plot
from align.eval.policy import find_policies
from align.eval.report import markdown_table, table_rows, write_report

RESULTS = {
    "sft": {"gold/score_mean": 0.5, "gold/score_sem": 0.01, "kl/sft_mean": 0.0, "kl/sft_sem": 0.0, "gen/response_len": 10.0},
    "dpo": {"gold/score_mean": 0.6, "gold/score_sem": 0.02, "kl/sft_mean": 3.25, "kl/sft_sem": 0.5, "gen/response_len": 8.0},
}


def _png_ok(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert mpimg.imread(path).std() > 0.01


def test_table_has_only_present_columns_and_every_policy():
    md = markdown_table(RESULTS, {"sft": "sft/final", "dpo": "dpo/final"})
    lines = md.splitlines()
    assert lines[0] == "| policy | source | gold | KL to SFT | length |"
    assert lines[3] == "| dpo | dpo/final | 0.600 ± 0.020 | 3.250 ± 0.500 | 8.000 |"
    assert "RM" not in md  # no reward model: no RM columns
    cols, rows = table_rows(RESULTS, {})
    assert cols == ["policy", "source", "gold/score_mean", "kl/sft_mean", "gen/response_len"]
    assert rows[1] == ["dpo", "", 0.6, 3.25, 8.0]


def test_report_links_plots_relatively(tmp_path):
    path = write_report(tmp_path / "report.md", title="t", setup=["a"], results=RESULTS, sources={},
                        plots=[("F", "eval_frontier.png")], samples=[("p|q", {"sft": "x", "dpo": ""})])
    text = path.read_text()
    assert "![F](eval_frontier.png)" in text and "p\\|q" in text and "*(empty)*" in text


def test_plots_show_data(tmp_path):
    frontier_plot({"sft": (0.0, 0.0, 0.5, 0.01), "base": (40.0, 2.0, 0.2, 0.02)}, [(1, 0.0, 0.5, 0.01), (4, 0.64, 0.6, 0.01)],
                  tmp_path / "f.png", "gold")
    history = [{"iteration": i, "ppo/kl_ref": i * 0.5, "gold/score_mean": 0.5 + 0.02 * i - 0.004 * i * i,
                "rm/score_mean": 0.1 * i} for i in range(6)]
    overoptimization_plot(history, tmp_path / "o.png", final=(2.5, 0.55, 0.5))
    overoptimization_plot([{"iteration": 1, "gold/score_mean": 0.3}], tmp_path / "o1.png")  # no KL: x = iteration
    win_rate_plot(["sft", "dpo", "bon_4"], [0.5, 0.7, 0.6], tmp_path / "w.png", "gold win rate", 16)
    message_plot(tmp_path / "m.png", "Over-optimization", "no PPO history")
    for name in ("f", "o", "o1", "w", "m"):
        _png_ok(tmp_path / f"{name}.png")


def test_find_policies_skips_missing_folders_and_requires_sft(tmp_path):
    (tmp_path / "sft").mkdir()
    found, missing = find_policies({"base": str(tmp_path / "pretrain"), "sft": str(tmp_path / "sft"), "ppo": None},
                                   {"hub": "Org/model"})
    assert found == {"sft": str(tmp_path / "sft"), "hub": "Org/model"} and missing == ["base", "ppo"]
    with pytest.raises(ValueError, match="make sft"):
        find_policies({"sft": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="repeats"):
        find_policies({"sft": str(tmp_path / "sft")}, {"sft": "x"})
