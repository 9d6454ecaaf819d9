"""The reward model's report card: accuracy, margin, calibration, length bias, best-of-K choice.

Pure functions on tensors or plain sequences, no model code: the ``rm`` and ``eval`` stages score
their data, then call these. Inputs are detached and computed in float64; results are Python
floats ready for a logger (the caller adds the ``eval/`` style prefix).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

ArrayLike = Tensor | Sequence[float]


def pairwise_accuracy(chosen: ArrayLike, rejected: ArrayLike) -> float:
    """Fraction of pairs with ``chosen > rejected``; a tie counts 1/2 (a coin flip, not a win).

    Args:
        chosen: ``[N]`` rewards of the preferred responses.
        rejected: ``[N]`` rewards of the dispreferred responses.
    """
    c, r = _pair("pairwise_accuracy", chosen, rejected)
    return _credit(c, r).mean().item()


def pair_credit(chosen: ArrayLike, rejected: ArrayLike) -> Tensor:
    """``[N]`` float64 credit of each pair: 1 if ``chosen > rejected``, 1/2 for a tie, else 0.

    :func:`pairwise_accuracy` is its mean; per-list sums feed :func:`list_bootstrap_interval`.
    """
    c, r = _pair("pair_credit", chosen, rejected)
    return _credit(c, r)


def list_bootstrap_interval(credit: ArrayLike, pairs: ArrayLike, level: float = 0.95, n_resamples: int = 2000,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a pooled pairwise accuracy, resampling whole ranked lists.

    The pairs of one list share a prompt and responses, so they are not independent: an interval
    over pairs (Wilson, or a bootstrap of pairs) is too narrow for K > 2. This resamples the ``L``
    lists with replacement (the cluster bootstrap, Field & Welsh 2007) and takes the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of ``sum(credit) / sum(pairs)`` over the
    resamples (the percentile interval, Efron & Tibshirani 1993, ch. 13). Seeded: the same data
    give the same interval.

    Args:
        credit: ``[L]`` each list's summed pair credit (:func:`pair_credit` summed over its pairs).
        pairs: ``[L]`` each list's number of pairs, all > 0.
        level: Coverage, in (0, 1).
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling generator.

    Returns:
        ``(low, high)``.
    """
    c, n = _pair("list_bootstrap_interval", credit, pairs)
    if (n <= 0).any() or (c < 0).any() or (c > n).any():
        raise ValueError("list_bootstrap_interval: every list needs pairs > 0 and 0 <= credit <= pairs.")
    if not 0 < level < 1 or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"list_bootstrap_interval: level must be in (0, 1) and n_resamples >= 1, got {level}, "
                         f"{n_resamples}.")
    g = torch.Generator().manual_seed(seed)
    chunk = max(1, 2**22 // c.numel())  # resamples per draw: about 4M indices in memory at a time
    stats = []
    for start in range(0, n_resamples, chunk):
        idx = torch.randint(c.numel(), (min(chunk, n_resamples - start), c.numel()), generator=g)  # [b, L]
        stats.append(c[idx].sum(-1) / n[idx].sum(-1))
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(torch.cat(stats), q).tolist()
    return low, high


def mean_margin(chosen: ArrayLike, rejected: ArrayLike) -> float:
    """Mean of ``chosen - rejected`` over the ``[N]`` pairs (in reward units)."""
    c, r = _pair("mean_margin", chosen, rejected)
    return (c - r).mean().item()


def symmetrize(probs: ArrayLike, labels: ArrayLike) -> tuple[Tensor, Tensor]:
    """Append every pair in the other order: ``(1 - p, 1 - y)`` after the ``(p, y)``.

    Preference data lists the chosen response first, so ``p = sigmoid(r_c - r_r)`` is mostly above
    1/2 and every label is 1; the ECE of that is only "how often is the RM right when confident" and
    the lower bins stay empty. Listing each pair both ways makes the task symmetric, so that a model
    is calibrated only if ``P(first preferred) = p`` holds across the whole range.

    Returns:
        ``(probs, labels)``, each ``[2N]`` float64.
    """
    p, y = _probs_labels("symmetrize", probs, labels)
    return torch.cat([p, 1 - p]), torch.cat([y, 1 - y])


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error of predicted preference probabilities, equal-width bins.

    ``ECE = sum_m (|B_m| / N) * |mean(labels in B_m) - mean(probs in B_m)|`` (Naeini et al. 2015;
    Guo et al. 2017, eq. 3), with bin ``m`` holding ``p`` in ``[m/n_bins, (m+1)/n_bins)`` and the last
    bin closed at 1. ``probs`` is the predicted probability that the first response is preferred
    (``sigmoid(r_first - r_second)``), not the top-label confidence of Guo et al.; for chosen-first
    data pass the pairs through :func:`symmetrize` first.

    Args:
        probs: ``[N]`` predicted ``P(first preferred)`` in ``[0, 1]``.
        labels: ``[N]`` 1 if the first response was preferred (by the annotator or gold), else 0.
        n_bins: number of equal-width bins.

    Returns:
        ECE in ``[0, 1]``; 0 is perfectly calibrated.
    """
    p, y = _probs_labels("expected_calibration_error", probs, labels)
    count, conf, freq = _bins(p, y, n_bins)
    filled = count > 0
    return ((count[filled] / p.numel()) * (freq[filled] - conf[filled]).abs()).sum().item()


def reliability_diagram(
    probs: ArrayLike, labels: ArrayLike, path: str | Path, n_bins: int = 10, title: str = "Reward model calibration"
) -> Path:
    """Save a reliability diagram (PNG): observed frequency per bin against the diagonal.

    Top panel: a bar per bin at the observed frequency of ``label = 1``, a dot at the bin's mean
    predicted probability, and the diagonal of perfect calibration. Bottom panel: the number of
    pairs per bin. The ECE is in the title. Drawn with the Agg canvas (no display, no pyplot state).

    Args:
        probs: ``[N]`` predicted ``P(first preferred)``; see :func:`expected_calibration_error`.
        labels: ``[N]`` in ``{0, 1}``.
        path: where to write the PNG; parent folders are created.
        n_bins: number of equal-width bins.
        title: the figure title; a second line ``ECE = ...`` is added.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p, y = _probs_labels("reliability_diagram", probs, labels)
    count, conf, freq = _bins(p, y, n_bins)
    ece = expected_calibration_error(p, y, n_bins)
    width = 1.0 / n_bins
    centers = [(m + 0.5) * width for m in range(n_bins)]
    filled = [m for m in range(n_bins) if count[m] > 0]

    fig = Figure(figsize=(5, 6), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.bar([centers[m] for m in filled], [freq[m].item() for m in filled], width=width * 0.9,
            color="tab:blue", edgecolor="black", alpha=0.8, label="observed frequency")
    top.plot([conf[m].item() for m in filled], [freq[m].item() for m in filled], "o", color="tab:red",
             label="observed at mean predicted p")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="fraction first preferred", title=f"{title}\nECE = {ece:.3f}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, count.tolist(), width=width * 0.9, color="tab:gray", edgecolor="black")
    for m in filled:
        bottom.annotate(str(int(count[m])), (centers[m], count[m].item()), ha="center", va="bottom", fontsize=7)
    bottom.set(xlabel="predicted P(first preferred)", ylabel="pairs", ylim=(0, count.max().item() * 1.25))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def length_correlation(rewards: ArrayLike, lengths: Sequence[int] | Tensor, method: str = "pearson") -> float:
    """Correlation between rewards and response lengths: the RM's length bias.

    Args:
        rewards: ``[N]`` rewards.
        lengths: ``[N]`` response lengths (tokens or characters).
        method: ``"pearson"`` (linear) or ``"spearman"`` (Pearson of the ranks, ties given their
            average rank; any monotone relation scores 1).

    Returns:
        The correlation in ``[-1, 1]``, or ``nan`` when either input is constant (or ``N = 1``):
        a correlation is undefined there, and a 0 would read as "no length bias" when it was never
        measured.
    """
    x, n = _pair("length_correlation", rewards, lengths)
    if method == "spearman":
        x, n = _average_ranks(x), _average_ranks(n)
    elif method != "pearson":
        raise ValueError(f"length_correlation: method={method!r}; use 'pearson' or 'spearman'.")
    dx, dn = x - x.mean(), n - n.mean()
    denom = math.sqrt((dx * dx).sum().item() * (dn * dn).sum().item())
    if denom == 0.0:
        return float("nan")
    return max(-1.0, min(1.0, (dx * dn).sum().item() / denom))


def top1_accuracy(rewards: Tensor, gold: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of prompts whose highest-reward response is one of the gold-best responses.

    Best-of-K selection quality. A gold tie for best: any of the tied responses counts. A reward
    tie for best: credit is the fraction of the tied responses that are gold-best (the expected
    accuracy under a random pick), so a constant RM is not rewarded for an index-0 bias. Prompts with
    fewer than two real responses are skipped: nothing was chosen.

    Args:
        rewards: ``[B, K]`` predicted rewards.
        gold: ``[B, K]`` gold scores, higher is better.
        mask: ``[B, K]`` bool, ``False`` at padding; ``None`` means every entry is real.

    Raises:
        ValueError: On shape mismatch, or when no prompt has two real responses.
    """
    if rewards.ndim != 2 or rewards.shape != gold.shape:
        raise ValueError(
            f"top1_accuracy: rewards and gold must both be [B, K]; got {tuple(rewards.shape)} and {tuple(gold.shape)}."
        )
    mask = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    if mask.shape != rewards.shape:
        raise ValueError(f"top1_accuracy: mask has shape {tuple(mask.shape)}, rewards {tuple(rewards.shape)}.")
    r = rewards.detach().double().masked_fill(~mask, float("-inf"))
    g = gold.detach().double().masked_fill(~mask, float("-inf"))
    picked = (r == r.max(-1, keepdim=True).values) & mask  # [B, K], the reward argmax set
    best = (g == g.max(-1, keepdim=True).values) & mask  # [B, K], the gold-best set
    keep = mask.sum(-1) >= 2
    if not keep.any():
        raise ValueError("top1_accuracy: no prompt has two or more real responses to choose between.")
    credit = (picked & best).sum(-1).double() / picked.sum(-1).clamp(min=1)
    return credit[keep].mean().item()


def reward_stats(rewards: ArrayLike) -> dict[str, float]:
    """``{"mean", "std", "min", "max"}`` of the rewards; ``std`` is the population std (0 for N = 1)."""
    x = _vec("reward_stats", rewards)
    return {"mean": x.mean().item(), "std": x.std(correction=0).item(), "min": x.min().item(), "max": x.max().item()}


# ---------------------------------------------------------------------------------------- helpers


def _vec(name: str, x: ArrayLike) -> Tensor:
    # Lists go straight to float64: through torch's default float32, 0.7 would become 0.69999999.
    t = x.detach().to(torch.float64) if isinstance(x, Tensor) else torch.as_tensor(x, dtype=torch.float64)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence, got shape {tuple(t.shape)}.")
    return t


def _credit(c: Tensor, r: Tensor) -> Tensor:
    return (c > r).double() + 0.5 * (c == r).double()


def _pair(name: str, a: ArrayLike, b: ArrayLike) -> tuple[Tensor, Tensor]:
    a, b = _vec(name, a), _vec(name, b)
    if a.shape != b.shape:
        raise ValueError(f"{name}: the two inputs have {a.numel()} and {b.numel()} elements; they must match.")
    return a, b


def _probs_labels(name: str, probs: ArrayLike, labels: ArrayLike) -> tuple[Tensor, Tensor]:
    p, y = _pair(name, probs, labels)
    if ((p < 0) | (p > 1) | p.isnan()).any():
        raise ValueError(f"{name}: probs must lie in [0, 1]; pass sigmoid(r_first - r_second), not raw rewards.")
    if ((y != 0) & (y != 1)).any():
        raise ValueError(f"{name}: labels must be 0 or 1 (1 = first response preferred).")
    return p, y


def _bins(p: Tensor, y: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width bin: count, mean prob and mean label, each ``[n_bins]`` (0 for empty bins)."""
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}.")
    idx = (p * n_bins).floor().long().clamp(max=n_bins - 1)  # p = 1 joins the last bin
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(p))
    psum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, p)
    ysum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, y)
    safe = count.clamp(min=1)
    return count, psum / safe, ysum / safe


def _average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of ``x``, ties given the mean of the ranks they span (as ``scipy.stats.rankdata``)."""
    _, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # last rank of each distinct value
    return (ends - (counts.double() - 1) / 2)[inverse]
