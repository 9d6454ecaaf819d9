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

from align.eval.metrics import read_history as parse_history
from align.outputs import atomic_write_text
from align.ppo.experience_maker import RewardSpec, reference_logprobs, score_rollout
from align.ppo.models import PPOModels, response_logprobs
from align.ppo.rollout import decode_responses, generate_rollout

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
) -> tuple[dict[str, float], list[str]]:
    """Greedy (and sampled) responses of the current policy, scored by proxy, gold and KL.

    Returns:
        Metrics ``gold/score_mean``, ``proxy/score_mean``, ``eval/response_len``, ``eval/no_eos_frac``
        for greedy decoding; ``gold/sampled_score_mean``, ``proxy/sampled_score_mean`` and
        ``eval/kl_ref`` (mean k1 KL of sampled responses to the reference, summed over tokens) when
        ``sampled``; gold keys only when ``gold``. And the greedy response texts.
    """
    from align.eval.gold import gold_metrics
    from align.generation import Generations

    out: dict[str, float] = {}
    greedy_texts: list[str] = []
    for kind in ("greedy", "sampled") if sampled else ("greedy",):
        texts, proxy, kls, lengths, ended = [], [], [], [], []
        for start in range(0, len(prompt_ids), batch_size):
            rollout = generate_rollout(
                models.policy, prompt_ids[start : start + batch_size], spec.eos_token_id, spec.pad_token_id,
                max_new_tokens, do_sample=kind == "sampled", temperature=temperature,
            )
            texts += decode_responses(tokenizer, rollout)
            raw, _ = score_rollout(models, rollout, spec, batch_size)
            proxy += raw.tolist()
            lengths += rollout.response_lengths().tolist()
            ended += rollout.ended.tolist()
            if kind == "sampled":
                logp = response_logprobs(models.policy, rollout, temperature)
                ref = reference_logprobs(models, rollout, temperature, batch_size)
                kls += torch.where(rollout.response_mask, logp - ref, 0.0).sum(1).tolist()
        suffix = "" if kind == "greedy" else "sampled_"
        out[f"proxy/{suffix}score_mean"] = sum(proxy) / len(proxy)
        if gold:
            gens = Generations(texts=texts, num_tokens=lengths, ended=ended)
            out[f"gold/{suffix}score_mean"] = gold_metrics(prompts, gens)["gold/score_mean"]
        if kind == "greedy":
            greedy_texts = texts
            out["eval/response_len"] = sum(lengths) / len(lengths)
            out["eval/no_eos_frac"] = 1.0 - sum(ended) / len(ended)
        else:
            out["eval/kl_ref"] = sum(kls) / len(kls)
    return out, greedy_texts


def append_history(stage_dir: Path, row: dict) -> None:
    """Add one evaluation row to ``history.jsonl`` (rewritten whole, atomically)."""
    rows = read_history(stage_dir) + [row]
    atomic_write_text(Path(stage_dir) / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in rows))


def read_history(stage_dir: Path, up_to_iteration: int | None = None) -> list[dict]:
    """The evaluation rows so far (on resume: those up to the checkpoint's iteration)."""
    path = Path(stage_dir) / HISTORY_FILE
    if not path.exists():
        return []
    return [r for r in parse_history(path) if up_to_iteration is None or r["iteration"] <= up_to_iteration]


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
    for key, style in (("proxy/score_mean", "C0-o"), ("proxy/sampled_score_mean", "C0--"),
                       ("gold/score_mean", "C2-o"), ("gold/sampled_score_mean", "C2--")):
        if key in rows[0]:
            ax.plot(it, [r[key] for r in rows], style, label=key)
    ax.set_xlabel("PPO iteration")
    ax.set_ylabel("score (proxy: normalized RM; gold: oracle 0..1)")
    if "eval/kl_ref" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(it, [r["eval/kl_ref"] for r in rows], "C3:", label="KL to reference (sampled)")
        ax2.set_ylabel("KL (nats)")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("PPO: proxy reward vs. gold (over-optimization shows as a gap)")
    fig.tight_layout()
    path = Path(stage_dir) / PLOT_FILE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
