"""SFT throughput on the embedded default: real (non-pad) tokens/s and peak memory, packed vs. unpacked.

Each mode runs in its own fresh process (peak RSS is per process), on the same model, data, batch
size and number of samples; the ratio is packed / unpacked measured in this one run. Figures are
printed, never asserted.

    make bench-sft                      # or: .venv/bin/python bench/sft_throughput.py [--samples 1600]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from align.runtime import peak_rss_mb  # noqa: E402


def worker(model_dir: str, packing: bool, samples: int, batch_size: int) -> dict:
    """Train one epoch over ``samples`` farm demonstrations; return the figures."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from align.data import load_sft_dataset
    from align.models.loading import load_causal_lm, load_tokenizer
    from align.models.precision import precision_args

    tok = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, "float32")
    ds, _ = load_sft_dataset(str(REPO / "data/farm/sft_train.jsonl"), limit=samples, tokenizer=tok, max_length=128)
    real_tokens = sum(
        len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in ds
    )
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(), report_to=[], per_device_train_batch_size=batch_size, num_train_epochs=1,
        max_length=128, packing=packing, assistant_only_loss=True, save_strategy="no", logging_steps=1000,
        disable_tqdm=True, learning_rate=1e-3, **precision_args("auto"),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - start
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "mode": "packed" if packing else "unpacked",
        "steps": out.global_step,
        "seconds": seconds,
        "tokens_per_s": real_tokens / seconds,
        "samples_per_s": len(ds) / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_train_mb": rss_before,
        "peak_gpu_mb": peak_gpu,
    }


def make_model(out: Path) -> str:
    """A default-sized tiny model (weights do not matter for throughput): tokenizer + Llama."""
    from align.models.loading import build_tiny_llama
    from align.models.tokenizer import read_lines, train_tokenizer

    tok = train_tokenizer(read_lines(REPO / "data/farm/corpus_train.txt"), vocab_size=1024)
    tok.model_max_length = 256
    model = build_tiny_llama(tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--worker", choices=["packed", "unpacked"])
    parser.add_argument("--model-dir")
    a = parser.parse_args()
    if a.worker:
        print(json.dumps(worker(a.model_dir, a.worker == "packed", a.samples, a.batch_size)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp) / "model")
        rows = []
        for mode in ("unpacked", "packed"):
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", mode, "--model-dir", model_dir,
                 "--samples", str(a.samples), "--batch-size", str(a.batch_size)],
                capture_output=True, text=True, check=True,
            )
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"SFT throughput, default tiny model, {a.samples} farm demonstrations, batch {a.batch_size}, 1 epoch")
    print(f"{'mode':<10} {'steps':>6} {'seconds':>8} {'tokens/s':>10} {'samples/s':>10} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['mode']:<10} {r['steps']:>6} {r['seconds']:>8.1f} {r['tokens_per_s']:>10.0f} "
              f"{r['samples_per_s']:>10.1f} {r['peak_rss_mb']:>12.0f}")
    unpacked, packed = rows
    print(f"packed / unpacked: tokens/s x{packed['tokens_per_s'] / unpacked['tokens_per_s']:.2f}, "
          f"peak RSS x{packed['peak_rss_mb'] / unpacked['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
