"""Pure pieces of policy evaluation: the sequence KL estimator, best-of-n selection and its KL.

Everything here works on numbers already computed (log-probabilities, reward scores), so it is
unit-tested with hand-worked examples; :mod:`align.eval.policy` runs the models that produce them.

References: the KL of a policy to a reference estimated from the policy's own samples,
``KL(pi || ref) = E_{y ~ pi}[log pi(y|x) - log ref(y|x)]`` (Stiennon et al. 2020, sec. 3.4; the
x-axis of Rafailov et al. 2023, DPO, Fig. 2). Best-of-n and its analytic KL ``log n - (n-1)/n``:
Stiennon et al. 2020, app. G.3; Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization",
sec. 2.2. Beirami et al. 2024 show the formula is an upper bound on the true KL (exact when the
n draws' rewards never tie).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def mean_sem(values: Sequence[float] | Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std with n-1; 0 for a single value)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("mean_sem needs at least one value.")
    n = x.numel()
    sem = math.sqrt(x.var(unbiased=True).item() / n) if n > 1 else 0.0
    return x.mean().item(), sem


def sequence_kl(policy_logprobs: Sequence[float] | Tensor, ref_logprobs: Sequence[float] | Tensor) -> tuple[float, float]:
    """Monte-Carlo sequence-level ``KL(policy || ref)`` from responses sampled from the policy.

    ``KL = E_{y ~ policy}[log policy(y|x) - log ref(y|x)]``: the mean over samples of the summed
    per-token log-ratio (the "k1" estimator). Unbiased, but a single sample's term may be negative;
    only the mean is a KL. Both log-probabilities must be of the *same* sampled responses, under
    the distribution they were sampled from (same temperature).

    Args:
        policy_logprobs: ``[N]`` ``log policy(y_i | x_i)`` of N samples from the policy.
        ref_logprobs: ``[N]`` ``log ref(y_i | x_i)`` of the same samples.

    Returns:
        ``(kl, sem)`` in nats per sequence.
    """
    p = torch.as_tensor(policy_logprobs, dtype=torch.float64)
    r = torch.as_tensor(ref_logprobs, dtype=torch.float64)
    if p.shape != r.shape or p.ndim != 1 or p.numel() == 0:
        raise ValueError(f"sequence_kl: need two [N] tensors of the same N > 0; got {tuple(p.shape)} and {tuple(r.shape)}.")
    return mean_sem(p - r)


def best_of_n_kl(n: int) -> float:
    """Analytic KL of best-of-n sampling to the sampling policy: ``log n - (n - 1) / n`` nats.

    0 for n = 1; grows like ``log n``. An upper bound on the exact KL (Beirami et al. 2024),
    used by Stiennon et al. 2020 and Gao et al. 2022 as the best-of-n x-axis.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"best-of-n needs an integer n >= 1, got {n!r}.")
    return math.log(n) - (n - 1) / n


def best_of_n_indices(scores: Tensor, n: int) -> Tensor:
    """For each prompt, the index of the highest-scoring response among its first ``n`` draws.

    Using the first ``n`` of one set of ``N >= n`` i.i.d. draws gives every n an unbiased
    best-of-n sample while sampling only once (nested subsets, as in Gao et al. 2022). Ties go to
    the earliest draw.

    Args:
        scores: ``[P, N]`` reward-model scores, N draws per prompt.
        n: How many draws to choose from (``1 <= n <= N``).

    Returns:
        ``[P]`` long indices into the N draws.
    """
    if scores.ndim != 2:
        raise ValueError(f"best_of_n_indices: scores must be [prompts, draws], got shape {tuple(scores.shape)}.")
    if not 1 <= n <= scores.shape[1]:
        raise ValueError(f"best_of_n_indices: n={n} but only {scores.shape[1]} draws per prompt were sampled.")
    # argmax returns the first maximal index, so ties resolve to the earliest draw.
    return scores[:, :n].argmax(dim=1)


def win_rate(scores: Sequence[float], baseline: Sequence[float]) -> float:
    """Fraction of items where ``scores`` beats ``baseline``, ties counted half (AlpacaFarm)."""
    if len(scores) != len(baseline) or not scores:
        raise ValueError(f"win_rate needs two equal, non-empty lists; got {len(scores)} and {len(baseline)}.")
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, baseline)) / len(scores)
