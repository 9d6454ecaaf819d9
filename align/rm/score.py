"""``python -m align.rm.score``: any reward model on any preference file, measured like ``make rm``.

    python -m align.rm.score --model outputs/default/rm/final --prefs outputs/default/prefs/validation.jsonl \\
        [--format auto|pairwise|ranked|hh|ultrafeedback|oasst] [--split train] [--max-length N] \\
        [--batch-size 64] [--on-bad-row error|skip] [--on-too-long truncate|skip|error] [--limit N] \\
        [--dtype auto|float32|bfloat16|float16] [--out result.json]

The figures are the ``rm`` stage's report card, through the same functions (``load_preferences``,
:func:`align.rm.model.score_lists`, :func:`align.rm.report.report_card`), so on the RM's own
validation file, with the stage's ``data.max_length`` and ``rm.eval_batch_size``, it prints the
``eval/*`` that ``make rm`` wrote to ``metrics.json``:

- pairs: every pair of a list whose human scores differ (one per row of a pair file); responses
  the human tied are not a pair;
- accuracy: the share of pairs the RM orders like the human; a pair the RM scores equal counts 1/2;
- its 95% interval: a percentile bootstrap over *lists* (2000 resamples, seed 0), because the
  pairs of one list share a prompt and responses and are not independent
  (:func:`align.rm.metrics.list_bootstrap_interval`);
- ECE of sigmoid(r_i - r_j) on the pairs listed both ways (10 bins), the Pearson correlation of
  reward with response length in tokens, top-1 accuracy, the mean margin, reward mean and std;
- the load report: rows read, kept, skipped (by reason) and truncated.

Scores are raw, not normalized by ``reward_normalization.json``, as in the stage's report card (the
accuracy does not depend on it; the ECE does). ``--max-length`` defaults to the model's
``max_position_embeddings``; longer sequences are left-truncated (keeping the response) and
counted. ``--out`` writes the figures as flat JSON under the stage's metric names, atomically.

Errors (a missing folder or file, a folder that is not a reward model, a broken checkpoint, a bad
row) print one line, ``error: score: ...``, and exit with status 1; ``ALIGN_DEBUG=1`` raises them
with the traceback. Success exits 0.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from align.data.errors import BAD_ROW_MODES, DataError, SourceRef
from align.data.preferences import FORMATS
from align.errors import AlignError, CheckpointError

log = logging.getLogger("align.score")

CI_LEVEL = 0.95
N_RESAMPLES = 2000
ON_TOO_LONG = ("truncate", "skip", "error")
# The loader's option names in a hint, as this command's flags: on_bad_row=skip -> --on-bad-row skip.
_OPTION = re.compile(r"(?<![\w.-])(on_bad_row|on_too_long|format)=(\w*)")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def score_file(model: str, prefs: str, *, split: str = "train", format: str = "auto",  # noqa: A002 - the loader's word
               max_length: int | None = None, batch_size: int = 64, on_bad_row: str = "error",
               on_too_long: str = "truncate", limit: int | None = None, dtype: str = "auto", device: str | None = None,
               n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Score every list of ``prefs`` with the reward model in ``model``; return the flat result.

    Args:
        model: A reward-model folder (``<run>/rm/final``) or hub id.
        prefs: A preference file, folder or hub data set (:func:`align.data.load_preferences`).
        split: The split to read.
        format: ``"auto"`` or one of :data:`align.data.preferences.FORMATS`.
        max_length: Longest prompt + response in tokens; None: the model's position limit.
        batch_size: Sequences per forward pass.
        on_bad_row: ``"error"`` or ``"skip"`` (counted).
        on_too_long: ``"truncate"`` (left, counted), ``"skip"`` (counted) or ``"error"``.
        limit: Score only the first ``limit`` kept lists.
        dtype: Weight dtype (``auto``: bf16 on a capable GPU, else fp32).
        device: Where the model runs; None: CUDA when available, else CPU.
        n_resamples: Bootstrap resamples for the interval.
        seed: Seed of the bootstrap.

    Returns:
        The report card (``eval/accuracy``, ``eval/accuracy_ci_low``/``_high``, ``eval/pairs``,
        ``eval/lists``, ``eval/rm_tied_pairs``, ``eval/ece``, ``eval/length_corr``, ...), the load
        report (``data/rows_read``, ``data/rows_kept``, ``data/rows_skipped``, ``data/skipped/<code>``,
        ``data/rows_truncated``) and what was run (``model``, ``prefs``, ``format``, ...).

    Raises:
        FileNotFoundError: ``model`` or ``prefs`` does not exist.
        CheckpointError: ``model`` is not a loadable reward model (a causal LM, missing or broken weights).
        NonFiniteError: The weights hold NaN or inf.
        DataError: A bad row with ``on_bad_row="error"`` (the hint names this command's flags).
        ValueError: Bad arguments, or nothing left to score.
    """
    import torch

    from align.data import load_preferences
    from align.models.loading import SEQUENCE_CLASSIFIER, check_architecture, resolve_dtype, resolve_full_model_path
    from align.preflight import model_position_limit
    from align.rm.folder import load_reward_model
    from align.rm.model import score_lists
    from align.rm.report import accuracy_interval, policy_mask, report_card
    from align.trainer_guard import check_finite_weights

    for name, value in (("--batch-size", batch_size), ("--max-length", max_length), ("--limit", limit)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}.")
    path = _model_folder(model)
    path = resolve_full_model_path(path)  # an unfinished stage's final/ is refused; an adapter goes to final_merged/
    check_architecture(path, SEQUENCE_CLASSIFIER)  # before the data is read: a causal LM is refused at once
    position_limit = model_position_limit(path)
    if max_length is None:
        max_length = position_limit
    elif position_limit is not None and max_length > position_limit:
        raise ValueError(f"--max-length {max_length} is above the max_position_embeddings of {path} ({position_limit}): "
                         f"the model has no position embedding past {position_limit} tokens. Pass --max-length "
                         f"{position_limit} or less.")
    tokenizer = _load(path, "tokenizer", lambda: _tokenizer(path))

    try:
        examples, report = load_preferences(prefs, split, format=format, on_bad_row=on_bad_row, tokenizer=tokenizer,
                                            max_length=max_length, on_too_long=on_too_long, limit=limit)
    except DataError as err:
        raise _with_flags(err) from None
    report.log(log)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    weights_dtype = resolve_dtype(dtype)
    rm = _load(path, "reward model", lambda: load_reward_model(path, tokenizer.pad_token_id, weights_dtype, device))
    check_finite_weights(rm, "score", None, f"weights of {path}")

    rewards, lengths = score_lists(rm, tokenizer, examples, max_length, batch_size)
    labels = [list(ex.scores) for ex in examples]
    metrics = report_card(rewards, labels, lengths, None, policy_mask=policy_mask(examples))
    metrics.update(accuracy_interval(rewards, labels, CI_LEVEL, n_resamples, seed))
    return {
        "model": str(path),
        "prefs": str(report.source),
        "format": report.format,
        "split": split,
        "max_length": max_length,
        "batch_size": batch_size,
        "dtype": str(weights_dtype).removeprefix("torch."),
        "device": str(device),
        "scores": "raw",
        "eval/accuracy_ci_level": CI_LEVEL,
        "eval/accuracy_ci_method": f"percentile bootstrap over lists, {n_resamples} resamples, seed {seed}",
        **metrics,
        **report.as_metrics("data/"),
    }


def format_result(r: dict) -> str:
    """The printed report: one figure per line, ``name  value  (what it is)``."""
    def num(key: str) -> str:
        value = r.get(key)
        return "n/a" if value is None or value != value else f"{value:.4f}"

    level = round(100 * r["eval/accuracy_ci_level"])
    skipped = ", ".join(f"{k.removeprefix('data/skipped/')}: {v}" for k, v in sorted(r.items())
                        if k.startswith("data/skipped/"))
    ci = (f"{num('eval/accuracy')}  {level}% CI [{num('eval/accuracy_ci_low')}, {num('eval/accuracy_ci_high')}]  "
          f"({r['eval/accuracy_ci_method']})")
    rows = (f"read {r['data/rows_read']}, kept {r['data/rows_kept']}, skipped {r['data/rows_skipped']}"
            + (f" ({skipped})" if skipped else "") + f", truncated {r['data/rows_truncated']}")
    lines = [
        ("reward model", f"{r['model']}  ({r['scores']} scores, {r['dtype']}, {r['device']}, max_length {r['max_length']})"),
        ("preferences", f"{r['prefs']}  (format {r['format']})"),
        ("rows", rows),
        ("lists", f"{r['eval/lists']}"),
        ("pairs", f"{r['eval/pairs']}  (every pair of a list with distinct human scores; human ties are not pairs)"),
        ("accuracy", ci),
        ("rm ties", f"{r['eval/rm_tied_pairs']}  (pairs the reward model scores equal, counted 1/2)"),
        ("ece", f"{num('eval/ece')}  (sigmoid(r_i - r_j) on pairs listed both ways, 10 bins)"),
        ("length corr", f"{num('eval/length_corr')}  (Pearson, reward vs. response tokens)"),
        ("top-1 accuracy", f"{num('eval/top1_accuracy')}  (lists whose highest-reward response is a human-best one)"),
        ("margin mean", f"{num('eval/margin_mean')}  (reward of the preferred response minus the other's)"),
        ("reward", f"mean {num('reward/mean')}, std {num('reward/std')}"),
    ]
    return "\n".join(f"{name:<16}{value}" for name, value in lines)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0: scored; 1: an error, printed as one line)."""
    from align.cli import debug_enabled, report_failure
    from align.outputs import atomic_write_text, metrics_text

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        result = score_file(args.model, args.prefs, split=args.split, format=args.format, max_length=args.max_length,
                            batch_size=args.batch_size, on_bad_row=args.on_bad_row, on_too_long=args.on_too_long,
                            limit=args.limit, dtype=args.dtype, n_resamples=args.bootstrap, seed=args.seed)
        if args.out is not None:
            atomic_write_text(args.out, metrics_text(result))
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001  (every failure becomes one line; ALIGN_DEBUG=1 shows the traceback)
        if debug_enabled():
            raise
        print(f"error: {' '.join(report_failure('score', err).split())}", file=sys.stderr)
        return 1
    print(format_result(result))
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m align.rm.score", description=__doc__.splitlines()[0].strip("`: "))
    p.add_argument("--model", required=True, help="reward-model folder (e.g. outputs/<run>/rm/final) or hub id")
    p.add_argument("--prefs", required=True, help="preference file, folder or hub data set")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    p.add_argument("--split", default="train", help="split to read (a local file is split 'train')")
    p.add_argument("--max-length", type=int, default=None,
                   help="longest prompt + response in tokens (default: the model's max_position_embeddings)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass (make rm: rm.eval_batch_size)")
    p.add_argument("--on-bad-row", default="error", choices=BAD_ROW_MODES)
    p.add_argument("--on-too-long", default="truncate", choices=ON_TOO_LONG)
    p.add_argument("--limit", type=int, default=None, help="score only the first N kept lists")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--bootstrap", type=int, default=N_RESAMPLES, help="bootstrap resamples for the interval")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here (atomically)")
    return p


def _model_folder(model: str) -> str:
    """``model`` if it is a folder with a ``config.json`` (or a hub id); else a clear error."""
    p = Path(model).expanduser()
    if not p.exists():
        if _HUB_ID.fullmatch(model) and not Path(model.split("/")[0]).exists():
            return model  # owner/name: from_pretrained resolves it (and says why not)
        raise FileNotFoundError(f"--model {model!r} does not exist (resolved to {p.resolve()}). Point it at a "
                                "reward-model folder, e.g. outputs/<run>/rm/final (`make rm` writes it).")
    if p.is_dir() and not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        final = p / "final"
        hint = (f"It looks like a stage folder: pass --model {final}." if (final / "config.json").is_file()
                else "Point it at a reward-model folder, e.g. outputs/<run>/rm/final.")
        raise CheckpointError(f"--model {model!r} is not a model folder (no config.json in it). {hint}")
    if not p.is_dir():
        raise CheckpointError(f"--model {model!r} is a file, not a model folder; point it at a reward-model folder, "
                              "e.g. outputs/<run>/rm/final.")
    return model


def _tokenizer(path: str):
    from align.models.loading import load_tokenizer

    return load_tokenizer(path)


def _load(path: str, what: str, load):
    """``load()``, with a broken or incomplete folder's error (a truncated weights file, a bad
    config.json) turned into one :class:`CheckpointError` that names the folder."""
    from safetensors import SafetensorError

    try:
        return load()
    except AlignError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: cannot load its {what} ({type(e).__name__}: {first}). The folder is broken "
                              "or incomplete: re-save it (`make rm`), or point --model at a complete reward-model "
                              "folder.") from e


def _with_flags(err: DataError) -> DataError:
    """``err`` with its hint naming this command's flags (``--on-bad-row skip``) instead of the loader's arguments."""
    def flag(m: re.Match) -> str:
        return f"--{m.group(1).replace('_', '-')}" + (f" {m.group(2)}" if m.group(2) else "")

    return type(err)(SourceRef(err.source, err.row_kind), err.row, err.field, err.reason, code=err.code,
                     hint=_OPTION.sub(flag, err.hint))


if __name__ == "__main__":
    raise SystemExit(main())
