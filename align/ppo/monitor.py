"""Over-optimization monitoring: the policy scored by the reward model (proxy) *and* the gold oracle.

Every few iterations the loop decodes held-out prompts greedily and by sampling and records, per
kind, the proxy score (normalized reward-model score), the gold score (when the prompts have a gold
oracle), the KL to the reference on the sampled responses and the response length. Reward hacking
is the proxy going up while gold goes down (Gao et al. 2022); the history is ``history.jsonl`` in
the stage folder (one row per evaluation, the eval stage reads it) and ``ppo_gold_vs_proxy.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from align.eval.gold import gold_metrics
from align.eval.policy import generation_metrics
from align.generation import Generations
from align.outputs import atomic_write_text
from align.ppo.experience_maker import RewardSpec, reference_logprobs, score_rollout
from align.ppo.models import PPOModels, response_logprobs
from align.ppo.rollout import generate_rollout, rollout_generations

HISTORY_FILE = "history.jsonl"
PLOT_FILE = "ppo_gold_vs_proxy.png"


@torch.no_grad()
def policy_snapshot(
    models: PPOModels,
    tokenizer,
    prompts: list[str],
    prompt_ids: list[list[int]],
    spec: RewardSpec,
    max_new_tokens: int,
    temperature: float,
    batch_size: int,
    gold: bool,
    sampled: bool = True,
) -> tuple[dict[str, float], Generations, list[float]]:
    """Greedy (and sampled) responses of the current policy, scored by the reward model, gold and KL.

    Returns:
        Metrics ``rm/score_mean`` (normalized reward-model score), ``gen/response_len`` and
        ``gen/no_eos_frac`` for greedy decoding, ``gold/score_mean`` with ``gold``;
        ``rm/sampled_score_mean``, ``gold/sampled_score_mean`` and ``kl/sft_mean`` (mean k1 KL of
        sampled responses to the reference, summed over tokens) when ``sampled``. Then the
        greedy responses and their reward-model scores.
    """
    out: dict[str, float] = {}
    greedy, greedy_rm = Generations(), []
    for kind in ("greedy", "sampled") if sampled else ("greedy",):
        gens, scores, kls = Generations(), [], []
        for start in range(0, len(prompt_ids), batch_size):
            rollout = generate_rollout(
                models.policy, prompt_ids[start : start + batch_size], spec.eos_token_id, spec.pad_token_id,
                max_new_tokens, do_sample=kind == "sampled", temperature=temperature,
            )
            gens.extend(rollout_generations(tokenizer, prompts[start : start + batch_size],
                                            prompt_ids[start : start + batch_size], rollout))
            raw, _ = score_rollout(models, rollout, spec, batch_size)
            scores += raw.tolist()
            if kind == "sampled":
                logp = response_logprobs(models.policy, rollout, temperature)
                ref = reference_logprobs(models, rollout, temperature, batch_size)
                kls += torch.where(rollout.response_mask, logp - ref, 0.0).sum(1).tolist()
        suffix = "" if kind == "greedy" else "sampled_"
        out[f"rm/{suffix}score_mean"] = sum(scores) / len(scores)
        if gold:
            out[f"gold/{suffix}score_mean"] = gold_metrics(prompts, gens)["gold/score_mean"]
        if kind == "greedy":
            greedy, greedy_rm = gens, scores
            out.update(generation_metrics(gens))
        else:
            out["kl/sft_mean"] = sum(kls) / len(kls)
    return out, greedy, greedy_rm


def append_history(stage_dir: Path, row: dict) -> None:
    """Add one evaluation row to ``history.jsonl`` (rewritten whole, atomically)."""
    rows = read_history(stage_dir) + [row]
    atomic_write_text(Path(stage_dir) / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in rows))


def read_history(path: str | Path, up_to_iteration: int | None = None) -> list[dict]:
    """PPO's ``history.jsonl`` (``path`` is the file or the stage folder): one JSON object per
    evaluation step, sorted by ``iteration``; on resume only the rows up to ``up_to_iteration``.

    Rows may lack keys (a run without an oracle has no ``gold/*``). A missing file is an empty
    history; a line that is not a JSON object raises ``ValueError`` naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_FILE
    if not path.exists():
        return []
    rows = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{no}: not JSON ({e.msg}); history.jsonl holds one JSON object per line.") from e
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{no}: expected a JSON object, got {type(row).__name__}.")
        rows.append(row)
    rows.sort(key=lambda r: r.get("iteration", 0))
    return [r for r in rows if up_to_iteration is None or r["iteration"] <= up_to_iteration]


def truncate_history(stage_dir: Path, up_to_iteration: int) -> None:
    """Drop rows written after the checkpoint a resumed run continues from."""
    rows = read_history(stage_dir, up_to_iteration)
    atomic_write_text(Path(stage_dir) / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in rows))


def plot_history(stage_dir: Path, rows: list[dict]) -> Path | None:
    """``ppo_gold_vs_proxy.png``: proxy and gold score (left axis) and KL (right axis) by iteration."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("rm/score_mean", "C0-o"), ("rm/sampled_score_mean", "C0--"),
                       ("gold/score_mean", "C2-o"), ("gold/sampled_score_mean", "C2--")):
        if key in rows[0]:
            ax.plot(it, [r[key] for r in rows], style, label=key)
    ax.set_xlabel("PPO iteration")
    ax.set_ylabel("score (rm: normalized RM, the proxy; gold: oracle 0..1)")
    if "kl/sft_mean" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(it, [r["kl/sft_mean"] for r in rows], "C3:", label="KL to reference (sampled)")
        ax2.set_ylabel("KL (nats)")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("PPO: proxy reward vs. gold (over-optimization shows as a gap)")
    fig.tight_layout()
    path = Path(stage_dir) / PLOT_FILE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
