"""KL-coefficient controllers: the ``beta`` of the KL penalty in the shaped reward.

Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", sec. 2.2) vary ``beta``
to hold the policy's KL from the reference model near a target; InstructGPT (Ouyang et al. 2022)
keeps it fixed. TRL <= 1.12 ``AdaptiveKLController``/``FixedKLController`` follow the same rule.

Units: ``current_kl`` is the batch mean of the per-response KL, summed over its tokens
(``kl.sum(1).mean()`` with ``kl`` from :func:`align.ppo.advantages.kl_penalized_rewards`), in nats;
``target`` is in the same units (TRL's default 6, Ziegler et al. used 6 to 10).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

KL_CONTROLLER_KINDS = ("fixed", "adaptive")


class KLController(Protocol):
    """What the PPO loop needs of a controller: the current coefficient and a per-step update."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FixedKLController:
    """A constant KL coefficient (InstructGPT's choice).

    Args:
        kl_coef: ``beta``, ``>= 0`` (0 turns the penalty off).
    """

    def __init__(self, kl_coef: float) -> None:
        self.value = _check_coef("FixedKLController", "kl_coef", kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Does nothing: the coefficient is fixed. Same signature as the adaptive controller."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = _check_coef("FixedKLController.load_state_dict", "value", state["value"])


class AdaptiveKLController:
    """Proportional control of ``beta`` towards a target KL (Ziegler et al. 2019, sec. 2.2).

    ``e = clip(current_kl / target - 1, -0.2, 0.2)`` and ``beta <- beta * (1 + e * n_steps / horizon)``:
    ``beta`` grows when the policy drifts past the target and shrinks below it, by at most
    ``0.2 * n_steps / horizon`` per update, so one noisy batch cannot swing it.

    Args:
        init_kl_coef: Initial ``beta``, ``>= 0``.
        target: Target KL in nats per response, ``> 0``.
        horizon: ``K_beta``'s inverse, in samples (rollouts); ``> 0``. TRL's default is 10000.
    """

    ERROR_CLIP = 0.2

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = _check_coef("AdaptiveKLController", "init_kl_coef", init_kl_coef)
        for name, x in (("target", target), ("horizon", horizon)):
            if not (math.isfinite(x) and x > 0):
                raise ValueError(f"AdaptiveKLController: {name} must be a positive number, got {x}.")
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move ``value`` after a batch.

        Args:
            current_kl: Mean per-response KL of the batch (nats, summed over tokens).
            n_steps: Rollouts in the batch (Ziegler et al.'s and TRL's ``n_steps``).

        Raises:
            ValueError: If ``current_kl`` is not finite (it would poison ``value`` for good) or
                ``n_steps`` is negative.
        """
        current_kl = float(current_kl)
        if not math.isfinite(current_kl):
            raise ValueError(f"AdaptiveKLController.update: current_kl must be finite, got {current_kl}.")
        if n_steps < 0:
            raise ValueError(f"AdaptiveKLController.update: n_steps must be >= 0, got {n_steps}.")
        error = min(max(current_kl / self.target - 1.0, -self.ERROR_CLIP), self.ERROR_CLIP)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        """The state to checkpoint: the current coefficient (target and horizon come from the config)."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = _check_coef("AdaptiveKLController.load_state_dict", "value", state["value"])


def make_kl_controller(kind: str, **kwargs: Any) -> KLController:
    """Build a controller from a config: ``kind="fixed"`` takes ``kl_coef``; ``kind="adaptive"``
    takes ``init_kl_coef``, ``target`` and ``horizon``.

    Raises:
        ValueError: On an unknown ``kind``.
        TypeError: On arguments the chosen controller does not take, naming the ones it does.
    """
    if kind == "fixed":
        cls, expected = FixedKLController, "kl_coef"
    elif kind == "adaptive":
        cls, expected = AdaptiveKLController, "init_kl_coef, target, horizon"
    else:
        raise ValueError(f"make_kl_controller: kind must be one of {KL_CONTROLLER_KINDS}, got {kind!r}.")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TypeError(
            f"make_kl_controller: kind={kind!r} takes {expected}; got {sorted(kwargs)} ({err})."
        ) from err


def controller_options(kl: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the controller ``kl["kind"]`` names, picked from a block that holds
    every kind's options (``conf/ppo.yaml``'s ``ppo.kl``): ``kl_coef`` for ``fixed``, else
    ``init_kl_coef``, ``target`` and ``horizon`` (an unknown kind is refused by
    :func:`make_kl_controller`)."""
    if kl["kind"] == "fixed":
        return {"kl_coef": kl["kl_coef"]}
    return {"init_kl_coef": kl["init_kl_coef"], "target": kl["target"], "horizon": kl["horizon"]}


def _check_coef(owner: str, name: str, x: float) -> float:
    x = float(x)
    if not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {x}.")
    return x
