"""Make a run folder with *larger* random policy and reward models, for memory benchmarks.

On the 1M-parameter default model, a process's peak memory is mostly the Python/torch runtime,
so memory modes cannot be told apart. This writes ``outputs/<out>/{sft,rm}/final`` with the same
tokenizer as ``outputs/<run>`` and a wider, deeper Llama (random weights, ~50M parameters by
default), so that weights, gradients and optimizer states dominate the peak, as they do for real
models. The models never stop on their own (random weights rarely emit EOS): both PPO
implementations then generate the full response length, the same work on both sides.

    python bench/make_scaled_run.py --run default --out default-scaled
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default", help="run folder whose sft/final tokenizer is reused")
    parser.add_argument("--out", default=None, help="new run folder name (default: <run>-scaled)")
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument("--intermediate-size", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=12)
    a = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification

    from align.models.loading import build_tiny_llama, count_parameters, load_tokenizer
    from align.rm.folder import write_normalization

    src = REPO / "outputs" / a.run / "sft" / "final"
    if not src.exists():
        raise SystemExit(f"{src} does not exist: run `make sft RUN={a.run}` first.")
    out = REPO / "outputs" / (a.out or f"{a.run}-scaled")
    tok = load_tokenizer(str(src))
    model = build_tiny_llama(tok, hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
                             num_hidden_layers=a.layers, num_attention_heads=a.heads, seed=0)
    model.save_pretrained(out / "sft" / "final")
    tok.save_pretrained(out / "sft" / "final")
    torch.manual_seed(1)
    rm = AutoModelForSequenceClassification.from_pretrained(out / "sft" / "final", num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(out / "rm" / "final")
    tok.save_pretrained(out / "rm" / "final")
    write_normalization(out / "rm" / "final", 0.0, 1.0)
    print(f"{out}: policy {count_parameters(model)[1] / 1e6:.1f}M parameters, reward model "
          f"{count_parameters(rm)[1] / 1e6:.1f}M (random weights, tokenizer of {src})")


if __name__ == "__main__":
    main()
