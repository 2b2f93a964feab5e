"""AER's update with P and D terms (DESIGN §1.3), and today's rule reproduced exactly from the recorded runs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aerplane.core.strategies import StrategyState, build_strategy

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def recorded_aer_runs() -> list[Path]:
    runs = []
    for meta in sorted(RESULTS.glob("*/runs/*/run.json")):
        info = json.loads(meta.read_text())
        if info["strategy"] == "aer" and info.get("finished") and (meta.parent / "metrics.jsonl").exists():
            runs.append(meta.parent)
    return runs


def observe_all(strategy, entropies, state=None):
    state = state or strategy.initial_state()
    for h in entropies:
        state = strategy.observe(state, entropy=h)
    return state


# --- the recorded runs ----------------------------------------------------------------------------------------------
def test_there_are_recorded_aer_runs_made_before_the_pid_terms_to_check():
    before = [d for d in recorded_aer_runs() if "kp" not in json.loads((d / "run.json").read_text())["params"]]
    assert len(before) >= 15


@pytest.mark.parametrize("run_dir", recorded_aer_runs(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_recorded_alpha_sequence_is_reproduced_exactly(run_dir):
    """Runs made before the P and D terms existed replay exactly with their defaults (kp = kd = smoothing = 0 is the
    integral rule they ran, bit for bit); runs made with gains replay exactly with theirs."""
    info = json.loads((run_dir / "run.json").read_text())
    strategy = build_strategy("aer", **info["params"], **info.get("options", {}))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(records) >= 10
    state = strategy.initial_state()
    for record in records:
        assert strategy.coefficient(state) == record["alpha"], f"step {record['step']}"
        state = strategy.observe(state, entropy=record["mean_entropy"])
        assert strategy.coefficient(state) == record["next_alpha"], f"step {record['step']}"
        if record["target_entropy"] is not None:
            assert state.target_entropy == record["target_entropy"]


# --- the formulas ---------------------------------------------------------------------------------------------------
def test_pid_terms_follow_design_by_hand():
    s = build_strategy("aer", rho=0.5, eta=0.01, kp=0.1, kd=0.2, alpha_max=0.05)
    st0 = observe_all(s, [2.0])  # anchors: H_0 = 2, H* = 1
    assert (st0.target_entropy, st0.alpha, st0.integral, st0.terms) == (1.0, 0.0, None, None)
    st1 = s.observe(st0, entropy=0.8)  # e = 0.2, first post-anchor step: D = 0
    assert st1.p_term == pytest.approx(0.02)
    assert st1.d_term == 0.0
    assert st1.i_term == pytest.approx(0.002)  # s = 0.02 < α_max: integrates
    assert st1.alpha == pytest.approx(0.022)
    st2 = s.observe(st1, entropy=0.6)  # e = 0.4, H̃ fell by 0.2: D = −0.2·(−0.2)/1 = 0.04
    assert st2.p_term == pytest.approx(0.04)
    assert st2.d_term == pytest.approx(0.04)
    # s = 0.04 + 0.04 + 0.002 = 0.082 ≥ α_max with e > 0: the integral is held (conditional integration)
    assert st2.i_term == pytest.approx(0.002)
    assert st2.alpha == 0.05
    st3 = s.observe(st2, entropy=1.5)  # e = −0.5, H̃ rose by 0.9: D = −0.18
    assert st3.p_term == pytest.approx(-0.05)
    assert st3.d_term == pytest.approx(-0.18)
    # s = −0.228 ≤ α_min with e < 0: held again
    assert st3.i_term == pytest.approx(0.002)
    assert st3.alpha == 0.0


def test_smoothing_filters_the_measurement_from_the_first_post_anchor_step():
    s = build_strategy("aer", rho=0.5, eta=0.01, kp=0.1, smoothing=0.5, alpha_max=1.0)
    st1 = observe_all(s, [2.0, 0.6])  # first post-anchor: H̃ = H
    assert st1.filtered_entropy == 0.6
    st2 = s.observe(st1, entropy=1.0)
    assert st2.filtered_entropy == pytest.approx(0.8)
    assert st2.p_term == pytest.approx(0.1 * (1.0 - 0.8))


def test_integral_alone_is_todays_rule_bit_for_bit():
    s = build_strategy("aer", eta=0.013, alpha_max=0.03, alpha_init=0.004)
    hs = [1.1, 0.4, 0.3, 0.2, 0.9, 1.4, 0.05, 0.5, 0.55, 0.1, 0.2, 0.3]
    state = s.initial_state()
    alpha = 0.004
    for i, h in enumerate(hs):
        state = s.observe(state, entropy=h)
        if i:  # the rule of DESIGN §1 written out
            alpha = min(max(alpha + 0.013 * ((0.55 - h) / 0.55), 0.0), 0.03)
        assert state.alpha == alpha


def test_derivative_is_on_the_measurement_so_a_target_change_gives_no_kick():
    s = build_strategy("aer", eta=0.0, kd=0.5, alpha_max=1.0)
    state = observe_all(s, [1.0, 0.5])
    moved = build_strategy("aer", eta=0.0, kd=0.5, alpha_max=1.0, target_entropy=0.2).reconcile(state)
    after = build_strategy("aer", eta=0.0, kd=0.5, alpha_max=1.0, target_entropy=0.2).observe(moved, entropy=0.5)
    assert after.d_term == 0.0  # H̃ did not change


def test_zero_target_drives_alpha_to_its_floor_without_nan():
    s = build_strategy("aer", kp=0.1, kd=0.1, eta=0.01, alpha_min=0.001, alpha_init=0.001, alpha_max=0.05)
    state = observe_all(s, [0.0, 0.3, 0.2])
    assert (state.target_entropy, state.alpha, state.integral, state.p_term, state.d_term) == (
        0.0,
        0.001,
        0.001,
        -0.05,
        0.0,
    )
    assert StrategyState.from_dict(json.loads(json.dumps(state.to_dict(), allow_nan=False))) == state


def test_state_round_trips_and_replays_exactly_across_restarts():
    s = build_strategy("aer", eta=0.01, kp=0.05, kd=0.05, smoothing=0.3, alpha_max=0.05)
    hs = [1.0, 0.7, 0.3, 0.25, 0.6, 0.8, 0.2]
    continuous = observe_all(s, hs)
    state = s.initial_state()
    for h in hs:  # as the coefficient service does: the state goes through JSON between steps
        state = StrategyState.from_dict(json.loads(json.dumps(s.observe(state, entropy=h).to_dict())))
    assert state == continuous


def test_a_record_written_before_the_pid_fields_reads_with_them_unset():
    old = {"alpha": 0.01, "step": 3, "initial_entropy": 1.0, "target_entropy": 0.5, "last_entropy": 0.4}
    state = StrategyState.from_dict(old)
    assert state.integral is None and state.terms is None
    s = build_strategy("aer", eta=0.01, alpha_max=0.03)
    assert s.observe(state, entropy=0.4).alpha == pytest.approx(0.01 + 0.01 * 0.2)  # the integral starts at α


def test_held_at_moves_the_integral_with_alpha():
    s = build_strategy("aer", eta=0.01, kp=0.05, alpha_max=0.05)
    state = observe_all(s, [1.0, 0.4])
    held = state.held_at(0.03)
    assert (held.alpha, held.integral) == (0.03, 0.03)
    assert StrategyState(alpha=0.1).held_at(0.2).integral is None


def test_reconcile_clips_the_integral_into_new_bounds():
    s = build_strategy("aer", eta=0.05, alpha_max=0.05)
    state = observe_all(s, [1.0, 0.1, 0.1])
    assert state.integral == 0.05
    narrowed = build_strategy("aer", eta=0.05, alpha_max=0.02).reconcile(state)
    assert (narrowed.alpha, narrowed.integral) == (0.02, 0.02)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("kp", -0.1, "kp: must be >= 0"), ("kd", math.inf, "kd: must be finite"), ("smoothing", 1.0, "smoothing")],
)
def test_bad_gains_are_refused_naming_the_parameter(key, value, message):
    with pytest.raises(ValueError, match=message):
        build_strategy("aer", **{key: value})


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 5.0), min_size=2, max_size=30),
    st.floats(0.0, 0.2),
    st.floats(0.0, 0.2),
    st.floats(0.0, 0.05),
    st.floats(0.0, 0.9),
)
def test_alpha_stays_finite_and_within_bounds(hs, kp, kd, eta, beta):
    s = build_strategy("aer", kp=kp, kd=kd, eta=eta, smoothing=beta, alpha_min=0.001, alpha_init=0.001, alpha_max=0.04)
    state = s.initial_state()
    for h in hs:
        state = s.observe(state, entropy=h)
        assert math.isfinite(state.alpha) and 0.001 <= state.alpha <= 0.04
        if state.integral is not None:
            assert 0.001 <= state.integral <= 0.04


@settings(max_examples=100, deadline=None)
@given(st.floats(0.05, 3.0), st.floats(0.0, 0.2), st.floats(0.001, 0.05))
def test_alpha_rises_below_target_and_falls_above_it(h0, kp, eta):
    """With the measurement steady (no derivative), α moves toward more bonus below H* and less above it."""
    s = build_strategy("aer", kp=kp, eta=eta, alpha_min=0.0, alpha_init=0.01, alpha_max=1.0)
    low = observe_all(s, [h0, 0.25 * h0, 0.25 * h0])
    high = observe_all(s, [h0, 0.9 * h0, 0.9 * h0])
    assert low.alpha > 0.01 > high.alpha or (high.alpha == 0.0 and low.alpha > 0.01)


def test_pinned_then_released_continues_from_the_pin():
    from aerplane.coefficient.runs import Override, apply_override, apply_report, new_run

    run = new_run("r", "aer", {"eta": 0.01, "kp": 0.05, "alpha_max": 0.05}, {}, 0.0)
    run, _ = apply_report(run, 0, 1.0, 10, 1.0)
    run, _ = apply_report(run, 1, 0.3, 10, 2.0)
    run, _ = apply_override(run, Override(alpha=0.02, reason="hold"), 3.0)
    run, _ = apply_report(run, 2, 0.3, 10, 4.0)
    assert (run.coefficient(), run.state.integral) == (0.02, 0.02)
    run, _ = apply_override(run, Override(release=True, reason="go"), 5.0)
    run, _ = apply_report(run, 3, 0.5, 10, 6.0)  # e = 0: P = 0, the integral continues from the pin
    assert run.state.integral == pytest.approx(0.02)
    assert run.coefficient() == pytest.approx(0.02)
    frozen, _ = apply_override(run, Override(frozen=True, reason="freeze"), 7.0)
    after, _ = apply_report(frozen, 4, 0.1, 10, 8.0)
    assert (after.state.alpha, after.state.integral) == (run.state.alpha, run.state.integral)
    assert replace(after.state, step=0) != replace(run.state, step=0)  # the measurement still moved on
