"""Backward passes and optimizer steps of the policy and value model, plain or under DeepSpeed.

The PPO update calls the same four methods either way:

    before_forward(which)         before each training forward pass of ``policy`` or ``value``
    backward(which, loss, last)   accumulate a gradient into ``policy`` or ``value``
    micro_done()                  after each micro-batch
    minibatch_done()              after each minibatch: the optimizer step
    lr()                          the policy's current learning rate

A loss handed to ``backward`` is this process's share of the minibatch's loss, already weighted
(its token share of the *whole* minibatch, over every process). ``scale`` is what that share must
be multiplied by for the engine's own averaging: ``1`` for plain torch; ``processes x
accumulation steps`` under DeepSpeed, whose engine divides by both.
"""

from __future__ import annotations

import torch


class LocalSteps:
    """One process, plain torch: AdamW and ``LambdaLR`` per model, clipping, one step per minibatch."""

    scale = 1.0
    world = 1

    def __init__(self, models, optimizers: dict, schedulers: dict, max_grad_norm: float):
        self.models, self.optimizers, self.schedulers = models, optimizers, schedulers
        self.max_grad_norm = max_grad_norm

    def before_forward(self, which: str) -> None:
        pass

    def backward(self, which: str, loss: torch.Tensor, last: bool = True) -> None:
        loss.backward()  # at once: only one loss's activations are alive at a time

    def micro_done(self) -> None:
        pass

    def minibatch_done(self) -> None:
        for which, opt in self.optimizers.items():
            model = self.models.policy if which == "policy" else self.models.value
            torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], self.max_grad_norm)
            opt.step()
            self.schedulers[which].step()
            opt.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.schedulers["policy"].get_last_lr()[0]

    def state_dict(self) -> dict:
        return {"opt_policy": self.optimizers["policy"].state_dict(), "opt_value": self.optimizers["value"].state_dict(),
                "sched_policy": self.schedulers["policy"].state_dict(), "sched_value": self.schedulers["value"].state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for which in ("policy", "value"):
            self.optimizers[which].load_state_dict(state[f"opt_{which}"])
            self.schedulers[which].load_state_dict(state[f"sched_{which}"])


class DeepSpeedSteps:
    """DeepSpeed engines: the engine reduces gradients, accumulates, clips and steps.

    An engine takes one ``backward`` per micro-batch, so the policy's loss terms (PPO, then
    PPO-ptx) are summed first and backpropagated once, on ``last``.
    """

    def __init__(self, engines: dict, world: int, accumulation: int):
        self.engines = engines
        self.world = world
        self.scale = float(world * accumulation)
        self._pending: dict[str, torch.Tensor] = {}
        self._stepped: list[str] = []  # in a fixed order: every process must step the engines alike

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

    def micro_done(self) -> None:
        if self._pending:
            raise RuntimeError(f"DeepSpeedSteps: loss terms of {sorted(self._pending)} were never backpropagated.")
        for which in sorted(self._stepped):  # a model without a backward (critic warm-up) takes no step
            self.engines[which].step()
        self._stepped.clear()

    def minibatch_done(self) -> None:
        pass  # engine.step() at the last micro-batch of the accumulation steps is the optimizer step

    def lr(self) -> float:
        return self.engines["policy"].get_lr()[0]
