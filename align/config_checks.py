"""Type and range checks of the config keys each stage reads, before any work starts.

:func:`check_config` runs in every stage's command line (:func:`align.cli.stage_main`) before
``run(cfg)``: a wrong-typed, zero or negative value, a misspelt ``trainer.*`` key or a path that
is missing fails here with a :class:`align.errors.ConfigError` naming the key, the value seen and
the fix, instead of a torch/transformers error minutes later (or a run that does nothing). What is
checked (docs/configuration.md):

1. ``trainer.*``: every key against the fields of the class the stage passes it to
   (:data:`TRAINER_CLASSES`: ``TrainingArguments``, ``SFTConfig``, ``RewardConfig``,
   ``DPOConfig``): unknown keys (with the nearest valid name), the field's type (enums by their
   values), keys the stage sets itself (:data:`STAGE_SETS`: ``seed``, ``precision``, ``logger``...),
   and the ranges of :data:`TRAINER_RULES`.
2. Every other key against the stage's default config (``conf/<stage>.yaml`` composed without
   overrides): an int default takes an int, a float default an int or a float, a bool default a
   bool only, a string default a string or a number, a list a list; a null default takes anything.
   ``null`` is taken where the default is a string (a path or a choice: null turns it off) or the
   key is in :data:`NULLABLE`.
3. Ranges of :data:`RULES` (batch sizes, steps, iterations, lengths, rates...).
4. ``precision``: one of ``auto | fp32 | bf16 | fp16``, and fp16 only with CUDA.
5. A base model to build once (``model.materialize``, :func:`align.models.materialize.materialize_configured`),
   then paths and model limits: :func:`align.preflight.check_paths` and
   :func:`align.preflight.check_model_limits`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import fnmatch
import math
import types
import typing
from collections.abc import Callable

from align.errors import ConfigError

# The class each stage builds from ``trainer.*`` (rm: by ``rm.loss``).
TRAINER_CLASSES = {
    "pretrain": "transformers.TrainingArguments",
    "sft": "trl.SFTConfig",
    "rm": "transformers.TrainingArguments",  # rm.loss=pairwise: trl.RewardConfig
    "dpo": "trl.DPOConfig",
}

# trainer.* keys the stage passes itself (a second value is "got multiple values"): key -> the fix.
_COMMON_SETS = {
    "seed": "the top-level key: seed=<n>",
    "output_dir": "run=<name> or paths.output_root=<folder> (checkpoints go to <stage dir>/checkpoints)",
    "report_to": "logger=wandb | tensorboard | none",
    "bf16": "precision=bf16 (the top-level key: auto | fp32 | bf16 | fp16)",
    "fp16": "precision=fp16 (the top-level key: auto | fp32 | bf16 | fp16)",
    "use_cpu": "precision=fp32 (the stage sets use_cpu from the machine)",
    "deepspeed": "deepspeed=zero1 | zero2 | zero3 | zero3_offload",
    "logging_nan_inf_filter": "nothing: the NaN guard needs it off (align/trainer_guard.py)",
    "resume_from_checkpoint": "resume=true (the newest complete checkpoint of the same run)",
    "trust_remote_code": "model.trust_remote_code",
}
STAGE_SETS = {
    "pretrain": _COMMON_SETS,
    "sft": _COMMON_SETS,
    "rm": {**_COMMON_SETS, "remove_unused_columns": "nothing: the ranked trainer needs every column",
           "max_length": "data.max_length", "center_rewards_coefficient": "rm.center_rewards_coefficient"},
    "dpo": {**_COMMON_SETS, "beta": "dpo.beta", "max_length": "data.max_length (pairs are truncated by the stage)",
            "precompute_ref_log_probs": "dpo.reference=precomputed", "loss_type": "dpo.loss",
            "loss_weights": "dpo.loss", "label_smoothing": "dpo.label_smoothing"},
}


def _at_least(low: float, strict: bool = False) -> tuple[Callable[[float], bool], str]:
    return ((lambda v: v > low), f"> {low:g}") if strict else ((lambda v: v >= low), f">= {low:g}")


def _between(low: float, high: float, high_open: bool = False) -> tuple[Callable[[float], bool], str]:
    if high_open:
        return (lambda v: low <= v < high), f"in [{low:g}, {high:g})"
    return (lambda v: low <= v <= high), f"in [{low:g}, {high:g}]"


POSITIVE = _at_least(1)      # counts and sizes: 0 would do nothing (or divide by zero)
NON_NEGATIVE = _at_least(0)
ABOVE_ZERO = _at_least(0, strict=True)
FRACTION = _between(0, 1)

# Ranges of the non-trainer keys: (glob on the dotted key, (test, what it must be)). The first match wins.
RULES: list[tuple[str, tuple[Callable[[float], bool], str]]] = [
    ("seed", ((lambda v: 0 <= v < 2**32), "in [0, 2**32)")),
    ("*batch_size", POSITIVE),
    ("*max_new_tokens", POSITIVE),
    ("*max_length", POSITIVE),
    ("max_prompt_length", POSITIVE),
    ("data.block_size", POSITIVE),
    ("data.limit", POSITIVE),
    ("data.num_gold_prompts", NON_NEGATIVE),
    ("*num_samples_logged", NON_NEGATIVE),
    ("*num_prompts", POSITIVE),
    ("*num_test_prompts", POSITIVE),
    ("prompts.num_*", POSITIVE),
    ("prompts.passes_*", POSITIVE),
    ("generation.num_samples", POSITIVE),
    ("*temperature", ABOVE_ZERO),
    ("*top_p", ((lambda v: 0 < v <= 1), "in (0, 1]")),
    ("*top_k", NON_NEGATIVE),
    ("ppo.total_iterations", POSITIVE),
    ("ppo.ppo_epochs", POSITIVE),
    ("ppo.*_lr", ABOVE_ZERO),
    ("ppo.adam_eps", ABOVE_ZERO),
    ("ppo.max_grad_norm", ABOVE_ZERO),
    ("ppo.clip_range*", ABOVE_ZERO),
    ("ppo.gamma", FRACTION),
    ("ppo.lam", FRACTION),
    ("ppo.kl.target", ABOVE_ZERO),
    ("ppo.kl.horizon", POSITIVE),
    ("ppo.lora.r", POSITIVE),
    ("ppo.lora.lora_alpha", ABOVE_ZERO),
    ("ppo.lora.lora_dropout", _between(0, 1, high_open=True)),
    ("ppo.no_eos_penalty", ((lambda v: True), "")),
    ("ppo.*", NON_NEGATIVE),  # coefficients, weight decay, warm-up iterations
    ("eval.every", NON_NEGATIVE),
    ("checkpoint.every", NON_NEGATIVE),
    ("checkpoint.keep", POSITIVE),
    ("log_every", POSITIVE),
    ("rm.gate.*", FRACTION),
    ("rm.readout_layers", NON_NEGATIVE),
    ("rm.lm_coefficient", NON_NEGATIVE),
    ("rm.center_rewards_coefficient", NON_NEGATIVE),
    ("dpo.beta", ABOVE_ZERO),
    ("dpo.label_smoothing", _between(0, 0.5, high_open=True)),
    ("annotator.flip_rate", FRACTION),
    ("k", ((lambda v: 2 <= v <= 9), "in [2, 9] (responses per ranked list)")),
    ("num_policy_samples", NON_NEGATIVE),
    ("model.arch.*", POSITIVE),
    ("model.tokenizer.*", POSITIVE),
    ("forgetting.limit", POSITIVE),
    ("forgetting.max_length", POSITIVE),
    ("forgetting.batch_size", POSITIVE),
    ("peft.config.r", POSITIVE),
    ("peft.config.num_virtual_tokens", POSITIVE),
]

# Keys whose default is a number but that take null (documented in conf/ as "null: off").
NULLABLE = {"ppo.no_eos_penalty"}

# Groups not compared with the default: trainer.* has its own check; the rest are free-form
# (DeepSpeed JSON, PEFT constructor arguments incl. ppo.lora, Hydra's own settings, extra policy names).
FREE_FORM = {"trainer", "hydra", "deepspeed.config", "peft.config", "ppo.lora", "extra_policies", "resume_allow"}


def check_config(cfg) -> None:
    """Check a stage's composed config before any work: types, ranges, ``trainer.*`` keys,
    ``precision``, input/output paths and lengths against the model's limit.

    Args:
        cfg: The stage's config (``DictConfig``), as ``stages/<stage>.py`` receives it.

    Raises:
        ConfigError: Naming the key, the value seen and the fix.
    """
    from align.config import default_config, stage_output_dir, to_plain
    from align.models.materialize import materialize_configured
    from align.preflight import check_model_limits, check_paths

    plain = to_plain(cfg)
    stage = plain["stage"]
    check_values(plain, default_config(stage))
    materialize_configured(plain)
    check_paths(plain, stage_output_dir(cfg))
    check_model_limits(plain)


def check_values(plain: dict, default: dict) -> None:
    """Steps 1-4 of the module docstring on a resolved config (no file is read).

    Args:
        plain: The stage's config as plain containers (``stage`` names the stage).
        default: The stage's default config, the same way.
    """
    stage = plain["stage"]
    check_types(plain, default)
    if "trainer" in plain and stage in TRAINER_CLASSES:
        check_trainer(plain["trainer"] or {}, stage, trainer_class(stage, plain), default.get("trainer") or {})
    check_ranges(plain)
    if "precision" in plain:
        check_precision(plain["precision"])


# ----------------------------------------------------------------------------- types of the other groups


def check_types(plain: dict, default: dict, prefix: str = "") -> None:
    """Each key of ``plain`` that ``default`` also has must have a type its default allows."""
    for key, ref in default.items():
        name = f"{prefix}{key}"
        if key not in plain or name in FREE_FORM or ref is None:
            continue
        value = plain[key]
        if isinstance(ref, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}={value!r}: expected a group of keys ({', '.join(ref) or 'a mapping'}), "
                                  f"not a {_kind(value)}; set its keys, e.g. {name}.{next(iter(ref), 'key')}=...")
            check_types(value, ref, f"{name}.")
            continue
        if value is None and (isinstance(ref, str) or name in NULLABLE):
            continue
        if not _same_kind(ref, value):
            raise ConfigError(f"{name}={value!r} is not {_expected(ref)} (its default is {_example(ref)}); "
                              f"set e.g. {name}={_example(ref)}.")


def _same_kind(ref, value) -> bool:
    if isinstance(ref, bool):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if isinstance(ref, int):
        return isinstance(value, int)
    if isinstance(ref, float):
        return isinstance(value, (int, float))
    if isinstance(ref, str):
        return isinstance(value, (str, int, float))  # used as text (run=2)
    if isinstance(ref, list):
        return isinstance(value, list) or value is None
    return True


def _kind(value) -> str:
    return {bool: "bool", int: "integer", float: "number", str: "string", list: "list", dict: "group",
            type(None): "null"}.get(type(value), type(value).__name__)


def _expected(ref) -> str:
    if isinstance(ref, bool):
        return "true or false"
    if isinstance(ref, int):
        return "an integer"
    if isinstance(ref, float):
        return "a number"
    if isinstance(ref, list):
        return "a list"
    return "a string"


def _example(ref) -> str:
    if isinstance(ref, bool):
        return "true" if ref else "false"
    if isinstance(ref, list):
        return "[" + ",".join(str(x) for x in ref) + "]"
    return f"{ref:g}" if isinstance(ref, float) else str(ref)


# ----------------------------------------------------------------------------- ranges


def check_ranges(plain: dict) -> None:
    """Numbers under :data:`RULES` (the first matching rule), outside ``trainer.*``."""
    for name, value in _leaves(plain):
        if name.split(".")[0] in ("trainer", "hydra") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        rule = next((r for pattern, r in RULES if fnmatch.fnmatchcase(name, pattern)), None)
        if rule is not None and rule[1] and not (math.isfinite(value) and rule[0](value)):
            raise ConfigError(f"{name}={value!r} must be {rule[1]}; set {name} to a value {rule[1]}.")


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if name not in FREE_FORM or name == "peft.config":  # peft's r / num_virtual_tokens are ranged
                yield from _leaves(value, f"{name}.")
        else:
            yield name, value


# ----------------------------------------------------------------------------- trainer.*


def trainer_class(stage: str, plain: dict) -> type:
    """The dataclass ``trainer.*`` goes to in this stage (rm: RewardConfig for ``rm.loss=pairwise``)."""
    path = TRAINER_CLASSES[stage]
    if stage == "rm" and (plain.get("rm") or {}).get("loss") == "pairwise":
        path = "trl.RewardConfig"
    module, name = path.rsplit(".", 1)
    import importlib

    return getattr(importlib.import_module(module), name)


def check_trainer(trainer: dict, stage: str, cls: type, examples: dict | None = None) -> None:
    """Every ``trainer.*`` key: a field of ``cls``, not one the stage sets, of the field's type, in range.

    Args:
        trainer: The ``trainer`` group (plain).
        stage: The stage id (which keys it sets itself: :data:`STAGE_SETS`).
        cls: The dataclass the stage builds from it (:func:`trainer_class`).
        examples: The stage's default ``trainer`` values, for the fix in a message.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    where = f"{cls.__module__.split('.')[0]}.{cls.__name__}"
    sets = STAGE_SETS.get(stage, _COMMON_SETS)
    for key, value in trainer.items():
        name = f"trainer.{key}"
        if key in sets:
            raise ConfigError(f"{name} is set by the {stage} stage itself (a second value fails with 'got multiple "
                              f"values'); use {sets[key]}.")
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"did you mean trainer.{near[0]}?" if near else f"see the fields of {where}."
            raise ConfigError(f"{name} is not a {where} field (trainer.* goes to {where}); {hint}")
        hint = hints.get(key, typing.Any)
        if not _accepts(hint, value):
            raise ConfigError(f"{name}={value!r} is not {_describe(hint)} ({where}.{key}); "
                              f"set e.g. {name}={_field_example(fields[key], (examples or {}).get(key))}.")
    check_trainer_ranges({**{k: _default_of(f) for k, f in fields.items()}, **trainer}, set(trainer))


def _accepts(hint, value) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):  # __post_init__ converts the string: it must be a member's value
            return any(value in {m.value for m in e} for e in enums)
        return any(_accepts(a, value) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return hint in (object,)
    if hint is int:
        return isinstance(value, int)
    if hint is float:
        return isinstance(value, (int, float))
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value in {m.value for m in hint}
    if hint is list or origin is list:
        return isinstance(value, list) and (not args or all(_accepts(args[0], v) for v in value))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):  # a class no config value is (accelerate's ParallelismConfig): set in code only
        return isinstance(value, hint)
    return True


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:
            return "one of " + ", ".join(str(m.value) for e in enums for m in e)
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in hint)
    return {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(hint, "a list" if origin is list else "a mapping" if origin is dict
                                                     else f"a {getattr(hint, '__name__', hint)} object")


def _default_of(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _field_example(field: dataclasses.Field, default=None) -> str:
    default = _default_of(field) if default is None else default
    if isinstance(default, enum.Enum):
        default = default.value
    if default is None or default == "":
        return "..."
    return _example(default) if isinstance(default, (bool, int, float, list)) else f"{default}"


# trainer.* ranges (values of the class's defaults fill the keys the config leaves out).
TRAINER_RULES = {
    "learning_rate": ABOVE_ZERO,                 # 0 trains nothing and still writes final/
    "per_device_train_batch_size": POSITIVE,
    "per_device_eval_batch_size": POSITIVE,
    "gradient_accumulation_steps": POSITIVE,
    "eval_accumulation_steps": POSITIVE,
    "warmup_steps": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,               # 0: no clipping
    "weight_decay": NON_NEGATIVE,
    "adam_epsilon": ABOVE_ZERO,
    "adam_beta1": _between(0, 1, high_open=True),
    "adam_beta2": _between(0, 1, high_open=True),
    "label_smoothing_factor": _between(0, 1, high_open=True),
    "save_total_limit": POSITIVE,
    "dataloader_num_workers": NON_NEGATIVE,
    "dataset_num_proc": POSITIVE,
    "max_length": POSITIVE,
    "max_prompt_length": POSITIVE,
    "max_completion_length": POSITIVE,
}
_STEPS = {"logging_steps": "logging_strategy", "save_steps": "save_strategy", "eval_steps": "eval_strategy"}


def check_trainer_ranges(args: dict, given: set[str]) -> None:
    """Ranges of the ``trainer.*`` values (``args``: the class defaults updated by the config)."""
    for key, (test, what) in TRAINER_RULES.items():
        value = args.get(key)
        if key in given and isinstance(value, (int, float)) and not isinstance(value, bool) and not test(value):
            raise ConfigError(f"trainer.{key}={value!r} must be {what}; set trainer.{key} to a value {what}.")
    steps, epochs = args.get("max_steps", -1), args.get("num_train_epochs", 1)
    if steps == 0 or steps < -1:
        raise ConfigError(f"trainer.max_steps={steps} must be -1 (train for trainer.num_train_epochs) or >= 1.")
    if steps < 1 and not epochs > 0:
        raise ConfigError(f"trainer.num_train_epochs={epochs!r} trains nothing (trainer.max_steps={steps}); "
                          "set trainer.num_train_epochs > 0 or trainer.max_steps >= 1.")
    for key, strategy_key in _STEPS.items():
        value, strategy = args.get(key), args.get(strategy_key)
        strategy = getattr(strategy, "value", strategy)
        if strategy != "steps" or value is None:
            continue
        if not (0 < value < 1 or (value >= 1 and float(value).is_integer())):
            raise ConfigError(f"trainer.{key}={value!r} with trainer.{strategy_key}=steps must be a whole number "
                              f">= 1 (or a fraction in (0, 1) of the total steps); 0 would never "
                              f"{'log' if key == 'logging_steps' else 'save' if key == 'save_steps' else 'evaluate'}. "
                              f"Set trainer.{key}>=1, or trainer.{strategy_key}=no.")


# ----------------------------------------------------------------------------- precision


def check_precision(precision) -> None:
    """``precision`` (the top-level key) is one of :data:`align.models.precision.PRECISIONS`;
    fp16 needs CUDA (on CPU transformers would silently train in fp32)."""
    from align.models.precision import PRECISIONS

    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("precision=fp16 needs a CUDA GPU: on CPU transformers ignores fp16 silently and trains "
                              "in fp32. Use precision=fp32 (the CPU default) or precision=bf16.")
