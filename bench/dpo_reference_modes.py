"""Memory and speed of DPO's reference modes: a frozen copy, the adapter-disabled base, precomputed log-probs.

Each (peft, reference) combination runs ``stages/dpo.py`` from its command line in its own
subprocess, so each peak RSS is that mode's alone, and prints one table row from its
``metrics.json``: peak RSS after setup (models loaded, reference log-probs precomputed) and after
training, setup seconds, training seconds and pairs per second. Figures, not asserts.

By default the start model is a randomly initialised wider Llama (``--hidden 512 --layers 4``,
about 10M parameters) with the run's SFT tokenizer, so the reference copy is large enough to see
above the Python/torch baseline; ``--model`` benchmarks any model folder instead (e.g. the run's
own ``sft/final``). Data: the shipped ``prefs_small`` ranked lists.

    OMP_NUM_THREADS=1 python bench/dpo_reference_modes.py --run-dir outputs/v2 [--steps 8] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = [("none", "copy"), ("none", "precomputed"), ("lora", "copy"), ("lora", "adapter"), ("lora", "precomputed")]


def build_wide_model(tokenizer_dir: Path, out: Path, hidden: int, layers: int) -> Path:
    sys.path.insert(0, str(REPO))
    from align.models.loading import build_tiny_llama, load_tokenizer

    tok = load_tokenizer(str(tokenizer_dir))
    model = build_tiny_llama(tok, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                             num_attention_heads=hidden // 64)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def run_mode(model: Path, peft: str, reference: str, steps: int, batch: int, out: Path) -> dict:
    cmd = [sys.executable, str(REPO / "stages" / "dpo.py"), f"output_dir={out}", f"model.name_or_path={model}",
           f"peft={peft}", f"dpo.reference={reference}", "data=prefs_small", f"data.limit={steps * batch}",
           f"trainer.max_steps={steps}", f"trainer.per_device_train_batch_size={batch}", "trainer.save_strategy=no",
           "trainer.logging_steps=1", "dpo.gold=null", "eval.num_prompts=8", "eval.max_new_tokens=8", "logger=none"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{peft}/{reference} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="outputs/v2", help="a run with sft/final (its tokenizer is used)")
    ap.add_argument("--model", default=None, help="benchmark this model folder instead of a wide random one")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8, help="pairs per step")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else build_wide_model(Path(args.run_dir) / "sft" / "final",
                                                                      tmp / "model", args.hidden, args.layers)
        rows = []
        for peft, reference in MODES:
            m = run_mode(model, peft, reference, args.steps, args.batch, tmp / f"{peft}_{reference}")
            rows.append((peft, reference, m))
            print(f"done {peft}/{reference}", file=sys.stderr)
    params = rows[0][2]["model/parameters"]
    print(f"\nDPO reference modes: {params / 1e6:.1f}M-parameter model, {args.steps} steps x {args.batch} pairs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print("| peft | reference | trainable | peak RSS setup (MiB) | peak RSS train (MiB) | setup s | train s | pairs/s |")
    print("|---|---|---|---|---|---|---|---|")
    for peft, reference, m in rows:
        print(f"| {peft} | {reference} | {m['model/trainable_parameters']:,} | {m['memory/peak_rss_setup_mb']:.0f} "
              f"| {m['memory/peak_rss_train_mb']:.0f} | {m['timing/setup_s']:.1f} | {m['timing/train_s']:.1f} "
              f"| {m['train/samples_per_s']:.1f} |")


if __name__ == "__main__":
    main()
