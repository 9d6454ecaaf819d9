"""The evaluation table (markdown for ``report.md``, rows for a W&B table) and ``report.md`` itself.

Input is the per-policy metrics of :mod:`align.eval.policy` (names relative to a policy); a column
appears when at least one policy has it, so a run without an oracle simply has no gold columns.
"""

from __future__ import annotations

import math
from pathlib import Path

from align.outputs import atomic_write_text

# (header, metric, its standard error or None, how it reads)
COLUMNS = [
    ("gold", "gold/score_mean", "gold/score_sem", "gold score of greedy responses (mean ± s.e.)"),
    ("gold win vs SFT", "gold/win_rate_vs_sft", None, "gold win rate against SFT's greedy responses, ties half"),
    ("gold (sampled)", "gold/sampled_score_mean", "gold/sampled_score_sem", "gold score of sampled responses"),
    ("RM", "rm/score_mean", "rm/score_sem", "normalized reward-model score of greedy responses"),
    ("RM (sampled)", "rm/sampled_score_mean", "rm/sampled_score_sem", "normalized reward-model score of sampled responses"),
    ("RM win vs SFT", "rm/win_rate_vs_sft", None, "reward-model win rate against SFT's greedy responses"),
    ("KL to SFT", "kl/sft_mean", "kl/sft_sem", "sequence KL(policy || SFT) in nats, from sampled responses (best-of-n: analytic)"),
    ("length", "gen/response_len", None, "mean greedy response length in tokens (EOS included)"),
    ("no EOS", "gen/no_eos_frac", None, "fraction of greedy responses that hit max_new_tokens without EOS"),
    ("ppl (text)", "forget/perplexity", None, "perplexity on held-out general text (forgetting.texts), no chat template"),
    ("ppl vs SFT", "forget/ppl_vs_sft", None, "that perplexity over SFT's: above 1, the policy forgot general language"),
]


def present_columns(results: dict[str, dict[str, float]]) -> list[tuple[str, str, str | None, str]]:
    """The :data:`COLUMNS` that at least one policy has."""
    return [c for c in COLUMNS if any(c[1] in m for m in results.values())]


def _fmt(value, sem=None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:.3f}"
    return f"{text} ± {sem:.3f}" if sem is not None else text


def markdown_table(results: dict[str, dict[str, float]], sources: dict[str, str]) -> str:
    """Every policy in one markdown table, in the order of ``results``."""
    cols = present_columns(results)
    lines = ["| policy | source | " + " | ".join(c[0] for c in cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for name, m in results.items():
        cells = [_fmt(m.get(key), m.get(sem) if sem else None) for _, key, sem, _ in cols]
        lines.append(f"| {name} | {sources.get(name, '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_rows(results: dict[str, dict[str, float]], sources: dict[str, str]) -> tuple[list[str], list[list]]:
    """Columns and rows for :meth:`align.tracking.Tracker.log_table` (numbers stay numbers)."""
    cols = present_columns(results)
    columns = ["policy", "source"] + [key for _, key, _, _ in cols]
    rows = [[name, sources.get(name, "")] + [m.get(key) for _, key, _, _ in cols] for name, m in results.items()]
    return columns, rows


def write_report(
    path: str | Path,
    *,
    title: str,
    setup: list[str],
    results: dict[str, dict[str, float]],
    sources: dict[str, str],
    plots: list[tuple[str, str]],
    samples: list[tuple[str, dict[str, str]]],
) -> Path:
    """Write ``report.md``: setup bullets, the table with a column legend, plots, a few samples.

    Args:
        setup: Markdown bullet texts (prompts, settings, what was found and what was not).
        plots: ``(caption, file name)``; images are linked relative to the report's folder.
        samples: ``(prompt, {policy: greedy response})`` for a handful of prompts.
    """
    parts = [f"# {title}", "", *(f"- {s}" for s in setup), "", "## Results", "",
             markdown_table(results, sources), ""]
    parts += [f"- **{header}**: {doc}" for header, _, _, doc in present_columns(results)]
    parts += ["", "## Plots", ""]
    for caption, name in plots:
        parts += [f"### {caption}", "", f"![{caption}]({name})", ""]
    if samples:
        parts += ["## Samples (greedy)", ""]
        for prompt, responses in samples:
            parts += [f"**{_cell(prompt)}**", "", "| policy | response |", "|---|---|"]
            parts += [f"| {name} | {_cell(text)} |" for name, text in responses.items()]
            parts.append("")
    atomic_write_text(path, "\n".join(parts) + "\n")
    return Path(path)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "*(empty)*"
