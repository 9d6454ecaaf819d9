"""Training-step and sampling speed of the real model (SmolLM2-135M-Instruct) in fp32 and bf16, in one run.

    make real-model && .venv/bin/python bench/real_model_speed.py [--batch 8] [--seq 128] [--steps 4]

Prints tokens/s of a LoRA training step (forward + backward + AdamW on the adapter, r=16 on every
projection), a full fine-tuning step, and sampling (``generate`` with the KV cache), each in fp32,
under bf16 autocast, and with bf16 weights; the ratios are against fp32 measured in the same run.
What the recipes' ``precision`` comes from (README "Recipes"). Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import time

import torch


def load(folder: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)


def lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM"))


def train_speed(model, batch: int, seq: int, steps: int, autocast: bool) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(100, 20000, (batch, seq))
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * seq * steps / (time.perf_counter() - start)


@torch.no_grad()
def sample_speed(model, tokenizer, batch: int, new_tokens: int, autocast: bool) -> float:
    model.eval()
    prompts = [[{"role": "user", "content": f"Tell me a short story about the number {i}."}] for i in range(batch)]
    tokenizer.padding_side = "left"
    enc = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, return_tensors="pt", padding=True,
                                        return_dict=True)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, top_k=0, top_p=1.0,
              pad_token_id=tokenizer.pad_token_id)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model.generate(**enc, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        start = time.perf_counter()
        model.generate(**enc, **kw)
    return batch * new_tokens / (time.perf_counter() - start)


def main() -> None:
    from transformers import AutoTokenizer

    from align.config import REPO_ROOT

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO_ROOT / ".cache/models/SmolLM2-135M-Instruct"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=48)
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch} x {args.seq} tokens")
    modes = [("fp32", torch.float32, False), ("bf16 autocast", torch.float32, True), ("bf16 weights", torch.bfloat16, False)]
    rows = {}
    for name, dtype, autocast in modes:
        rows[("lora step", name)] = train_speed(lora(load(args.model, dtype)), args.batch, args.seq, args.steps, autocast)
        if dtype == torch.float32:  # full fine-tuning keeps fp32 master weights
            rows[("full step", name)] = train_speed(load(args.model, dtype), args.batch, args.seq, args.steps, autocast)
        rows[("sampling", name)] = sample_speed(load(args.model, dtype), tok, args.batch, args.new_tokens, autocast)
    print(f"{'what':<12} {'mode':<14} {'tokens/s':>9} {'vs fp32':>8}")
    for (what, mode), v in rows.items():
        print(f"{what:<12} {mode:<14} {v:9.1f} {v / rows[(what, 'fp32')]:7.2f}x")


if __name__ == "__main__":
    main()
