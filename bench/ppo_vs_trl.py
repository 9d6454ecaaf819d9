"""Our PPO vs. TRL 1.12.0's PPOTrainer: samples/s and peak memory of a PPO iteration, full and LoRA.

TRL removed PPO after 1.12.0, so its side runs in its own virtual environment, ``.venv-trl112/``
at the repository root, created here on first use (idempotent: a stamp file holds the recipe) with
the same torch, transformers, accelerate, peft and datasets versions as ``.venv``: only the trainer
code differs. Both sides run the same run's models (policy/reference from ``sft/final``, reward and
value models from ``rm/final``), the same prompts (``data/farm/prompts_train.jsonl``), rollouts per
iteration, minibatch size, PPO epochs, response length, temperature 1.0, fixed KL coefficient 0.05,
fp32, each in a fresh process (peak RSS is per process):

* TRL: ``.venv-trl112/bin/python bench/trl112_ppo.py`` (prints one JSON line);
* ours: ``python stages/ppo.py run=<run> output_dir=<tmp>/ours_<mode> ppo.mode=<mode> ...``, figures
  read from its ``metrics.json`` (``perf/samples_per_s``, ``perf/peak_rss_mb``).

A ``baseline`` process only imports torch + transformers and loads the four models once: its peak RSS
is the fixed cost both sides pay, printed so the memory PPO itself adds (peak RSS - baseline) can be
compared too. The first iteration of each side is warm-up and not timed. Figures and ratios
(ours / TRL, measured in this one run) are printed and written to
``outputs/<run>/bench/ppo_vs_trl.json``; targets are shown, never asserted.

    make bench-ppo                     # or: .venv/bin/python bench/ppo_vs_trl.py --run default
    .venv/bin/python bench/ppo_vs_trl.py --run v2 --iterations 3 --modes full lora
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from align.runtime import peak_rss_mb  # noqa: E402

TRL_VENV = REPO / ".venv-trl112"
TRL_PY = TRL_VENV / "bin" / "python"
TRL_STAMP = TRL_VENV / ".stamp-trl112"
# torch is installed first and then pinned by a constraints file (an unpinned torch pulls GBs of CUDA
# wheels); TORCH_SPEC as in the Makefile. The rest: trl 1.12.0 (its metadata asks accelerate>=1.4,
# datasets>=4.7, transformers>=4.56.2) at the versions .venv runs, so both sides share one stack.
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
TRL_REQUIREMENTS = ["trl==1.12.0", "transformers==5.23.0", "accelerate==1.15.0", "peft==0.21.2", "datasets==5.2.0"]
SPEED_TARGET, LORA_MEMORY_TARGET = 1.5, 0.7


def ensure_trl_venv() -> None:
    """Create ``.venv-trl112`` with TRL 1.12.0 unless its stamp already records this recipe."""
    recipe = "\n".join([TORCH_SPEC, *TRL_REQUIREMENTS]) + "\n"
    if TRL_STAMP.exists() and TRL_STAMP.read_text() == recipe and TRL_PY.exists():
        return
    print(f"[bench] creating {TRL_VENV.name}/ ({TORCH_SPEC}, {' '.join(TRL_REQUIREMENTS)}) ...", flush=True)
    pip = [str(TRL_PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not TRL_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    subprocess.run([*pip, TORCH_SPEC], check=True)
    torch_version = subprocess.run([str(TRL_PY), "-c", "import torch; print(torch.__version__)"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    constraints = TRL_VENV / "constraints.txt"
    constraints.write_text(f"torch=={torch_version}\n")
    subprocess.run([*pip, "-c", str(constraints), *TRL_REQUIREMENTS], check=True)
    subprocess.run([str(TRL_PY), "-c", "from trl.experimental.ppo import PPOConfig, PPOTrainer"], check=True,
                   env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"})
    TRL_STAMP.write_text(recipe)


def baseline_worker(run_dir: Path) -> dict:
    """Import torch + transformers, load the four models and the tokenizer once: the fixed cost."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    after_imports = peak_rss_mb()
    sft, rm = run_dir / "sft" / "final", run_dir / "rm" / "final"
    AutoTokenizer.from_pretrained(sft)
    models = [AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32) for _ in range(2)]
    models += [AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1, dtype=torch.float32)
               for _ in range(2)]
    return {
        "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": after_imports,
        "params_per_policy": sum(p.numel() for p in models[0].parameters()),
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
    }


def _run(cmd: list[str], log: Path, env: dict) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    log.write_text(f"$ {' '.join(cmd)}\n\n[stdout]\n{proc.stdout}\n[stderr]\n{proc.stderr}")
    print(f"[bench]   exit {proc.returncode} after {time.perf_counter() - start:.0f}s (log: {log.relative_to(REPO)})",
          flush=True)
    return proc


def _tail(proc: subprocess.CompletedProcess, n: int = 8) -> str:
    lines = (proc.stderr or proc.stdout).strip().splitlines()[-n:]
    return "\n".join("    " + line for line in lines)


def run_trl(a, mode: str, run_dir: Path, log: Path, env: dict) -> dict | None:
    cmd = [str(TRL_PY), str(REPO / "bench/trl112_ppo.py"), "--run-dir", str(run_dir), "--mode", mode,
           "--iterations", str(a.iterations), "--batch-size", str(a.batch_size),
           "--mini-batch-size", str(a.mini_batch_size), "--ppo-epochs", str(a.ppo_epochs),
           "--response-length", str(a.response_length), "--temperature", "1.0", "--kl-coef", str(a.kl_coef),
           "--lora-targets", a.lora_targets, "--seed", str(a.seed)]
    if a.trl_gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    print(f"[bench] TRL 1.12.0 PPOTrainer, mode {mode} ...", flush=True)
    proc = _run(cmd, log, env)
    if proc.returncode != 0:
        print(f"[bench]   TRL side failed:\n{_tail(proc)}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ours_command(a, mode: str, out: Path) -> list[str]:
    """The command line of our side; every key below is in conf/ppo.yaml."""
    overrides = [
        f"run={a.run}", f"output_dir={out}", f"ppo.mode={mode}", f"ppo.total_iterations={a.iterations}",
        f"ppo.rollout_batch_size={a.batch_size}", f"ppo.mini_batch_size={a.mini_batch_size}",
        f"ppo.micro_batch_size={a.mini_batch_size}", f"ppo.ppo_epochs={a.ppo_epochs}",
        f"generation.max_new_tokens={a.response_length}", "generation.temperature=1.0",
        "ppo.kl.kind=fixed", f"ppo.kl.kl_coef={a.kl_coef}", "precision=fp32", f"seed={a.seed}",
        "eval.every=0", "eval.final=false", "checkpoint.every=0", "logger=none",
        "ppo.allow_failed_rm=true",  # speed and memory do not depend on the RM passing its quality gate
        "ppo.ptx_coef=0.0",  # TRL's PPO has no PPO-ptx: the same work per iteration on both sides
    ]
    if a.lora_targets != "all-linear":
        overrides.append(f"ppo.lora.target_modules=[{a.lora_targets}]")
    return [sys.executable, str(REPO / "stages/ppo.py"), *overrides, *a.ours_extra]


def run_ours(a, mode: str, tmp: Path, log: Path, env: dict) -> tuple[dict | None, str | None]:
    """Returns (figures, None) or (None, why our side has no figures)."""
    if not (REPO / "stages/ppo.py").exists():
        return None, "stages/ppo.py does not exist yet: our side was not run"
    out = tmp / f"ours_{mode}"
    print(f"[bench] ours (stages/ppo.py), mode {mode} ...", flush=True)
    proc = _run(ours_command(a, mode, out), log, env)
    if proc.returncode != 0:
        return None, f"stages/ppo.py exited {proc.returncode}:\n{_tail(proc)}"
    metrics_path = out / "metrics.json"
    if not metrics_path.exists():
        return None, f"stages/ppo.py wrote no {metrics_path.name} in {out}"
    m = json.loads(metrics_path.read_text())
    missing = [k for k in ("perf/samples_per_s", "perf/peak_rss_mb") if k not in m]
    if missing:
        return None, f"our metrics.json lacks {missing} (keys seen: {sorted(k for k in m if k.startswith('perf/'))})"
    return {"samples_per_s": m["perf/samples_per_s"], "peak_rss_mb": m["perf/peak_rss_mb"],
            "peak_gpu_mb": m.get("perf/peak_cuda_mb"), "metrics": {k: v for k, v in m.items() if k.startswith("perf/")}}, None


def _ratio(x, y):
    return x / y if x is not None and y else None


def _fmt(v, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}{spec}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="default", help="run folder outputs/<run> with sft/final and rm/final")
    parser.add_argument("--iterations", type=int, default=3, help="PPO iterations per side; the first is warm-up")
    parser.add_argument("--batch-size", type=int, default=64, help="rollouts (prompts) per iteration")
    parser.add_argument("--mini-batch-size", type=int, default=16, help="rollouts per optimizer step")
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=48, help="max new tokens per response")
    parser.add_argument("--kl-coef", type=float, default=0.05, help="fixed KL coefficient, both sides")
    parser.add_argument("--modes", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    parser.add_argument("--lora-targets", default="all-linear",
                        help="LoRA target modules, both sides: 'all-linear' (conf/ppo.yaml) or e.g. q_proj,v_proj")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true",
                        help="PPOConfig's own default; off by default so both sides recompute nothing")
    parser.add_argument("--ours-extra", nargs="*", default=[], help="more Hydra overrides for our side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args()
    run_dir = REPO / "outputs" / a.run
    if a.baseline_worker:
        print(json.dumps(baseline_worker(run_dir)))
        return
    if a.iterations < 2:
        raise ValueError(f"--iterations must be >= 2 (the first iteration is warm-up, not timed), got {a.iterations}")
    if a.batch_size % a.mini_batch_size:
        raise ValueError(f"--batch-size {a.batch_size} must be a multiple of --mini-batch-size {a.mini_batch_size}")
    missing = [p for p in ("sft/final", "rm/final") if not (run_dir / p).is_dir()]
    if missing:
        raise SystemExit(f"outputs/{a.run} lacks {', '.join(missing)}: run `make rm RUN={a.run}` first")

    ensure_trl_venv()
    bench_dir = run_dir / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "TRL_EXPERIMENTAL_SILENCE": "1"}

    print("[bench] baseline: import torch + transformers, load the 4 models ...", flush=True)
    proc = _run([sys.executable, __file__, "--baseline-worker", "--run", a.run], bench_dir / "ppo_vs_trl_baseline.log", env)
    proc.check_returncode()
    baseline = json.loads(proc.stdout.strip().splitlines()[-1])

    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench_ppo_") as tmp:
        for mode in a.modes:
            trl = run_trl(a, mode, run_dir, bench_dir / f"ppo_vs_trl_trl_{mode}.log", env)
            ours, why = run_ours(a, mode, Path(tmp), bench_dir / f"ppo_vs_trl_ours_{mode}.log", env)
            if why:
                notes.append(f"ours, {mode}: {why}")
            rows.append({"mode": mode, "ours": ours, "trl": trl})

    base = baseline["peak_rss_mb"]
    print(f"\nPPO iteration, outputs/{a.run} ({baseline['params_per_policy'] / 1e6:.2f}M-parameter policy), "
          f"{a.batch_size} rollouts/iteration, minibatch {a.mini_batch_size}, {a.ppo_epochs} PPO epochs, "
          f"{a.response_length} new tokens, {a.iterations} iterations (first not timed), fp32, "
          f"torch {baseline['torch_version']}, transformers {baseline['transformers_version']}")
    header = (f"{'mode':<9} {'ours smp/s':>10} {'TRL smp/s':>10} {'ratio':>6} {'ours RSS MB':>12} {'TRL RSS MB':>11} "
              f"{'ratio':>6} {'ours -base':>11} {'TRL -base':>10} {'ratio':>6}")
    print(header)
    print(f"{'baseline':<9} {'':>10} {'':>10} {'':>6} {base:>12.0f} {base:>11.0f} {'':>6}"
          f"   (import torch + transformers {baseline['rss_after_imports_mb']:.0f} MB, then 4 models loaded)")
    for r in rows:
        o, t = r["ours"] or {}, r["trl"] or {}
        o_sps, t_sps = o.get("samples_per_s"), t.get("samples_per_s")
        o_rss, t_rss = o.get("peak_rss_mb"), t.get("peak_rss_mb")
        o_add = o_rss - base if o_rss is not None else None
        t_add = t_rss - base if t_rss is not None else None
        r.update(speed_ratio=_ratio(o_sps, t_sps), rss_ratio=_ratio(o_rss, t_rss), rss_added_ratio=_ratio(o_add, t_add),
                 ours_rss_added_mb=o_add, trl_rss_added_mb=t_add)
        print(f"{r['mode']:<9} {_fmt(o_sps, '.2f', 10)} {_fmt(t_sps, '.2f', 10)} {_fmt(r['speed_ratio'], '.2f', 6)} "
              f"{_fmt(o_rss, '.0f', 12)} {_fmt(t_rss, '.0f', 11)} {_fmt(r['rss_ratio'], '.2f', 6)} "
              f"{_fmt(o_add, '.0f', 11)} {_fmt(t_add, '.0f', 10)} {_fmt(r['rss_added_ratio'], '.2f', 6)}")
    print(f"ratio = ours / TRL, measured in this run. Targets: samples/s ratio >= {SPEED_TARGET} (every mode); "
          f"peak memory ratio <= {LORA_MEMORY_TARGET} in lora mode.")
    for r in rows:
        if r["speed_ratio"] is not None:
            print(f"  {r['mode']}: speed x{r['speed_ratio']:.2f} "
                  f"({'meets' if r['speed_ratio'] >= SPEED_TARGET else 'misses'} >= {SPEED_TARGET})"
                  + (f"; peak RSS x{r['rss_ratio']:.2f}, PPO-added RSS x{r['rss_added_ratio']:.2f} "
                     f"({'meets' if r['rss_ratio'] <= LORA_MEMORY_TARGET else 'misses'} <= {LORA_MEMORY_TARGET} "
                     f"on peak RSS)" if r["mode"] == "lora" and r["rss_ratio"] is not None else ""))
        gpu_o, gpu_t = (r["ours"] or {}).get("peak_gpu_mb"), (r["trl"] or {}).get("peak_gpu_mb")
        if gpu_t is not None:
            print(f"  {r['mode']}: peak GPU memory ours {_fmt(gpu_o, '.0f', 0)} MB vs TRL {gpu_t:.0f} MB")
    for note in notes:
        print(f"NOTE {note}")
    if any(r["trl"] is None for r in rows):
        print(f"NOTE the TRL side failed for some mode: see outputs/{a.run}/bench/ppo_vs_trl_trl_<mode>.log")

    out = bench_dir / "ppo_vs_trl.json"
    settings = {k: v for k, v in vars(a).items() if k != "baseline_worker"}
    out.write_text(json.dumps({"settings": settings, "baseline": baseline, "rows": rows, "notes": notes,
                               "targets": {"speed_ratio_min": SPEED_TARGET, "lora_rss_ratio_max": LORA_MEMORY_TARGET}},
                              indent=2) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
