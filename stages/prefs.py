"""Stage ``prefs``: collect ranked preferences on the farm from simulated annotators.

For every farm prompt of a split (``prompts.passes_<split>`` times, each pass with fresh samples
and fresh labels) it samples responses from the SFT policy, adds controlled
perturbations (the clean answer and the demonstrator's error modes) up to K distinct candidates,
and has a simulated annotator rank them by the gold score with configurable noise (label flips,
or Bradley-Terry/Plackett-Luce sampling). The ranked lists are what the reward model (and DPO)
train on; the noise ceiling (agreement of the noisy labels with gold) is recorded.

Steps:
    1. Validate; seed, output folder, logging, tracker.
    2. Read and check the prompts of both splits (a bad file fails here, before any sampling),
       then load the policy.
    3. Sample policy responses for every prompt (batched, KV cache).
    4. Build ranked lists: policy samples + perturbations, annotated with noise.
    5. Write ``train.jsonl`` / ``validation.jsonl`` (the ``ranked`` format) and ``metrics.json``.

Run: ``make prefs`` or ``python stages/prefs.py [overrides]``.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict

from omegaconf import DictConfig

from align.cli import stage_main
from align.config import begin_stage, open_tracker, to_plain
from align.data import load_prompts
from align.farm import gold_score
from align.farm.annotators import agreement, annotate
from align.farm.candidates import ranked_candidates
from align.generation import generate
from align.models.loading import check_stage_finished, load_causal_lm, load_tokenizer
from align.outputs import atomic_write_text, write_metrics

log = logging.getLogger("align.prefs")


def run(cfg: DictConfig) -> float:
    """Run the stage; return the training split's noise ceiling."""
    # 1. Validate, seed, output folder, tracker.
    if not 2 <= cfg.k <= 9:
        raise ValueError(f"prefs k={cfg.k}: ranked lists hold 2 to 9 responses.")
    if not 0 <= cfg.num_policy_samples <= cfg.k:
        raise ValueError(f"num_policy_samples={cfg.num_policy_samples} must be between 0 and k={cfg.k}.")
    passes = {split: int(cfg.prompts.get(f"passes_{split}", 1)) for split in ("train", "validation")}
    for split, n in passes.items():
        if n < 1:
            raise ValueError(f"prompts.passes_{split}={n} must be >= 1.")
    out_dir = begin_stage(cfg)
    tracker = open_tracker(cfg, out_dir)
    tracker.use_inputs(cfg.model.name_or_path, cfg.prompts.train, cfg.prompts.validation)

    # 2. Tokenizer, prompts of both splits (the validation file is checked before the train split
    #    is sampled), then the policy.
    check_stage_finished(cfg.model.name_or_path)  # sft/final of an SFT that finished
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    splits = {split: load_prompts(cfg.prompts[split], limit=cfg.prompts[f"num_{split}"], on_bad_row=cfg.prompts.on_bad_row,
                                  tokenizer=tokenizer, config_prefix="prompts.") for split in passes}
    policy = load_causal_lm(cfg.model.name_or_path, cfg.model.dtype, cfg.model.trust_remote_code)
    metrics: dict[str, float] = {}
    for split in ("train", "validation"):
        prompts, prompt_report = splits[split]
        prompts = prompts * passes[split]  # each pass: fresh samples and labels

        # 3. Policy samples: num_policy_samples per prompt, in one batched pass per round.
        samples: list[list[str]] = [[] for _ in prompts]
        for round_ in range(cfg.num_policy_samples):
            gens = generate(
                policy, tokenizer, prompts, do_sample=True, desc=f"{split} samples {round_ + 1}",
                **to_plain(cfg.sampling),
            )
            for i, text in enumerate(gens.texts):
                samples[i].append(text)

        # 4. Ranked lists with annotator scores.
        rng = random.Random(f"prefs/{cfg.seed}/{split}")
        rows, labels, golds, all_tied = [], [], [], 0
        by_source: dict[str, list[float]] = defaultdict(list)
        for prompt, policy_texts in zip(prompts, samples):
            responses, sources = ranked_candidates(prompt, policy_texts, cfg.k, rng)
            gold = [gold_score(prompt, r) for r in responses]
            scores = annotate(gold, rng, **to_plain(cfg.annotator))
            if len(set(scores)) == 1:  # no preference at all (e.g. K=3 flips, or noise=none on equal gold)
                all_tied += 1
                continue
            rows.append({"prompt": prompt, "responses": responses, "scores": scores, "gold": gold, "sources": sources})
            labels.append(scores)
            golds.append(gold)
            for src, g in zip(sources, gold):
                by_source[src.split(":")[0]].append(g)

        # 5. Write the split.
        atomic_write_text(out_dir / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        ceiling = agreement(labels, golds)
        metrics.update({
            f"prefs/{split}/prompts": len(rows),
            **prompt_report.as_metrics(f"data/{split}_prompts/"),
            f"prefs/{split}/all_tied_dropped": all_tied,
            f"prefs/{split}/mean_k": sum(len(r["responses"]) for r in rows) / len(rows),
            f"prefs/{split}/noise_ceiling": ceiling,
            f"prefs/{split}/policy_gold_mean": _mean(by_source["policy"]),
            f"prefs/{split}/perturb_gold_mean": _mean(by_source["perturb"]),
        })
        log.info("%s: %d ranked lists (%d all-tied lists dropped), noise ceiling %.3f", split, len(rows), all_tied, ceiling)
    write_metrics(out_dir, {**metrics, **tracker.metrics()})
    tracker.log_stage_artifact(out_dir, "dataset")
    tracker.finish(metrics)
    return metrics["prefs/train/noise_ceiling"]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


main = stage_main("prefs", run)


if __name__ == "__main__":
    main()
