"""Entropy-control strategies (DESIGN §1): hand-computed trajectories and hypothesis property tests."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aerplane.core.strategies import (
    PARAM_BOUNDS,
    PARAM_HELP,
    STRATEGY_DEFAULTS,
    STRATEGY_NAMES,
    StrategyState,
    build_strategy,
    format_param,
    parse_param,
)


def run(strategy, entropies):
    state = strategy.initial_state()
    for h in entropies:
        state = strategy.observe(state, entropy=h)
    return state


# --- hand-computed trajectories
def test_aer_defaults_anchor_then_move():
    s = build_strategy("aer")
    st0 = s.initial_state()
    assert (st0.alpha, st0.step, st0.initial_entropy, st0.target_entropy, st0.last_entropy) == (
        0.0,
        0,
        None,
        None,
        None,
    )
    st1 = s.observe(st0, entropy=2.0)  # anchoring: H0 = 2, H* = 0.5 * 2 = 1, α stays 0
    assert (st1.alpha, st1.step, st1.initial_entropy, st1.target_entropy, st1.last_entropy) == (0.0, 1, 2.0, 1.0, 2.0)
    st2 = s.observe(st1, entropy=0.5)  # α = 0 + 1e-3 * (1 - 0.5) / 1 = 5e-4
    assert st2.alpha == pytest.approx(5e-4, abs=1e-15)
    assert s.coefficient(st2) == pytest.approx(5e-4, abs=1e-15)
    st3 = s.observe(st2, entropy=1.5)  # α = 5e-4 + 1e-3 * (1 - 1.5) / 1 = 0
    assert st3.alpha == pytest.approx(0.0, abs=1e-15)
    st4 = s.observe(st3, entropy=3.0)  # α = 0 - 2e-3 → clipped to α_min = 0
    assert st4.alpha == 0.0
    assert st4.step == 4 and st4.initial_entropy == 2.0 and st4.target_entropy == 1.0


def test_aer_anchor_steps_average_and_alpha_waits():
    s = build_strategy("aer", anchor_steps=2, alpha_init=0.005, rho=0.25)
    state = run(s, [1.0])
    assert state.initial_entropy is None and state.target_entropy is None and state.alpha == 0.005
    state = s.observe(state, entropy=3.0)  # H0 = (1 + 3) / 2 = 2, H* = 0.25 * 2 = 0.5, α still 0.005
    assert (state.initial_entropy, state.target_entropy, state.alpha) == (2.0, 0.5, 0.005)
    state = s.observe(state, entropy=0.0)  # α = 0.005 + 1e-3 * (0.5 - 0) / 0.5 = 0.006
    assert state.alpha == pytest.approx(0.006, abs=1e-15)


def test_aer_clips_at_alpha_max():
    s = build_strategy("aer", eta=0.1, alpha_max=0.01)
    state = run(s, [2.0, 0.0])  # α = 0 + 0.1 * (1 - 0) / 1 = 0.1 → 0.01
    assert state.alpha == 0.01


def test_aer_absolute_target():
    s = build_strategy("aer", target_entropy=0.8, rho=0.1)
    state = run(s, [2.0])
    assert (state.initial_entropy, state.target_entropy, state.alpha) == (2.0, 0.8, 0.0)
    state = s.observe(state, entropy=0.4)  # α = 1e-3 * (0.8 - 0.4) / 0.8 = 5e-4
    assert state.alpha == pytest.approx(5e-4, abs=1e-15)


def test_aer_zero_initial_entropy_does_not_divide_by_zero():
    s = build_strategy("aer", alpha_init=0.005)
    state = run(s, [0.0])
    assert state.target_entropy == 0.0
    assert s.observe(state, entropy=0.0).alpha == 0.005  # H = H* = 0: no change
    assert s.observe(state, entropy=0.1).alpha == 0.0  # above target: pushed to α_min


@pytest.mark.parametrize(
    "weighting,tau,accs,expected",
    [
        ("threshold", 0.4, [0.0, 0.25, 0.4, 0.41, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]),
        ("threshold", 0.0, [0.0, 0.125], [1.0, 0.0]),
        ("linear", 0.4, [0.0, 0.25, 1.0], [1.0, 0.75, 0.0]),
        ("uniform", 0.4, [0.0, 0.5, 1.0], [1.0, 1.0, 1.0]),
    ],
)
def test_aer_prompt_weights(weighting, tau, accs, expected):
    s = build_strategy("aer", weighting=weighting, tau=tau)
    assert s.prompt_weights(s.initial_state(), accs) == expected


def test_skywork_gate_and_steps():
    s = build_strategy("skywork")  # H_target 0.2, δ 1e-4, α_0 0, α_max 5e-3
    state = s.initial_state()
    assert s.coefficient(state) == 0.0 and state.target_entropy == 0.2
    state = s.observe(state, entropy=0.1)  # below target: α = 1e-4, applied
    assert state.alpha == pytest.approx(1e-4) and s.coefficient(state) == pytest.approx(1e-4)
    state = s.observe(state, entropy=0.1)
    assert s.coefficient(state) == pytest.approx(2e-4)
    state = s.observe(state, entropy=0.3)  # above: α = 1e-4, gated to 0
    assert state.alpha == pytest.approx(1e-4) and s.coefficient(state) == 0.0
    state = s.observe(state, entropy=0.2)  # at target counts as "not below": α = 0, gated
    assert state.alpha == pytest.approx(0.0, abs=1e-18) and s.coefficient(state) == 0.0
    assert s.prompt_weights(state, [0.0, 1.0]) == [1.0, 1.0]


def test_skywork_alpha_init_before_any_measurement_and_clip():
    s = build_strategy("skywork", alpha_init=3e-3, delta=2e-3, alpha_max=4e-3)
    assert s.coefficient(s.initial_state()) == 3e-3
    state = run(s, [0.0])  # 3e-3 + 2e-3 → 4e-3 (α_max)
    assert state.alpha == 4e-3 and s.coefficient(state) == 4e-3


def test_fixed_and_none():
    fixed = build_strategy("fixed", alpha=2e-3)
    state = run(fixed, [1.0, 0.1, 5.0])
    assert fixed.coefficient(state) == 2e-3 and state.alpha == 2e-3 and state.step == 3
    assert fixed.prompt_weights(state, [0.0, 1.0]) == [1.0, 1.0]
    assert build_strategy("fixed").coefficient(build_strategy("fixed").initial_state()) == 1e-3
    none = build_strategy("none")
    state = run(none, [1.0, 0.1])
    assert none.coefficient(state) == 0.0 and state.initial_entropy == 1.0 and state.last_entropy == 0.1


# --- validation
@pytest.mark.parametrize(
    "name,params,key",
    [
        ("aer", {"eta": -1e-3}, "eta"),
        ("aer", {"rho": 0.0}, "rho"),
        ("aer", {"rho": 1.5}, "rho"),
        ("aer", {"tau": 1.1}, "tau"),
        ("aer", {"alpha_min": 0.02, "alpha_max": 0.01}, "alpha_min"),
        ("aer", {"alpha_init": 0.5}, "alpha_init"),
        ("aer", {"eta": float("nan")}, "eta"),
        ("aer", {"rho": float("inf")}, "rho"),
        ("aer", {"anchor_steps": 0}, "anchor_steps"),
        ("aer", {"anchor_steps": 1.5}, "anchor_steps"),
        ("aer", {"weighting": "cubic"}, "weighting"),
        ("aer", {"target_entropy": -1.0}, "target_entropy"),
        ("aer", {"alpha": 1e-3}, "alpha"),
        ("aer", {"eta": "fast"}, "eta"),
        ("fixed", {"alpha": float("nan")}, "alpha"),
        ("fixed", {"alpha": -1.0}, "alpha"),
        ("skywork", {"delta": float("-inf")}, "delta"),
        ("skywork", {"target_entropy": None}, "target_entropy"),
        ("skywork", {"rho": 0.5}, "rho"),
        ("none", {"alpha": 0.1}, "alpha"),
    ],
)
def test_invalid_params_name_the_parameter(name, params, key):
    with pytest.raises(ValueError, match=f"^{key}:"):
        build_strategy(name, **params)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="strategy.*'entropy-max'"):
        build_strategy("entropy-max")


def test_float_anchor_steps_from_grpc_is_accepted():
    assert build_strategy("aer", anchor_steps=3.0).params["anchor_steps"] == 3


def test_params_options_and_with_params():
    s = build_strategy("aer", rho=0.25, weighting="linear")
    assert s.params["rho"] == 0.25 and s.options == {"weighting": "linear"}
    assert "target_entropy" not in s.numeric_params and s.numeric_params["anchor_steps"] == 1.0
    rebuilt = build_strategy(s.name, **s.numeric_params, **s.options)
    assert rebuilt == s
    assert s.with_params(rho=0.5).params["rho"] == 0.5 and s.params["rho"] == 0.25
    with pytest.raises(ValueError, match="^rho:"):
        s.with_params(rho=2.0)


def test_reconcile_after_override():
    s = build_strategy("aer", alpha_max=0.01)
    state = StrategyState(alpha=0.008, step=5, initial_entropy=2.0, target_entropy=1.0, last_entropy=1.2)
    changed = s.with_params(rho=0.25, alpha_max=0.005).reconcile(state)
    assert (changed.alpha, changed.target_entropy, changed.step) == (0.005, 0.5, 5)


# --- observe / prompt_weights reject bad input and change nothing
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -0.1, "1.0", None])
@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_observe_rejects_bad_entropy(name, bad):
    s = build_strategy(name)
    state = run(s, [1.0, 0.7])
    before = state.to_dict()
    with pytest.raises(ValueError, match="entropy"):
        s.observe(state, entropy=bad)
    assert state.to_dict() == before


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf")])
@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_prompt_weights_reject_accuracy_outside_unit_interval(name, bad):
    s = build_strategy(name)
    with pytest.raises(ValueError, match=r"accuracies\[1\]"):
        s.prompt_weights(s.initial_state(), [0.5, bad])


def test_state_dict_round_trip_and_validation():
    s = build_strategy("aer", anchor_steps=2)
    state = run(s, [1.0])
    data = json.loads(json.dumps(state.to_dict()))
    assert StrategyState.from_dict(data) == state
    with pytest.raises(ValueError, match="state.alpha"):
        StrategyState.from_dict({**data, "alpha": float("nan")})
    with pytest.raises(ValueError, match="state.colour"):
        StrategyState.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match="state.step"):
        StrategyState.from_dict({**data, "step": -1})
    with pytest.raises(ValueError, match="state.last_entropy"):
        StrategyState.from_dict({**data, "last_entropy": -2.0})


# --- properties (DESIGN §1)
entropy_values = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
accuracy_values = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def aer_strategies(draw):
    alpha_min = draw(st.floats(0.0, 0.5))
    alpha_max = draw(st.floats(alpha_min, 1.0))
    return build_strategy(
        "aer",
        rho=draw(st.floats(1e-3, 1.0)),
        tau=draw(st.floats(0.0, 1.0)),
        eta=draw(st.floats(0.0, 1.0)),
        alpha_min=alpha_min,
        alpha_max=alpha_max,
        alpha_init=draw(st.floats(alpha_min, alpha_max)),
        anchor_steps=draw(st.integers(1, 3)),
        weighting=draw(st.sampled_from(["threshold", "linear", "uniform"])),
        target_entropy=draw(st.none() | st.floats(1e-3, 10.0)),
    )


@st.composite
def skywork_strategies(draw):
    alpha_min = draw(st.floats(0.0, 0.5))
    alpha_max = draw(st.floats(alpha_min, 1.0))
    return build_strategy(
        "skywork",
        target_entropy=draw(st.floats(1e-3, 10.0)),
        delta=draw(st.floats(0.0, 0.1)),
        alpha_min=alpha_min,
        alpha_max=alpha_max,
        alpha_init=draw(st.floats(alpha_min, alpha_max)),
    )


any_strategy = st.one_of(
    aer_strategies(),
    skywork_strategies(),
    st.floats(0.0, 1.0).map(lambda a: build_strategy("fixed", alpha=a)),
    st.just(build_strategy("none")),
)


@settings(max_examples=200, deadline=None)
@given(aer_strategies(), st.lists(entropy_values, min_size=1, max_size=12))
def test_aer_alpha_finite_in_bounds_and_moves_toward_target(s, entropies):
    p = s.params
    state = s.initial_state()
    for h in entropies:
        new = s.observe(state, entropy=h)
        assert math.isfinite(new.alpha) and p["alpha_min"] <= new.alpha <= p["alpha_max"]
        assert new.step == state.step + 1 and new.last_entropy == h
        if state.initial_entropy is None:
            assert new.alpha == state.alpha  # anchoring observations never move α
        else:
            target = new.target_entropy
            if p["eta"] == 0:
                assert new.alpha == state.alpha
            elif h < target:
                assert new.alpha >= state.alpha
                if (
                    state.alpha < p["alpha_max"]
                    and target > 0
                    and state.alpha + p["eta"] * (target - h) / target > state.alpha
                ):
                    assert new.alpha > state.alpha
            elif h > target:
                assert new.alpha <= state.alpha
                if (
                    state.alpha > p["alpha_min"]
                    and target > 0
                    and state.alpha + p["eta"] * (target - h) / target < state.alpha
                ):
                    assert new.alpha < state.alpha
            else:
                assert new.alpha == state.alpha
        assert s.coefficient(new) == new.alpha
        state = new


@settings(max_examples=200, deadline=None)
@given(skywork_strategies(), st.lists(entropy_values, min_size=1, max_size=12))
def test_skywork_alpha_in_bounds_direction_and_gate(s, entropies):
    p = s.params
    state = s.initial_state()
    assert s.coefficient(state) == p["alpha_init"]
    for h in entropies:
        new = s.observe(state, entropy=h)
        assert math.isfinite(new.alpha) and p["alpha_min"] <= new.alpha <= p["alpha_max"]
        if h < p["target_entropy"]:
            assert new.alpha >= state.alpha
            assert s.coefficient(new) == new.alpha
        else:
            assert new.alpha <= state.alpha
            assert s.coefficient(new) == 0.0
        state = new


@settings(max_examples=200, deadline=None)
@given(any_strategy, st.lists(entropy_values, max_size=5), st.lists(accuracy_values, max_size=10))
def test_weights_in_unit_interval_and_state_round_trips(s, entropies, accs):
    state = run(s, entropies)
    weights = s.prompt_weights(state, accs)
    assert len(weights) == len(accs) and all(0.0 <= w <= 1.0 for w in weights)
    coefficient = s.coefficient(state)
    assert math.isfinite(coefficient) and coefficient >= 0.0
    assert StrategyState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@settings(max_examples=100, deadline=None)
@given(
    any_strategy,
    st.lists(entropy_values, max_size=4),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]) | st.floats(max_value=-1e-300, allow_infinity=False),
)
def test_bad_measurements_rejected_and_state_unchanged(s, entropies, bad):
    state = run(s, entropies)
    before = state.to_dict()
    with pytest.raises(ValueError):
        s.observe(state, entropy=bad)
    assert state.to_dict() == before
    assert s.observe(state, entropy=0.5).step == state.step + 1  # still usable


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_rho_outside_unit_interval_rejected(rho):
    assume(not (0.0 < rho <= 1.0))
    with pytest.raises(ValueError, match="^rho:"):
        build_strategy("aer", rho=rho)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("rho=0.5", ("rho", 0.5)),
        (" alpha-max = 3e-2 ", ("alpha_max", 0.03)),
        ("weighting=linear", ("weighting", "linear")),
        ("target_entropy=None", ("target_entropy", None)),
        ("target_entropy=null", ("target_entropy", None)),
    ],
)
def test_parse_param(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["rho", "=0.5", "", " =x"])
def test_parse_param_rejects_text_without_key_or_value(text):
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_param(text)


@given(st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(["linear", "threshold"]) | st.none())
def test_format_param_round_trips_exactly(value):
    assert parse_param(format_param("eta", value)) == ("eta", value)


def test_every_parameter_has_help_and_a_range_or_choices():
    params = {k for defaults in STRATEGY_DEFAULTS.values() for k in defaults}
    assert set(PARAM_HELP) == params
    assert params - set(PARAM_BOUNDS) == {"weighting"}
