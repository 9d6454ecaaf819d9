"""Reward model: K-wise ranked training vs. best-vs-worst pairs at the same annotation budget.

Both arms train on the same ranked prompts (the run's ``prefs/train.jsonl``: K = 4 lists from
simulated annotators with 25% label flips) for the same number of optimizer steps, from the same
SFT model, and are measured on the same held-out lists (``prefs/validation.jsonl``):

* ``kwise``: InstructGPT's loss over all C(4, 2) pairs of each list from one forward pass;
* ``pairs``: one best-vs-worst pair per list through TRL's RewardTrainer (what a pairwise-only
  pipeline keeps of the same annotations).

Prints held-out gold accuracy, annotator accuracy and RM training tokens/s for each arm (the
figures come from each arm's ``metrics.json``), measured side by side in one run.

    make bench-rm                 # needs outputs/<run>/sft (built if missing) and collects prefs first
    .venv/bin/python bench/rm_kwise_vs_pairs.py --run default [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ARMS = {
    "kwise": ["rm.loss=ranked"],
    "pairs": ["rm.loss=pairwise", "rm.pair_rule=best_vs_worst"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for both arms")
    a = parser.parse_args()
    run_dir = REPO / "outputs" / a.run
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    if not (run_dir / "prefs" / "metrics.json").exists():
        subprocess.run([sys.executable, str(REPO / "stages/prefs.py"), f"run={a.run}", "logger=none"],
                       cwd=REPO, env=env, check=True)
    results = []
    for seed in a.seeds:
        for arm, overrides in ARMS.items():
            out = run_dir / "bench_rm" / f"{arm}_seed{seed}"
            cmd = [sys.executable, str(REPO / "stages/rm.py"), f"run={a.run}", f"seed={seed}", f"output_dir={out}",
                   "logger=none", *overrides, *a.extra]
            print(f"[bench] {arm} seed {seed} ...", flush=True)
            subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
            m = json.loads((out / "metrics.json").read_text())
            results.append((arm, seed, m))
    prefs = json.loads((run_dir / "prefs" / "metrics.json").read_text())
    print(f"\nRM on {prefs['prefs/train/prompts']} ranked prompts (K={prefs['prefs/train/mean_k']:.1f}), "
          f"label agreement with gold {prefs['prefs/train/noise_ceiling']:.3f}; "
          f"held-out {prefs['prefs/validation/prompts']} lists")
    print(f"{'arm':<6} {'seed':>4} {'steps':>6} {'gold acc':>9} {'annot acc':>10} {'gold top1':>10} {'tokens/s':>9}")
    for arm, seed, m in results:
        print(f"{arm:<6} {seed:>4} {m['train/steps']:>6} {m['gold/accuracy']:>9.3f} {m['eval/accuracy']:>10.3f} "
              f"{m['gold/top1_accuracy']:>10.3f} {m['train/tokens_per_s']:>9.0f}")
    mean = {arm: sum(m["gold/accuracy"] for a_, _, m in results if a_ == arm) / len(a.seeds) for arm in ARMS}
    print(f"mean gold accuracy: kwise {mean['kwise']:.3f} vs pairs {mean['pairs']:.3f} "
          f"(difference {mean['kwise'] - mean['pairs']:+.3f})")


if __name__ == "__main__":
    main()
