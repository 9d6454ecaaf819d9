"""The reward model's report card: accuracy, calibration, length bias, reward scale, and a gate.

Computed on held-out ranked lists from the rewards the trained model gives every response. Every
pair with a strict preference is used: annotator pairs for ``eval/*``, gold pairs for ``gold/*``
(when an oracle exists). The gate turns the card into a pass/fail that PPO checks before it
optimizes against the model (it optimizes whatever the model gets wrong, so measure first).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import torch

from align.rm.metrics import (
    expected_calibration_error,
    length_correlation,
    list_bootstrap_interval,
    mean_margin,
    pair_credit,
    pairwise_accuracy,
    reliability_diagram,
    reward_stats,
    symmetrize,
    top1_accuracy,
)

CALIBRATION_PNG = "rm_calibration.png"
GOLD_SCATTER_PNG = "rm_reward_vs_gold.png"


def _strict_pairs(rewards: list[list[float]], labels: list[list[float]]) -> tuple[list[float], list[float]]:
    """Rewards of (preferred, dispreferred) over every pair with a strict label preference."""
    better, worse = [], []
    for rew, lab in zip(rewards, labels, strict=True):
        for i, j in combinations(range(len(lab)), 2):
            if lab[i] == lab[j]:
                continue
            hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
            better.append(rew[hi])
            worse.append(rew[lo])
    return better, worse


def _grid(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    k = max(len(r) for r in rows)
    grid = torch.zeros(len(rows), k)
    mask = torch.zeros(len(rows), k, dtype=torch.bool)
    for b, r in enumerate(rows):
        grid[b, : len(r)] = torch.tensor(r, dtype=torch.float)
        mask[b, : len(r)] = True
    return grid, mask


def report_card(
    rewards: list[list[float]],
    labels: list[list[float]],
    lengths: list[list[int]],
    out_dir: Path | None,
    gold: list[list[float]] | None = None,
    policy_mask: list[list[bool]] | None = None,
) -> dict[str, float]:
    """Metrics (and plots in ``out_dir``) for one held-out set of ranked lists.

    Args:
        rewards: Reward-model scores, one list per prompt.
        labels: Annotator scores (higher is better), same shapes.
        lengths: Response lengths in tokens, same shapes.
        out_dir: Where the PNGs go; None draws none (``python -m align.rm.score`` without ``--out``).
        gold: Gold scores, same shapes, or None without an oracle.
        policy_mask: True where a response was sampled from the policy; ``reward/mean`` and
            ``reward/std`` are computed on those (what PPO will see), else on every response.

    Returns:
        ``eval/accuracy``, ``eval/margin_mean``, ``eval/ece``, ``eval/top1_accuracy``,
        ``eval/length_corr``, ``eval/pairs``, ``reward/mean``, ``reward/std`` and, with gold,
        ``gold/accuracy``, ``gold/top1_accuracy``, ``gold/pairs``, ``gold/label_agreement``.
    """
    better, worse = _strict_pairs(rewards, labels)
    if not better:
        raise ValueError("the held-out set has no pair with a strict preference; nothing to evaluate.")
    probs = torch.sigmoid(torch.tensor(better) - torch.tensor(worse))
    p_sym, y_sym = symmetrize(probs, torch.ones_like(probs))
    if out_dir is not None:
        reliability_diagram(p_sym, y_sym, out_dir / CALIBRATION_PNG, title="Reward model calibration (annotator labels)")
    reward_grid, mask = _grid(rewards)
    flat_rewards = [r for row in rewards for r in row]
    policy_rewards = []
    if policy_mask is not None:
        policy_rewards = [r for row, pm in zip(rewards, policy_mask) for r, m in zip(row, pm) if m]
    stats = reward_stats(policy_rewards or flat_rewards)
    metrics = {
        "eval/accuracy": pairwise_accuracy(better, worse),
        "eval/margin_mean": mean_margin(better, worse),
        "eval/ece": expected_calibration_error(p_sym, y_sym),
        "eval/top1_accuracy": top1_accuracy(reward_grid, _grid(labels)[0], mask),
        "eval/length_corr": length_correlation(flat_rewards, [n for row in lengths for n in row]),
        "eval/pairs": len(better),
        "reward/mean": stats["mean"],
        "reward/std": stats["std"],
    }
    if gold is not None:
        g_better, g_worse = _strict_pairs(rewards, gold)
        l_better, l_worse = _strict_pairs(labels, gold)
        metrics.update({
            "gold/accuracy": pairwise_accuracy(g_better, g_worse),
            "gold/top1_accuracy": top1_accuracy(reward_grid, _grid(gold)[0], mask),
            "gold/pairs": len(g_better),
            # The noise ceiling of these labels: how often the annotators agree with gold.
            "gold/label_agreement": pairwise_accuracy(l_better, l_worse),
        })
        if out_dir is not None:
            _gold_scatter(flat_rewards, [g for row in gold for g in row], out_dir / GOLD_SCATTER_PNG)
    return metrics


def accuracy_interval(rewards: list[list[float]], labels: list[list[float]], level: float = 0.95,
                      n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """A bootstrap interval over lists for :func:`report_card`'s ``eval/accuracy``, and the pair counts.

    The pairs are :func:`report_card`'s (every pair with a strict label preference, a reward tie
    counting 1/2); lists are resampled whole (:func:`align.rm.metrics.list_bootstrap_interval`).

    Returns:
        ``eval/accuracy_ci_low``, ``eval/accuracy_ci_high``, ``eval/lists`` (lists with a pair) and
        ``eval/rm_tied_pairs`` (pairs the reward model scores equal).
    """
    credit, pairs, tied = [], [], 0
    for rew, lab in zip(rewards, labels, strict=True):
        better, worse = _strict_pairs([rew], [lab])
        if better:
            c = pair_credit(better, worse)
            credit.append(c.sum().item())
            pairs.append(len(better))
            tied += int((c == 0.5).sum())
    if not pairs:
        raise ValueError("the held-out set has no pair with a strict preference; nothing to evaluate.")
    low, high = list_bootstrap_interval(credit, pairs, level, n_resamples, seed)
    return {"eval/accuracy_ci_low": low, "eval/accuracy_ci_high": high, "eval/lists": len(pairs),
            "eval/rm_tied_pairs": tied}


def policy_mask(examples) -> list[list[bool]] | None:
    """Which responses of these :class:`~align.data.preferences.RankedExample` lists were sampled
    from the policy (their ``sources``, the column ``make prefs`` writes), for :func:`report_card`'s
    ``reward/*``; ``None`` unless every list has sources and one is ``policy``."""
    if any(ex.sources is None for ex in examples):
        return None
    masks = [[s == "policy" for s in ex.sources] for ex in examples]
    return masks if any(any(m) for m in masks) else None


def apply_gate(metrics: dict[str, float], gate: dict[str, float]) -> dict[str, object]:
    """``gate/passed`` and ``gate/failed`` (a readable list of failed checks, '' when passed)."""
    failed = []
    if metrics["eval/accuracy"] < gate["min_eval_accuracy"]:
        failed.append(f"eval/accuracy {metrics['eval/accuracy']:.3f} < {gate['min_eval_accuracy']}")
    if "gold/accuracy" in metrics and metrics["gold/accuracy"] < gate["min_gold_accuracy"]:
        failed.append(f"gold/accuracy {metrics['gold/accuracy']:.3f} < {gate['min_gold_accuracy']}")
    if metrics["eval/ece"] > gate["max_ece"]:
        failed.append(f"eval/ece {metrics['eval/ece']:.3f} > {gate['max_ece']}")
    corr = metrics["eval/length_corr"]
    if corr == corr and abs(corr) > gate["max_abs_length_corr"]:  # NaN (no length variance) passes
        failed.append(f"|eval/length_corr| {abs(corr):.3f} > {gate['max_abs_length_corr']}")
    return {"gate/passed": not failed, "gate/failed": "; ".join(failed)}


def _gold_scatter(rewards: list[float], gold: list[float], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot()
    ax.scatter(gold, rewards, s=8, alpha=0.5)
    ax.set_xlabel("gold score")
    ax.set_ylabel("reward-model score")
    ax.set_title("Reward vs. gold on held-out responses")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
