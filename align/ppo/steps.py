"""The PPO loop's training backend: plain torch in one process, or DeepSpeed engines.

:func:`make_steps` picks the backend once, :class:`LocalSteps` without DeepSpeed and
:class:`DeepSpeedSteps` under ``deepspeed=zero1|zero2|zero3``. After that ``stages/ppo.py`` calls
the same methods either way and never asks which backend it runs on:

    build(...)                    (classmethod, via make_steps) optimizers and schedulers, or engines
                                  wrapping policy and value (the frozen models partitioned under ZeRO-3)
    load(folder)                  resume: restore the checkpoint ``folder``; returns its state
    seed_sampling(seed, it, B)    before each rollout: this process's sampling stream
    before_forward(which)         before each training forward pass of ``policy`` or ``value``
    backward(which, loss, last)   accumulate a gradient into ``policy`` or ``value``
    micro_done(it)                after each micro-batch
    minibatch_done(it)            after each minibatch: the optimizer step (refused when a gradient
                                  norm is not finite: :class:`align.errors.NonFiniteError`)
    lr()                          the policy's current learning rate
    save_checkpoint(dir, it, state, keep, run)   the backend's part of a checkpoint, plus ``state``,
                                  and the run's marker last (refused with non-finite weights)
    monitors                      whether this process runs the monitor's forward passes
    finish(...)                   end of training: the models to evaluate on rank 0, ``None`` elsewhere
    save_final(models, tok, dir)  ``final/`` on rank 0 (ZeRO-3: ``finish`` already gathered it)

A loss handed to ``backward`` is this process's share of the minibatch's loss, already weighted
(its token share of the *whole* minibatch, over every process). ``scale`` is what that share must
be multiplied by for the engine's own averaging: ``1`` for plain torch; ``processes x
accumulation steps`` under DeepSpeed, whose engine divides by both.

Checkpoints (:mod:`align.ppo.checkpoint`, no pickle): :class:`LocalSteps` writes the trainable
weights, optimizers, schedulers and RNG states (``tensors.safetensors`` + ``state.json``);
:class:`DeepSpeedSteps` writes each engine's shards next to a ``state.json`` without them. Each
refuses to resume the other's.

Non-finite values: :class:`LocalSteps` checks both models' gradient norms (the ones clipping
computes) before the optimizer steps; :class:`DeepSpeedSteps` reads each engine's global gradient
norm after its step (the engine steps inside ``engine.step()``; the weights it has then changed are
never saved: the run stops). Weights are checked before every checkpoint and ``final/``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from align.checkpoints import free_space_hint
from align.distributed import consolidated_state_dict, is_main_process, partition_report, write_rank_report
from align.errors import CheckpointError, NonFiniteError
from align.models.adapters import save_full_final
from align.models.precision import precision_args
from align.ppo import checkpoint as ckpt
from align.ppo.distributed import DataParallel, fill_config, wrap_frozen, wrap_trainable
from align.ppo.models import PPOModels, frozen
from align.ppo.seeded_sampling import row_seed
from align.trainer_guard import check_finite_weights, first_non_finite

log = logging.getLogger(__name__)
MODELS = ("policy", "value")  # the trainable ones, in the order every process builds and steps them


def make_steps(models: PPOModels, dp: DataParallel, *, policy_lr: float, value_lr: float, eps: float,
               weight_decay: float, max_grad_norm: float, schedule: Callable[[int], float], micro: int,
               accumulation: int, precision: str, device: torch.device) -> LocalSteps | DeepSpeedSteps:
    """The backend for ``dp``: :class:`DeepSpeedSteps` when it carries a DeepSpeed config, else
    :class:`LocalSteps`.

    Args:
        models: The loaded models; under DeepSpeed they then hold the engines' modules.
        dp: The processes (:func:`align.ppo.distributed.setup_data_parallel`).
        policy_lr, value_lr, eps, weight_decay: AdamW's hyperparameters of each model.
        max_grad_norm: Gradient clipping, per model.
        schedule: The learning-rate multiplier per optimizer step (:func:`lr_lambda`).
        micro, accumulation: This process's micro-batch size and micro-batches per optimizer step
            (the DeepSpeed engines' batch configuration; plain torch steps once per minibatch anyway).
        precision, device: bf16 engines on CUDA when ``precision`` resolves to bf16.
    """
    lr = {"policy": policy_lr, "value": value_lr}
    if dp.deepspeed:
        bf16 = device.type == "cuda" and precision_args(precision)["bf16"]
        return DeepSpeedSteps.build(models, dp, lr, eps, weight_decay, max_grad_norm, schedule, micro, accumulation,
                                    bf16)
    return LocalSteps.build(models, lr, eps, weight_decay, max_grad_norm, schedule)


def lr_lambda(kind: str, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier of optimizer step ``step``: ``constant`` (1) or ``linear`` (1 to 0
    over ``total_steps``), for ``torch.optim.lr_scheduler.LambdaLR``."""
    if kind == "constant":
        return lambda step: 1.0
    if kind == "linear":
        return lambda step: max(0.0, 1.0 - step / max(1, total_steps))
    raise ValueError(f"ppo.lr_scheduler={kind!r} is not one of constant, linear.")


def autocast_context(precision: str, device: torch.device):
    """The loop's mixed-precision context: bf16 autocast (CUDA, or CPU, where avx512_bf16/AMX make it
    pay: 1.6-2x fp32 at 135M, bench/real_model_speed.py) when ``precision`` resolves to bf16, else
    none (fp32). The context object is reused for every ``with`` block of the run.

    Raises:
        ValueError: For fp16, which would need loss scaling the loop does not do.
    """
    args = precision_args(precision)
    if args["bf16"]:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if args["fp16"]:
        raise ValueError("ppo: precision=fp16 is not supported (no loss scaling in the loop); use bf16 or fp32.")
    return contextlib.nullcontext()


STAGE = "ppo"


def _other_backend(folder: Path, how: str) -> CheckpointError:
    return CheckpointError(f"{folder}: the checkpoint was written {how} DeepSpeed; resume it the same way "
                           "(deepspeed=...).")


def _check_finite_norm(which: str, norm, iteration: int) -> None:
    value = float(norm)
    if not math.isfinite(value):
        raise NonFiniteError(STAGE, iteration, f"{which} gradient norm", value)


def _save_final(models: PPOModels, tokenizer, out_dir: Path, iteration: int | str = "final") -> None:
    """``final/``: full weights that plain transformers loads; lora mode also keeps ``final_adapter/``.
    Refused when a weight is not finite; a failed write (disk full) is a :class:`CheckpointError`."""
    check_finite_weights(models.policy, STAGE, iteration, "policy weights of final/")
    try:
        save_full_final(models.policy, tokenizer, out_dir, "lora" if models.mode == "lora" else "none")
    except OSError as err:
        raise CheckpointError(f"ppo: writing {Path(out_dir) / 'final'} failed: "
                              f"{free_space_hint(Path(out_dir) / 'final', err)}") from err


def _check_checkpoint_weights(models: PPOModels, iteration: int) -> None:
    for which in MODELS:
        check_finite_weights(getattr(models, which), STAGE, iteration, f"{which} weights of the checkpoint")


class LocalSteps:
    """One process, plain torch: AdamW and ``LambdaLR`` per model, clipping, one step per minibatch."""

    scale = 1.0
    world = 1

    def __init__(self, models: PPOModels, optimizers: dict, schedulers: dict, max_grad_norm: float):
        self.models, self.optimizers, self.schedulers = models, optimizers, schedulers
        self.max_grad_norm = max_grad_norm

    @classmethod
    def build(cls, models: PPOModels, lr: dict[str, float], eps: float, weight_decay: float, max_grad_norm: float,
              schedule: Callable[[int], float]) -> LocalSteps:
        """AdamW (learning rate ``lr[name]``) and a ``LambdaLR(schedule)`` for each trainable model."""
        opts = {which: torch.optim.AdamW(models.trainable(which), lr=lr[which], eps=eps, weight_decay=weight_decay)
                for which in MODELS}
        return cls(models, opts, {k: torch.optim.lr_scheduler.LambdaLR(o, schedule) for k, o in opts.items()},
                   max_grad_norm)

    @property
    def monitors(self) -> bool:
        return is_main_process()

    def seed_sampling(self, seed: int, iteration: int, batch_size: int) -> None:
        pass  # one stream for the whole run, from the stage's seed (a resumed run restores it)

    def before_forward(self, which: str) -> None:
        pass

    def backward(self, which: str, loss: torch.Tensor, last: bool = True) -> None:
        loss.backward()  # at once: only one loss's activations are alive at a time

    def micro_done(self, iteration: int = 0) -> None:
        pass

    def minibatch_done(self, iteration: int = 0) -> None:
        """Clip each model's gradient, refuse a non-finite norm (before either model steps), step.

        Raises:
            NonFiniteError: A gradient norm is NaN or inf (``iteration`` names where).
        """
        for which in self.optimizers:
            model = self.models.policy if which == "policy" else self.models.value
            norm = torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], self.max_grad_norm)
            _check_finite_norm(which, norm, iteration)
        for which, opt in self.optimizers.items():
            opt.step()
            self.schedulers[which].step()
            opt.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.schedulers["policy"].get_last_lr()[0]

    def state_dict(self) -> dict:
        return {"opt_policy": self.optimizers["policy"].state_dict(), "opt_value": self.optimizers["value"].state_dict(),
                "sched_policy": self.schedulers["policy"].state_dict(), "sched_value": self.schedulers["value"].state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for which in MODELS:
            self.optimizers[which].load_state_dict(state[f"opt_{which}"])
            self.schedulers[which].load_state_dict(state[f"sched_{which}"])

    def save_checkpoint(self, checkpoint_dir: Path, iteration: int, state: dict[str, Any], keep: int,
                        run=None) -> None:
        """``iter_<iteration>/``: trainable weights, optimizers, schedulers, RNG states and ``state``,
        then ``run``'s marker (:class:`align.checkpoints.RunState`).

        Raises:
            NonFiniteError: A weight is not finite (nothing is written).
            CheckpointError: The write failed (disk full); the previous checkpoints are intact.
        """
        _check_checkpoint_weights(self.models, iteration)
        ckpt.save_checkpoint(checkpoint_dir, iteration, {
            "policy": ckpt.trainable_state(self.models.policy), "value": ckpt.trainable_state(self.models.value),
            **self.state_dict(), **state}, keep=keep, run=run)

    def load(self, folder: Path) -> dict[str, Any]:
        """Restore weights, optimizers, schedulers and RNG states from the checkpoint ``folder``
        and return its state.

        Raises:
            CheckpointError: A damaged or legacy checkpoint, or one written under DeepSpeed.
        """
        state = ckpt.read_state(folder)
        if state.get("backend") != "local":
            raise _other_backend(folder, "under")
        ckpt.load_trainable_state(self.models.policy, state["policy"])
        ckpt.load_trainable_state(self.models.value, state["value"])
        self.load_state_dict(state)
        ckpt.set_rng_state(state["rng"])
        return state

    def finish(self, out_dir: Path, tokenizer, policy_path: str, rm_path: str, device) -> PPOModels:
        return self.models

    def save_final(self, models: PPOModels, tokenizer, out_dir: Path) -> None:
        _save_final(models, tokenizer, out_dir)


class DeepSpeedSteps:
    """DeepSpeed engines: the engine reduces gradients, accumulates, clips and steps.

    An engine takes one ``backward`` per micro-batch, so the policy's loss terms (PPO, then
    PPO-ptx) are summed first and backpropagated once, on ``last``.
    """

    def __init__(self, models: PPOModels | None, engines: dict, dp: DataParallel, accumulation: int):
        self.models, self.engines, self.dp = models, engines, dp
        self.world = dp.world
        self.scale = float(dp.world * accumulation)
        self._pending: dict[str, torch.Tensor] = {}
        self._stepped: list[str] = []  # in a fixed order: every process must step the engines alike

    @classmethod
    def build(cls, models: PPOModels, dp: DataParallel, lr: dict[str, float], eps: float, weight_decay: float,
              max_grad_norm: float, schedule: Callable[[int], float], micro: int, accumulation: int,
              bf16: bool) -> DeepSpeedSteps:
        """Wrap the policy and value model in engines (our AdamW and ``schedule``, or the config's
        optimizer block) and, under ZeRO-3, partition the frozen reference and reward model;
        ``models`` then holds the engines' modules."""
        hidden = models.policy.config.hidden_size

        def config(rate: float) -> dict:
            return fill_config(dp.config, micro=micro, accumulation=accumulation, world=dp.world,
                               max_grad_norm=max_grad_norm, hidden_size=hidden, bf16=bf16,
                               optimizer={"lr": rate, "betas": [0.9, 0.999], "eps": eps, "weight_decay": weight_decay})

        engines = {which: wrap_trainable(getattr(models, which), config(lr[which]), lr[which], eps, weight_decay, schedule)
                   for which in MODELS}
        models.policy, models.value = engines["policy"].module, engines["value"].module
        if models.mode == "full":
            models.ref_model = wrap_frozen(models.ref_model, config(lr["policy"]))
            models.reward_model = wrap_frozen(models.reward_model, config(lr["policy"]))
        log.info("DeepSpeed ZeRO-%d on %d processes: per process minibatch %d, micro-batch %d",
                 dp.zero, dp.world, micro * accumulation, micro)
        return cls(models, engines, dp, accumulation)

    @property
    def monitors(self) -> bool:
        # Every process joins the monitor under ZeRO-3 (each forward pass gathers weights); rank 0 alone otherwise.
        return is_main_process() or self.dp.zero == 3

    def seed_sampling(self, seed: int, iteration: int, batch_size: int) -> None:
        """Each process's sampling stream is a function of (seed, iteration, rank): the row seeds
        after the batch's ``batch_size`` rollouts, one per process."""
        torch.manual_seed(row_seed(seed, iteration, batch_size + self.dp.rank))

    def before_forward(self, which: str) -> None:
        """What ``engine.forward`` does first. The loop calls the engine's module (and the value
        model's body and head) directly, so it must do it: without it, DeepSpeed 0.19's ZeRO-3
        takes the second micro-batch's backward for a repeat of the first, and gradient
        accumulation computes a different gradient (seen here: update cosine -0.17 against
        accumulation steps = 1; ZeRO-2 is unaffected)."""
        clear = getattr(self.engines[which].optimizer, "clear_backward_seen_flag", None)
        if clear is not None:
            clear()

    def backward(self, which: str, loss: torch.Tensor, last: bool = True) -> None:
        total = self._pending.pop(which, None)
        total = loss if total is None else total + loss
        if not last:
            self._pending[which] = total
            return
        self.engines[which].backward(total)
        if which not in self._stepped:
            self._stepped.append(which)

    def micro_done(self, iteration: int = 0) -> None:
        """Each engine's ``step()`` (the optimizer step at an accumulation boundary), then its
        global gradient norm: a non-finite one stops the run (after the engine's step, which
        DeepSpeed takes inside ``step()``; nothing of it is saved)."""
        if self._pending:
            raise RuntimeError(f"DeepSpeedSteps: loss terms of {sorted(self._pending)} were never backpropagated.")
        for which in sorted(self._stepped):  # a model without a backward (critic warm-up) takes no step
            engine = self.engines[which]
            engine.step()
            norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
            if norm is not None:
                _check_finite_norm(which, norm, iteration)
        self._stepped.clear()

    def minibatch_done(self, iteration: int = 0) -> None:
        pass  # engine.step() at the last micro-batch of the accumulation steps is the optimizer step

    def lr(self) -> float:
        return self.engines["policy"].get_lr()[0]

    def save_checkpoint(self, checkpoint_dir: Path, iteration: int, state: dict[str, Any], keep: int,
                        run=None) -> None:
        """Each engine's shards (every process writes its own), ``state.json`` with ``state`` and
        ``run``'s marker; a collective. This process's weights are checked first (under ZeRO-3 each
        holds only its partition)."""
        _check_checkpoint_weights(self.models, iteration)
        ckpt.save_engine_checkpoint(checkpoint_dir, iteration, self.engines, state, keep, self.dp, run=run)

    def load(self, folder: Path) -> dict[str, Any]:
        """Restore every engine from the checkpoint ``folder`` and return its ``state.json``; a
        collective. The sampling streams need no restoring (:meth:`seed_sampling`). DeepSpeed reads
        its own shards with ``torch.load(weights_only=False)``: see :mod:`align.ppo.checkpoint`.

        Raises:
            CheckpointError: A damaged or legacy checkpoint, or one written without DeepSpeed.
        """
        state = ckpt.read_state(folder)  # first: a legacy or local checkpoint is refused before DeepSpeed reads it
        if state.get("backend") != "deepspeed":
            raise _other_backend(folder, "without")
        for name, engine in self.engines.items():
            path, _ = engine.load_checkpoint(str(folder), tag=name)
            if path is None:
                raise CheckpointError(f"{Path(folder) / name}: no DeepSpeed checkpoint of the {name} model.")
        return state

    def finish(self, out_dir: Path, tokenizer, policy_path: str, rm_path: str, device) -> PPOModels | None:
        """End of training, on every process: write this process's partition report; under ZeRO-3
        gather the policy's shards into ``final/`` (a normal Hugging Face folder) and give rank 0
        plain models reloaded from the folders. Returns the models on rank 0, ``None`` elsewhere."""
        report = {"rank": self.dp.rank, "world_size": self.dp.world, "zero_stage": self.dp.zero,
                  **{name: partition_report(engine) for name, engine in self.engines.items()}}
        write_rank_report(out_dir, report)
        if self.dp.zero == 3:
            state = consolidated_state_dict(self.engines["policy"])  # a collective; whole on rank 0
            if is_main_process():
                final = Path(out_dir) / "final"
                bad = first_non_finite(state.items())
                if bad is not None:
                    raise NonFiniteError(STAGE, "final", f"policy weights of final/ ({bad[0]})", bad[1])
                try:
                    self.models.policy.save_pretrained(final, state_dict=state, safe_serialization=True)
                    tokenizer.save_pretrained(final)
                except OSError as err:
                    raise CheckpointError(f"ppo: writing {final} failed: {free_space_hint(final, err)}") from err
                log.info("ZeRO-3 policy consolidated into %s; reloading it as a plain model", final)
        self.dp.barrier()
        if not is_main_process():
            return None
        if self.dp.zero != 3:
            return self.models
        from align.models.loading import load_causal_lm
        from align.rm.folder import load_reward_model

        return PPOModels("full", frozen(load_causal_lm(str(Path(out_dir) / "final"), torch.float32).to(device)),
                         None, frozen(load_causal_lm(policy_path, torch.float32).to(device)),
                         load_reward_model(rm_path, tokenizer.pad_token_id, torch.float32, device))

    def save_final(self, models: PPOModels, tokenizer, out_dir: Path) -> None:
        if self.dp.zero != 3:  # ZeRO-3: finish() wrote final/ from the shards
            _save_final(models, tokenizer, out_dir)
