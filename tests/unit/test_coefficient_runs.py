"""The coefficient service's pure parts: run transitions, override semantics, auth, settings, request bodies."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from aerplane.coefficient.auth import (
    ANONYMOUS,
    Authenticator,
    Credential,
    Permission,
    PermissionDenied,
    Role,
    Unauthenticated,
)
from aerplane.coefficient.runs import (
    InvalidValue,
    Override,
    Run,
    StaleStep,
    apply_override,
    apply_report,
    new_run,
)
from aerplane.coefficient.schemas import OverrideBody
from aerplane.coefficient.settings import CoefficientSettings, parse_token_list
from aerplane.common.settings import SettingsError, load_settings
from aerplane.core.step_figures import StepFigures
from aerplane.core.strategies import build_strategy


def _aer(**params: float) -> Run:
    return new_run("r1", "aer", {"rho": 0.5, "eta": 1e-3, **params}, {"weighting": "threshold"}, now=0.0)


def _report(run: Run, step: int, h: float) -> Run:
    run, applied = apply_report(run, step, h, 100, now=float(step))
    assert applied
    return run


def test_reports_follow_the_core_strategy_exactly() -> None:
    run = _aer()
    core = build_strategy("aer", rho=0.5, eta=1e-3, weighting="threshold")
    st = core.initial_state()
    for step, h in enumerate([2.0, 0.6, 0.7, 1.4, 0.2, 0.9]):
        assert run.coefficient() == core.coefficient(st)
        run = _report(run, step, h)
        st = core.observe(st, entropy=h)
        assert run.state == st
    assert run.view()["target_entropy"] == 1.0 and run.view()["observations"] == 6


def test_each_step_applies_once_and_older_unapplied_steps_are_refused() -> None:
    run = _report(_report(_aer(), 0, 2.0), 5, 0.5)
    again, applied = apply_report(run, 5, 3.0, 100, now=99.0)
    assert not applied and again == run
    # A resumed learner re-reports step 0, which the store has a record of: nothing changes.
    again, applied = apply_report(run, 0, 3.0, 100, now=99.0, applied=lambda step: step in (0, 5))
    assert not applied and again == run
    with pytest.raises(StaleStep, match="step 4 is older than the last applied step 5 .* never applied"):
        apply_report(run, 4, 0.5, 100, now=99.0, applied=lambda step: step in (0, 5))
    with pytest.raises(InvalidValue, match="mean_entropy"):  # values are checked even for a repeat
        apply_report(run, 0, math.nan, 100, now=99.0, applied=lambda step: True)


@pytest.mark.parametrize(
    ("step", "entropy", "tokens", "match"),
    [
        (1, math.nan, 10, "mean_entropy"),
        (1, math.inf, 10, "mean_entropy"),
        (1, -0.1, 10, "mean_entropy"),
        (-1, 1.0, 10, "step"),
        (1, 1.0, 0, "num_tokens"),
    ],
)
def test_bad_reports_are_invalid_and_change_nothing(step: int, entropy: float, tokens: int, match: str) -> None:
    run = _aer()
    with pytest.raises(InvalidValue, match=match):
        apply_report(run, step, entropy, tokens, now=1.0)


def test_pinned_alpha_is_returned_until_released_and_the_controller_resumes_from_it() -> None:
    run = _report(_aer(), 0, 2.0)
    run, changes = apply_override(run, Override(alpha=0.004, reason="explore"), now=1.0)
    assert changes["alpha_pin"] == {"old": None, "new": 0.004}
    for step, h in [(1, 0.2), (2, 0.1)]:
        run = _report(run, step, h)
        assert run.coefficient() == 0.004 and run.view()["alpha_pinned"]
    run, changes = apply_override(run, Override(release=True), now=2.0)
    assert not run.view()["alpha_pinned"] and run.coefficient() == 0.004
    run = _report(run, 3, 0.5)  # H < H* = 1.0: α rises from the pin
    assert run.coefficient() == pytest.approx(0.004 + 1e-3 * (1.0 - 0.5) / 1.0)


def test_frozen_keeps_alpha_but_still_records_entropy() -> None:
    run = _report(_report(_aer(), 0, 2.0), 1, 0.5)
    alpha = run.coefficient()
    run, _ = apply_override(run, Override(frozen=True), now=1.0)
    run = _report(run, 2, 0.1)
    assert run.coefficient() == alpha and run.state.last_entropy == 0.1 and run.state.step == 3
    run, _ = apply_override(run, Override(frozen=False), now=2.0)
    run = _report(run, 3, 0.5)
    assert run.coefficient() > alpha


def test_target_override_replaces_rho_h0_until_released() -> None:
    run = _report(_aer(), 0, 2.0)
    run, changes = apply_override(run, Override(target_entropy=0.4), now=1.0)
    assert run.state.target_entropy == 0.4 and changes["target_entropy"] == {"old": 1.0, "new": 0.4}
    run = _report(run, 1, 0.5)  # above the overridden target: α falls (clipped at 0)
    assert run.coefficient() == 0.0 and run.state.target_entropy == 0.4
    run, _ = apply_override(run, Override(release=True), now=2.0)
    assert run.state.target_entropy == 1.0 and not run.view()["target_overridden"]


def test_parameter_changes_are_validated_like_build_strategy() -> None:
    run = _aer()
    with pytest.raises(InvalidValue, match="rho"):
        apply_override(run, Override(params={"rho": 1.5}), now=1.0)
    with pytest.raises(InvalidValue, match="unknown parameter"):
        apply_override(run, Override(params={"bogus": 1.0}), now=1.0)
    with pytest.raises(InvalidValue, match="alpha: must be within"):
        apply_override(run, Override(alpha=0.5), now=1.0)
    with pytest.raises(InvalidValue, match="nothing to change"):
        apply_override(run, Override(reason="just because"), now=1.0)
    run, changes = apply_override(run, Override(alpha=0.5, params={"alpha_max": 1.0}), now=1.0)
    assert run.coefficient() == 0.5 and changes["params.alpha_max"] == {"old": 0.01, "new": 1.0}


def test_strategy_switch_keeps_alpha_and_anchor() -> None:
    run = _report(_report(_aer(), 0, 2.0), 1, 0.5)
    alpha = run.coefficient()
    run, changes = apply_override(run, Override(strategy="skywork", params={"target_entropy": 0.8}), now=1.0)
    assert run.strategy == "skywork" and changes["strategy"] == {"old": "aer", "new": "skywork"}
    assert run.state.alpha == alpha and run.state.initial_entropy == 2.0 and run.state.target_entropy == 0.8
    with pytest.raises(InvalidValue, match="has no target"):
        apply_override(new_run("f", "fixed", {"alpha": 0.001}, {}, 0.0), Override(target_entropy=1.0), now=1.0)


def test_run_record_round_trips_through_json() -> None:
    run, _ = apply_override(_report(_aer(), 0, 2.0), Override(alpha=0.003, frozen=True), now=1.0)
    assert Run.from_json(run.to_json()) == run
    run, _ = apply_report(run, 1, 1.5, 100, now=2.0, total_steps=2)
    assert Run.from_json(run.to_json()) == run and run.view()["finished"]


def test_a_record_from_before_total_steps_reads_as_not_finished() -> None:
    record = json.loads(_report(_aer(), 0, 2.0).to_json())
    del record["total_steps"]
    view = Run.from_json(json.dumps(record)).view()
    assert view["total_steps"] is None and not view["finished"] and view["has_step"]


def test_the_run_is_finished_at_its_last_step_and_live_again_when_resumed_with_more() -> None:
    run = _aer()
    for step in range(3):
        run, _ = apply_report(run, step, 2.0, 100, now=float(step), total_steps=3)
        assert run.finished() == (step == 2)
    unchanged, applied = apply_report(run, 2, 1.0, 100, now=9.0, total_steps=10)  # a step applied before: no change
    assert not applied and unchanged.total_steps == 3
    run, _ = apply_report(run, 3, 2.0, 100, now=3.0, total_steps=5)
    assert not run.finished() and run.total_steps == 5
    run, _ = apply_report(run, 4, 2.0, 100, now=4.0)  # a report without it keeps the run's
    assert run.finished()
    assert _aer().view()["reported_at"] is None
    overridden, _ = apply_override(run, Override(alpha=0.001), now=50.0)  # people's changes are not reports
    assert (overridden.reported_at, overridden.updated_at) == (4.0, 50.0)


@pytest.mark.parametrize(
    ("figures", "step", "match"),
    [
        (StepFigures(accuracy_by_difficulty={f"b{i}": 0.5 for i in range(65)}), 0, "at most 64 buckets"),
        (StepFigures(accuracy_by_difficulty={"x" * 65: 0.5}), 0, "bucket names"),
        (StepFigures(accuracy_by_difficulty={"": 0.5}), 0, "bucket names"),
        (StepFigures(accuracy_by_difficulty={"hard": 1.01}), 0, r"accuracy_by_difficulty\.hard: must be within"),
        (StepFigures(accuracy_by_difficulty={"hard": -0.1}), 0, r"accuracy_by_difficulty\.hard"),
        (StepFigures(accuracy_by_difficulty={"hard": math.nan}), 0, r"accuracy_by_difficulty\.hard"),
        (StepFigures(accuracy_by_difficulty={"hard": "0.5"}), 0, "must be a number"),  # type: ignore[dict-item]
        (StepFigures(response_length=math.inf), 0, "response_length: must be finite"),
        (StepFigures(response_length=-1.0), 0, "response_length"),
        (StepFigures(response_length=True), 0, "response_length: must be a number"),  # type: ignore[arg-type]
        (StepFigures(total_steps=0), 0, "total_steps: must be a positive integer"),
        (StepFigures(total_steps=2.0), 0, "total_steps: must be a positive integer"),  # type: ignore[arg-type]
        (StepFigures(total_steps=3), 3, "step 3 is past the run's 3 steps"),
    ],
)
def test_bad_step_figures_are_refused_naming_the_field(figures: StepFigures, step: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        figures.checked(step)


def test_a_learner_sends_the_sound_figures_and_says_why_it_left_out_the_others() -> None:
    buckets = {f"label {i}": 0.5 for i in range(65)}  # a dataset with one difficulty label too many
    kept, why = StepFigures(buckets, 120.0, 10).sound_part(step=3)
    assert kept == StepFigures(None, 120.0, 10) and len(why) == 1 and why[0].startswith("accuracy_by_difficulty:")
    kept, why = StepFigures({"easy": 0.5}, math.nan, 3).sound_part(step=3)
    assert kept == StepFigures({"easy": 0.5}, None, None) and [w.split(":")[0] for w in why] == [
        "response_length",
        "total_steps",
    ]
    assert StepFigures({"easy": 1}, 2, 4).sound_part(step=0) == (StepFigures({"easy": 1.0}, 2.0, 4), [])


def test_sound_step_figures_come_back_as_plain_numbers() -> None:
    buckets = {f"level {i}": i / 64 for i in range(64)}  # the most buckets, each in [0, 1]
    figures = StepFigures(accuracy_by_difficulty=buckets | {"level 0": 0}, response_length=0, total_steps=1)
    checked = figures.checked(0)
    assert checked.accuracy_by_difficulty == {**buckets, "level 0": 0.0}
    assert isinstance(checked.accuracy_by_difficulty["level 0"], float) and checked.response_length == 0.0
    assert StepFigures().checked(7) == StepFigures()


def _credentials(*items: tuple[str, Role, str]) -> list[Credential]:
    return [Credential(actor, role, token.encode()) for actor, role, token in items]


def test_authenticator_names_the_actor_and_refuses_bad_tokens() -> None:
    assert Authenticator().authorize(None, Permission.OPERATE) == ANONYMOUS
    auth = Authenticator(_credentials(("alice", Role.OPERATOR, "tok-a"), ("operator", Role.OPERATOR, "tok-o")))
    assert auth.authorize("Bearer tok-a", Permission.OPERATE) == "alice"
    assert auth.authorize("bearer tok-o", Permission.OPERATE) == "operator"
    for header in (None, "", "Bearer", "Basic tok-a", "Bearer tok-x", "tok-a"):
        with pytest.raises(Unauthenticated) as info:
            auth.authorize(header, Permission.OPERATE)
        assert "tok-a" not in str(info.value)
    assert repr(auth._credentials[0]) == "Credential(actor='alice', role=operator)"


def test_roles_grant_their_permissions_and_only_configured_gates_are_checked() -> None:
    only_operator = Authenticator(_credentials(("operator", Role.OPERATOR, "op")))
    # AERPLANE_API_TOKEN alone, as before: reads and the learner's calls stay open, mutations need the token.
    assert only_operator.authorize(None, Permission.READ) == ANONYMOUS
    assert only_operator.authorize("Bearer junk", Permission.LEARN) == ANONYMOUS
    with pytest.raises(Unauthenticated):
        only_operator.authorize(None, Permission.OPERATE)

    auth = Authenticator(
        _credentials(("operator", Role.OPERATOR, "op"), ("reader", Role.READER, "rd"), ("learner", Role.LEARNER, "ln"))
    )
    allowed = {
        "op": {Permission.READ, Permission.LEARN, Permission.OPERATE},
        "ln": {Permission.READ, Permission.LEARN},
        "rd": {Permission.READ},
    }
    for token, permissions in allowed.items():
        for permission in Permission:
            if permission in permissions:
                assert auth.authorize(f"Bearer {token}", permission) != ANONYMOUS
            else:
                with pytest.raises(PermissionDenied) as info:
                    auth.authorize(f"Bearer {token}", permission)
                assert token not in str(info.value)
    for permission in Permission:
        with pytest.raises(Unauthenticated):
            auth.authorize(None, permission)
    assert auth.describe() == "reads need a token, learner calls need a token, mutations need a token"

    # A read-only token alone closes mutations too (no operator token: nobody may mutate).
    read_only = Authenticator(_credentials(("reader", Role.READER, "rd")))
    assert read_only.enforced(Permission.OPERATE) and not read_only.enforced(Permission.LEARN)
    with pytest.raises(PermissionDenied):
        read_only.authorize("Bearer rd", Permission.OPERATE)


def test_settings_env_names_and_token_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AERPLANE_COEFFICIENT_GRPC_PORT", "6000")
    monkeypatch.setenv("AERPLANE_REDIS_URL", "redis://example:6379/2")
    monkeypatch.setenv("AERPLANE_API_TOKEN", "single")
    monkeypatch.setenv("AERPLANE_API_TOKENS", "alice:a1, bob:b2")
    s = load_settings(CoefficientSettings, {"http_port": 7000, "host": None}, section="coefficient")
    assert (s.grpc_port, s.http_port, s.redis_url) == (6000, 7000, "redis://example:6379/2")
    assert [(c.actor, c.role, c.token) for c in s.credentials()] == [
        ("alice", Role.OPERATOR, b"a1"),
        ("bob", Role.OPERATOR, b"b2"),
        ("operator", Role.OPERATOR, b"single"),
    ]
    assert "single" not in repr(s) and "a1" not in repr(s)
    monkeypatch.setenv("AERPLANE_API_TOKENS", "alice")
    with pytest.raises(SettingsError, match="AERPLANE_API_TOKENS: entry 1: expected name:token"):
        load_settings(CoefficientSettings, section="coefficient")
    monkeypatch.delenv("AERPLANE_API_TOKENS")
    with pytest.raises(SettingsError, match="coefficient.http_port"):
        load_settings(CoefficientSettings, {"http_port": 70000}, section="coefficient")
    with pytest.raises(ValueError, match="appears twice"):
        parse_token_list("a:1,a:2")


def test_settings_ignore_unprefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:1/0")
    monkeypatch.setenv("API_TOKEN", "not-ours")
    monkeypatch.setenv("HTTP_PORT", "1234")
    s = load_settings(CoefficientSettings, section="coefficient")
    assert (s.redis_url, s.credentials(), s.http_port) == ("redis://127.0.0.1:6379/0", [], 8000)


def test_read_and_learner_tokens_come_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AERPLANE_API_TOKEN", "op-secret")
    monkeypatch.setenv("AERPLANE_API_READ_TOKEN", "rd-secret")
    monkeypatch.setenv("AERPLANE_API_READ_TOKENS", "grafana:gf-secret")
    monkeypatch.setenv("AERPLANE_LEARNER_TOKEN", "ln-secret")  # the variable the learner sends it from
    s = load_settings(CoefficientSettings, section="coefficient")
    assert {(c.actor, c.role) for c in s.credentials()} == {
        ("operator", Role.OPERATOR),
        ("reader", Role.READER),
        ("grafana", Role.READER),
        ("learner", Role.LEARNER),
    }
    assert not any(secret in repr(s) for secret in ("op-secret", "rd-secret", "gf-secret", "ln-secret"))
    assert s.authenticator().authorize("Bearer gf-secret", Permission.READ) == "grafana"

    monkeypatch.setenv("AERPLANE_LEARNER_TOKEN", "op-secret")  # one token, two roles: refused, token unsaid
    with pytest.raises(SettingsError, match="learner_token: the token of 'learner' is also the token of") as info:
        load_settings(CoefficientSettings, section="coefficient")
    assert "op-secret" not in str(info.value)
    monkeypatch.setenv("AERPLANE_LEARNER_TOKEN", "")  # empty: unset, as in compose files
    monkeypatch.setenv("AERPLANE_API_READ_TOKENS", "reader:x")
    with pytest.raises(SettingsError, match="read_tokens: actor 'reader' is reserved"):
        load_settings(CoefficientSettings, section="coefficient")
    monkeypatch.setenv("AERPLANE_API_READ_TOKENS", "ci")
    with pytest.raises(SettingsError, match="AERPLANE_API_READ_TOKENS: entry 1: expected name:token"):
        load_settings(CoefficientSettings, section="coefficient")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": "only a reason"},
        {"release": False, "params": {}},
        {"alpha": None},
        {"params": {"bogus": 1.0}},
        {"params": {"Bad-Name": 1.0}},
        {"params": {"eta": -1.0}},
        {"params": {"rho": 0.0}},
        {"params": {"tau": 1.5}},
        {"params": {"anchor_steps": 1.5}},
        {"params": {"eta": None}},
        {"options": {"weighting": "cubic"}},
        {"strategy": "bogus"},
        {"alpha": math.nan},
        {"alpha": math.inf},
        {"alpha": -0.1},
        {"alpha": 2.0},
        {"target_entropy": 0.0},
        {"alpha": "0.1"},
        {"frozen": 1},
        {"params": {"eta": math.nan}},
        {"params": {"eta": "x"}},
        {"unknown": 1},
        {"reason": "x" * 2000},
    ],
)
def test_override_body_refuses_bad_values(body: dict) -> None:
    with pytest.raises(ValidationError):
        OverrideBody.model_validate(body)


def test_override_body_schema_is_the_validator() -> None:
    """The OpenAPI schema of the body carries the same parameter names and ranges as `build_strategy`'s checks."""
    from aerplane.core.strategies import PARAM_BOUNDS

    schema = OverrideBody.model_json_schema()
    params = schema["$defs"]["StrategyParams"]
    assert params["additionalProperties"] is False and set(params["properties"]) == set(PARAM_BOUNDS)
    rho = params["properties"]["rho"]
    assert (rho["type"], rho["exclusiveMinimum"], rho["maximum"]) == ("number", 0.0, 1.0)
    assert params["properties"]["anchor_steps"]["multipleOf"] == 1
    assert schema["$defs"]["StrategyOptions"]["properties"]["weighting"]["enum"] == ["threshold", "linear", "uniform"]
    assert {b["required"][0] for b in schema["anyOf"]} == {
        "alpha",
        "target_entropy",
        "params",
        "options",
        "strategy",
        "frozen",
        "release",
    }
    body = OverrideBody.model_validate({"params": {"anchor_steps": 2.0, "rho": 1}, "options": {"weighting": "linear"}})
    assert body.to_override().params == {"anchor_steps": 2.0, "rho": 1.0}


def test_the_service_imports_without_torch() -> None:
    """The slim image (coefficient + reward) has no torch: the service must not pull it in."""
    import subprocess
    import sys

    code = "import sys, aerplane.coefficient.app, aerplane.coefficient.client; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_the_console_stream_starts_its_next_event_at_the_first_row_still_open() -> None:
    from aerplane.coefficient.console import next_since

    def rows(*reported: bool) -> list[dict]:
        return [{"step": 5 + i, "mean_entropy": 1.0 if r else None} for i, r in enumerate(reported)]

    assert next_since(rows(True, True), last_step=6) == 7  # all in: after the last
    assert next_since(rows(True, False), last_step=5) == 6  # step 6 asked for, not reported yet
    # A learner that asks for step 7 before it reports step 6: 6 is still open, the stream must come back for it.
    assert next_since(rows(True, False, False), last_step=5) == 6
    # A step at or before the last applied one without entropy never gets one: not waited for.
    assert next_since(rows(False, True, False), last_step=6) == 7
    assert next_since(rows(False), last_step=None) == 5  # nothing reported yet
