"""The three evaluation plots (PNG, matplotlib's Agg canvas, no pyplot state).

* :func:`frontier_plot`: reward against KL to SFT, one point per policy and a line for best-of-n
  (Rafailov et al. 2023, DPO, Fig. 2: the reward/KL frontier).
* :func:`overoptimization_plot`: proxy (reward-model) and gold reward over PPO training against
  KL (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization", Fig. 1).
* :func:`win_rate_plot`: win rate against SFT, one bar per policy.

:func:`message_plot` draws a titled text panel, for a plot whose data does not exist (no PPO
history, no oracle and no reward model): the file is always there and says why it is empty.
"""

from __future__ import annotations

import math
from pathlib import Path

FRONTIER_PNG = "eval_frontier.png"
OVEROPT_PNG = "eval_overoptimization.png"
WIN_RATES_PNG = "eval_win_rates.png"


def _figure(size=(6, 4.5)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def message_plot(path: str | Path, title: str, message: str) -> Path:
    """A framed panel with ``title`` and ``message`` (a plot whose data is absent)."""
    fig = _figure((6, 3))
    ax = fig.add_subplot()
    ax.set(xticks=[], yticks=[], title=title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, wrap=True,
            bbox={"boxstyle": "round", "facecolor": "lightyellow", "edgecolor": "gray"})
    return _save(fig, path)


def frontier_plot(
    points: dict[str, tuple[float, float, float, float]],
    best_of_n: list[tuple[int, float, float, float]],
    path: str | Path,
    ylabel: str,
    title: str = "Reward vs. KL to SFT",
) -> Path:
    """Reward against KL to SFT.

    Args:
        points: policy name -> ``(kl, kl_sem, reward, reward_sem)``; drawn with error bars.
        best_of_n: ``(n, kl, reward, reward_sem)`` per n, drawn as one line, each point labelled.
        path: Where the PNG goes.
        ylabel: What the reward is (gold score of sampled responses, or reward-model score).
    """
    fig = _figure()
    ax = fig.add_subplot()
    colors = {"base": "tab:gray", "sft": "tab:blue", "ppo": "tab:red", "dpo": "tab:green"}
    for i, (name, (kl, kl_sem, y, y_sem)) in enumerate(points.items()):
        color = colors.get(name, f"C{(i + 4) % 10}")
        ax.errorbar([kl], [y], xerr=[kl_sem], yerr=[y_sem], fmt="o", ms=8, color=color, capsize=3, label=name)
        ax.annotate(name, (kl, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if best_of_n:
        ns, kls, ys, sems = zip(*best_of_n)
        ax.errorbar(kls, ys, yerr=sems, fmt="-s", color="tab:purple", capsize=3, label="best-of-n (SFT + RM)")
        for n, kl, y in zip(ns, kls, ys):
            ax.annotate(f"n={n}", (kl, y), textcoords="offset points", xytext=(6, -12), fontsize=8, color="tab:purple")
    kls = [p[0] for p in points.values()] + [b[1] for b in best_of_n]
    xlabel = "KL to SFT (nats per response)"
    if kls and max(kls) > 10:  # a far policy (often base) would squeeze the rest into one pixel
        ax.set_xscale("symlog", linthresh=1.0)
        xlabel += ", symlog: linear below 1"
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def overoptimization_plot(
    history: list[dict], path: str | Path, final: tuple[float, float | None, float | None] | None = None
) -> Path:
    """Proxy and gold reward over PPO training (Gao et al. 2022).

    x is ``ppo/kl_ref`` when every row has it, else ``samples``, else ``iteration``. Gold (left
    axis) and proxy (right axis: normalized reward-model score) are on their own scales; solid lines
    are greedy responses, dashed lines sampled ones. Keys a row lacks are skipped.

    Args:
        history: Rows of ``ppo/history.jsonl`` (:func:`align.eval.metrics.read_history`).
        final: ``(kl/sft_mean, gold, rm)`` of ``ppo/final`` measured by eval; marked with stars
            when x is KL (the history's KL is to PPO's reference, which is SFT by default).
    """
    xkey = next((k for k in ("ppo/kl_ref", "samples", "iteration") if all(_finite(r.get(k)) for r in history)), None)
    xs = [r[xkey] for r in history] if xkey else list(range(len(history)))
    xlabel = {"ppo/kl_ref": "KL to reference (nats per response)", "samples": "rollouts", "iteration": "iteration"}.get(xkey, "evaluation step")
    fig = _figure((7, 4.5))
    ax_gold = fig.add_subplot()
    ax_proxy = ax_gold.twinx()
    handles = []
    for ax, key, color, label in ((ax_gold, "gold/score_mean", "tab:orange", "gold"),
                                  (ax_gold, "gold/sampled_score_mean", "tab:orange", "gold (sampled)"),
                                  (ax_proxy, "rm/score_mean", "tab:blue", "proxy (RM)"),
                                  (ax_proxy, "rm/sampled_score_mean", "tab:blue", "proxy (RM, sampled)")):
        pts = [(x, r[key]) for x, r in zip(xs, history) if _finite(r.get(key))]
        if pts:
            style = "--" if "sampled" in key else "-"
            handles += ax.plot(*zip(*pts), style, marker="o", ms=3, color=color, label=label)
    if final is not None and xkey == "ppo/kl_ref":
        kl, g, p = final
        if _finite(g):
            handles += ax_gold.plot([kl], [g], "*", ms=14, color="tab:orange", markeredgecolor="black", label="ppo/final gold (eval)")
        if _finite(p):
            handles += ax_proxy.plot([kl], [p], "*", ms=14, color="tab:blue", markeredgecolor="black", label="ppo/final proxy (eval)")
    ax_gold.set(xlabel=xlabel, ylabel="gold score", title="Over-optimization: proxy vs. gold reward during PPO")
    ax_proxy.set_ylabel("proxy reward (normalized RM score)")
    ax_gold.grid(alpha=0.3)
    if handles:
        ax_gold.legend(handles=handles, fontsize=8, loc="best")
    return _save(fig, path)


def win_rate_plot(names: list[str], rates: list[float], path: str | Path, ylabel: str, num_prompts: int) -> Path:
    """One bar per policy at its win rate against SFT, the 0.5 line of a tie, values on the bars."""
    fig = _figure((max(5.0, 0.9 * len(names) + 2), 4))
    ax = fig.add_subplot()
    bars = ax.bar(names, rates, color=["tab:blue" if n == "sft" else "tab:purple" if n.startswith("bon_") else "tab:green" for n in names],
                  edgecolor="black")
    for b, r in zip(bars, rates):
        ax.annotate(f"{r:.2f}", (b.get_x() + b.get_width() / 2, r), ha="center", va="bottom", fontsize=9)
    ax.axhline(0.5, ls="--", color="gray", label="tie with SFT")
    ax.set(ylim=(0, 1.05), ylabel=ylabel, title=f"Win rate vs. SFT greedy ({num_prompts} prompts, ties half)")
    ax.legend(fontsize=8, loc="upper left")
    ax.tick_params(axis="x", labelrotation=30)
    return _save(fig, path)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
