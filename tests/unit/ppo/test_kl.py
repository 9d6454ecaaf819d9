"""KL controllers: hand-computed factors (Ziegler et al. 2019, sec. 2.2)."""

import pytest

from align.ppo.kl import AdaptiveKLController, FixedKLController, controller_options, make_kl_controller


def test_fixed_never_changes():
    ctl = FixedKLController(0.05)
    for kl in (0.0, 6.0, 1e3):
        ctl.update(kl, n_steps=512)
    assert ctl.value == 0.05


@pytest.mark.parametrize(
    ("current_kl", "expected"),
    [
        # target 6, horizon 10000, n_steps 1000 -> factor = 1 + e * 0.1
        (6.6, 0.101),  # e = 6.6 / 6 - 1 = 0.1            -> 0.1 * 1.01 = 0.101  (KL above: up)
        (7.2, 0.102),  # e = 7.2 / 6 - 1 = 0.2            -> 0.1 * 1.02 = 0.102
        (60.0, 0.102),  # e = 9, clipped to 0.2           -> 0.1 * 1.02 = 0.102
        (5.4, 0.099),  # e = 5.4 / 6 - 1 = -0.1           -> 0.1 * 0.99 = 0.099  (KL below: down)
        (0.0, 0.098),  # e = -1, clipped to -0.2          -> 0.1 * 0.98 = 0.098
        (6.0, 0.1),  # on target: e = 0                   -> unchanged
    ],
)
def test_adaptive_hand_worked(current_kl, expected):
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl, n_steps=1000)
    assert ctl.value == pytest.approx(expected, rel=1e-12)


def test_adaptive_compounds_and_scales_with_n_steps():
    # Two updates at e = 0.2 with n_steps 5000: factor 1 + 0.2 * 0.5 = 1.1 each -> 0.1 * 1.21 = 0.121
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(100.0, 5000)
    ctl.update(100.0, 5000)
    assert ctl.value == pytest.approx(0.121)
    ctl.update(100.0, 0)  # no samples, no change
    assert ctl.value == pytest.approx(0.121)


def test_state_dict_round_trip():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(7.2, 1000)
    resumed = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed.value == ctl.value == pytest.approx(0.102)
    ctl.update(3.0, 1000)
    resumed.update(3.0, 1000)
    assert resumed.value == ctl.value
    fixed = FixedKLController(0.3)
    other = FixedKLController(0.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.3


def test_make_kl_controller():
    assert isinstance(make_kl_controller("fixed", kl_coef=0.05), FixedKLController)
    ctl = make_kl_controller("adaptive", init_kl_coef=0.2, target=6, horizon=10000)
    assert isinstance(ctl, AdaptiveKLController) and ctl.value == 0.2
    with pytest.raises(ValueError, match="'fixed', 'adaptive'"):
        make_kl_controller("Adaptive", init_kl_coef=0.2, target=6, horizon=10000)
    with pytest.raises(TypeError, match="init_kl_coef, target, horizon"):
        make_kl_controller("adaptive", kl_coef=0.2)


def test_controller_errors():
    with pytest.raises(ValueError, match="kl_coef"):
        FixedKLController(-0.1)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=10000)
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(0.1, target=6.0, horizon=-1)
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    with pytest.raises(ValueError, match="finite"):
        ctl.update(float("nan"), 1000)
    assert ctl.value == 0.1


def test_controller_options_pick_the_chosen_kinds_keys_from_the_config_block():
    block = {"kind": "adaptive", "init_kl_coef": 0.2, "target": 1.0, "horizon": 2000, "kl_coef": 0.05}
    assert controller_options(block) == {"init_kl_coef": 0.2, "target": 1.0, "horizon": 2000}
    assert make_kl_controller("adaptive", **controller_options(block)).value == 0.2
    fixed = {**block, "kind": "fixed"}
    assert controller_options(fixed) == {"kl_coef": 0.05}
    assert make_kl_controller("fixed", **controller_options(fixed)).value == 0.05
