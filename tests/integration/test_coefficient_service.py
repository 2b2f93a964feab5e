"""The coefficient service against a real Redis, with its real gRPC and HTTP servers on loopback ports."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from aerplane.coefficient.app import RunningService, start
from aerplane.coefficient.client import (
    AuthError,
    CoefficientClient,
    CoefficientError,
    InvalidArgumentError,
    RunExistsError,
    RunNotFoundError,
    StaleStepError,
)
from aerplane.coefficient.settings import CoefficientSettings
from aerplane.common.redis_server import LocalRedis
from aerplane.core.strategies import build_strategy

TOKEN = "s3cret-operator-token"
AER = {"rho": 0.5, "tau": 0.4, "eta": 0.002, "alpha_min": 0.0, "alpha_max": 0.01, "anchor_steps": 2}


@pytest.fixture
def service(redis_url: str) -> Iterator[RunningService]:
    settings = CoefficientSettings(
        redis_url=redis_url,
        host="127.0.0.1",
        grpc_port=0,
        http_port=0,
        api_tokens="alice:alice-token,ci:ci-token",
        api_token=TOKEN,
        watch_poll_seconds=0.2,
        shutdown_grace_seconds=1.0,
    )
    svc = start(settings)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def client(service: RunningService) -> Iterator[CoefficientClient]:
    with CoefficientClient(f"127.0.0.1:{service.grpc_port}", timeout=10.0) as c:
        yield c


@pytest.fixture
def operator(service: RunningService) -> Iterator[CoefficientClient]:
    with CoefficientClient(f"127.0.0.1:{service.grpc_port}", timeout=10.0, token=TOKEN) as c:
        yield c


@pytest.fixture
def http(service: RunningService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{service.http_port}", timeout=10.0) as h:
        yield h


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _accuracies(step: int) -> list[tuple[str, float, int]]:
    return [(f"q{step}-{i}", ((step * 7 + i * 3) % 9) / 8, 8) for i in range(6)]


# --- the learner's loop


def test_a_full_aer_run_follows_the_strategy_step_for_step(client: CoefficientClient, http: httpx.Client) -> None:
    st = client.start_run("run-aer", "aer", AER, {"weighting": "threshold"}, resume=False)
    assert (st["strategy"], st["has_step"], st["alpha"], st["initial_entropy"]) == ("aer", False, 0.0, None)
    assert st["params"]["rho"] == 0.5 and st["options"] == {"weighting": "threshold"}

    core = build_strategy("aer", **AER, weighting="threshold")
    cs = core.initial_state()
    entropies = [2.2, 1.8, 1.9, 1.2, 0.8, 0.5, 0.4, 0.6, 1.1, 1.6]
    for step, h in enumerate(entropies):
        prompts = _accuracies(step)
        alpha, weights, target = client.get_coefficients("run-aer", step, prompts)
        assert alpha == core.coefficient(cs)
        assert weights == core.prompt_weights(cs, [a for _, a, _ in prompts])
        assert target == cs.target_entropy
        st = client.report_entropy("run-aer", step, h, num_tokens=1000 + step)
        cs = core.observe(cs, entropy=h)
        assert (st["alpha"], st["target_entropy"], st["initial_entropy"]) == (
            core.coefficient(cs),
            cs.target_entropy,
            cs.initial_entropy,
        )
        assert (st["step"], st["observations"], st["last_entropy"]) == (step, step + 1, h)
    assert cs.initial_entropy == pytest.approx(2.0) and 0 < cs.alpha <= 0.01  # α moved and stayed within bounds

    rows = http.get("/v1/runs/run-aer/history").json()
    assert [r["step"] for r in rows] == list(range(len(entropies)))
    replay = core.initial_state()
    for row, h in zip(rows, entropies, strict=True):
        prompts = _accuracies(row["step"])
        accs = [a for _, a, _ in prompts]
        assert row["alpha"] == core.coefficient(replay) and row["mean_entropy"] == h
        assert row["mean_accuracy"] == pytest.approx(sum(accs) / len(accs))
        assert row["mean_prompt_weight"] == pytest.approx(sum(core.prompt_weights(replay, accs)) / len(accs))
        replay = core.observe(replay, entropy=h)
        assert row["alpha_next"] == core.coefficient(replay) and row["target_entropy"] == replay.target_entropy


def test_start_run_creates_resumes_and_refuses_duplicates(client: CoefficientClient) -> None:
    client.start_run("run-r", "aer", {"rho": 0.5}, {}, resume=False)
    client.report_entropy("run-r", 0, 1.5, 10)
    with pytest.raises(RunExistsError, match="exists"):
        client.start_run("run-r", "aer", {"rho": 0.5}, {}, resume=False)
    resumed = client.start_run("run-r", "fixed", {"alpha": 0.1}, {}, resume=True)  # the stored run wins
    assert (resumed["strategy"], resumed["initial_entropy"], resumed["step"]) == ("aer", 1.5, 0)
    fresh = client.start_run("run-new", "skywork", {"target_entropy": 0.3}, {}, resume=True)
    assert fresh["strategy"] == "skywork" and fresh["target_entropy"] == 0.3 and not fresh["has_step"]
    assert [r["run_id"] for r in client.list_runs()] == ["run-new", "run-r"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.start_run("bad id!", "aer", {}, {}), "run_id"),
        (lambda c: c.start_run("x", "bogus", {}, {}), "unknown strategy"),
        (lambda c: c.start_run("x", "aer", {"rho": 1.5}, {}), "rho"),
        (lambda c: c.start_run("x", "aer", {"rho": math.nan}, {}), "finite"),
        (lambda c: c.start_run("x", "aer", {"nope": 1.0}, {}), "unknown parameter"),
        (lambda c: c.start_run("x", "aer", {}, {"weighting": "cubic"}), "weighting"),
        (lambda c: c.get_coefficients("base", 0, [("a", 1.5, 4)]), r"accuracies\[0\]"),
        (lambda c: c.get_coefficients("base", 0, [("a", math.nan, 4)]), "finite"),
        (lambda c: c.report_entropy("base", 0, math.inf, 10), "mean_entropy"),
        (lambda c: c.report_entropy("base", 0, -1.0, 10), "mean_entropy"),
        (lambda c: c.report_entropy("base", 0, 1.0, 0), "num_tokens"),
        (lambda c: c.report_entropy("base", 0, 1.0, 10, accuracy_by_difficulty={"hard": 1.5}), "hard"),
        (lambda c: c.report_entropy("base", 0, 1.0, 10, accuracy_by_difficulty={"": 0.5}), "bucket names"),
        (lambda c: c.report_entropy("base", 0, 1.0, 10, response_length=math.nan), "response_length"),
        (lambda c: c.report_entropy("base", 0, 1.0, 10, response_length=-1.0), "response_length"),
        (lambda c: c.report_entropy("base", 4, 1.0, 10, total_steps=4), "total_steps"),
        (lambda c: c.report_entropy("base", 0, 1.0, 10, total_steps=0), "total_steps"),
    ],
)
def test_bad_values_are_invalid_argument(client: CoefficientClient, call, match: str) -> None:
    client.start_run("base", "aer", {}, {})
    with pytest.raises(InvalidArgumentError, match=match) as info:
        call(client)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert client.get_state("base")["version"] == 1  # nothing changed


def test_both_request_forms_give_the_same_answer(client: CoefficientClient, service: RunningService) -> None:
    from aerplane.rpc.v1 import coefficient_pb2 as pb
    from aerplane.rpc.v1.coefficient_pb2_grpc import CoefficientServiceStub

    client.start_run("forms", "aer", {}, {"weighting": "linear"})
    prompts = [("a", 0.25, 4), ("b", 1.0, 4), ("c", 0.0, 2)]
    alpha, weights, target = client.get_coefficients("forms", 3, prompts)
    with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = CoefficientServiceStub(channel)
        stats = [pb.PromptStats(prompt_id=p, accuracy=a, num_samples=n) for p, a, n in prompts]
        reply = stub.GetCoefficients(pb.GetCoefficientsRequest(run_id="forms", step=3, prompts=stats), timeout=5)
        assert (reply.alpha, list(reply.prompt_weights), reply.HasField("target_entropy")) == (alpha, weights, False)
        assert weights == [0.75, 0.0, 1.0] and target is None
        for bad, match in [
            (pb.GetCoefficientsRequest(run_id="forms", step=3, prompts=stats, accuracies=[0.5]), "either prompts"),
            (pb.GetCoefficientsRequest(run_id="forms", step=3, accuracies=[0.5], prompt_ids=["a", "b"]), "prompt_ids"),
            (pb.GetCoefficientsRequest(run_id="forms", step=3, sample_counts=[4]), "without accuracies"),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                stub.GetCoefficients(bad, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and match in info.value.details()


def test_unknown_run_is_not_found(client: CoefficientClient, operator: CoefficientClient) -> None:
    for call in (
        lambda: client.get_state("ghost"),
        lambda: client.get_coefficients("ghost", 0, [("a", 0.5, 4)]),
        lambda: client.report_entropy("ghost", 0, 1.0, 10),
        lambda: operator.override("ghost", alpha=0.001),
        lambda: next(iter(client.watch("ghost", timeout=5))),
    ):
        with pytest.raises(RunNotFoundError, match="ghost"):
            call()


def test_reports_are_idempotent_by_step_and_unapplied_old_ones_refused(client: CoefficientClient) -> None:
    client.start_run("run-i", "aer", {"anchor_steps": 1, "eta": 0.01}, {})
    client.report_entropy("run-i", 0, 2.0, 100)
    prompts = [("a", 0.0, 4), ("b", 0.9, 4)]
    first = client.get_coefficients("run-i", 1, prompts)
    applied = client.report_entropy("run-i", 1, 0.5, 100)
    assert applied["alpha"] > 0
    # A learner that crashed after reporting step 1 retries the step: same coefficients, no second move of α.
    assert client.get_coefficients("run-i", 1, prompts) == first
    assert client.report_entropy("run-i", 1, 0.7, 100) == applied
    # One resumed from an older checkpoint re-trains (and re-reports) steps 0 and 1: each was applied once already.
    assert client.report_entropy("run-i", 0, 2.5, 100) == applied
    later = client.report_entropy("run-i", 3, 0.6, 100)  # step 2 never reported
    with pytest.raises(StaleStepError, match="older than the last applied step 3 .* never applied") as info:
        client.report_entropy("run-i", 2, 2.0, 100)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert client.get_state("run-i") == later


# --- overrides over gRPC


def test_grpc_override_needs_a_token_and_is_audited(
    client: CoefficientClient, operator: CoefficientClient, service: RunningService, http: httpx.Client
) -> None:
    client.start_run("run-o", "aer", {}, {})
    with pytest.raises(AuthError) as info:
        client.override("run-o", alpha=0.001)
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    with CoefficientClient(f"127.0.0.1:{service.grpc_port}", token="wrong") as wrong, pytest.raises(AuthError):
        wrong.override("run-o", alpha=0.001)
    with CoefficientClient(f"127.0.0.1:{service.grpc_port}", token="alice-token") as alice:
        st = alice.override("run-o", alpha=0.003, reason="more exploration")
    assert st["alpha"] == 0.003 and st["alpha_pinned"]
    st = operator.override("run-o", frozen=True, reason="hold")
    audit = http.get("/v1/runs/run-o/audit").json()
    assert [(e["actor"], e["action"], e["transport"]) for e in audit] == [
        ("learner", "start", "grpc"),
        ("alice", "override", "grpc"),
        ("operator", "override", "grpc"),
    ]
    assert audit[1]["changes"]["alpha_pin"] == {"old": None, "new": 0.003} and audit[1]["reason"] == "more exploration"
    assert audit[2]["changes"] == {"frozen": {"old": False, "new": True}}


def test_pin_freeze_target_and_release_through_the_service(
    client: CoefficientClient, operator: CoefficientClient
) -> None:
    client.start_run("run-p", "aer", {"eta": 0.01, "anchor_steps": 1}, {})
    client.report_entropy("run-p", 0, 2.0, 100)  # H_0 = 2, H* = 1
    operator.override("run-p", alpha=0.005)
    for step in (1, 2):
        assert client.get_coefficients("run-p", step, [])[0] == 0.005
        assert client.report_entropy("run-p", step, 0.1, 100)["alpha"] == 0.005
    st = operator.override("run-p", release=True, target_entropy=0.05, frozen=True, reason="new target, frozen")
    assert (st["alpha_pinned"], st["frozen"], st["target_entropy"], st["target_overridden"]) == (
        False,
        True,
        0.05,
        True,
    )
    st = client.report_entropy("run-p", 3, 0.5, 100)
    assert st["alpha"] == 0.005 and st["last_entropy"] == 0.5  # frozen: α held, entropy recorded
    st = operator.override("run-p", frozen=False)
    st = client.report_entropy("run-p", 4, 0.5, 100)  # H above the overridden target 0.05: α falls
    assert st["alpha"] == pytest.approx(max(0.0, 0.005 + 0.01 * (0.05 - 0.5) / 0.05))
    st = operator.override("run-p", release=True)
    assert st["target_entropy"] == 1.0 and not st["target_overridden"]


def test_watch_state_receives_an_override(client: CoefficientClient, operator: CoefficientClient) -> None:
    client.start_run("run-w", "aer", {}, {})
    seen: list[dict] = []
    subscribed = threading.Event()

    def watch() -> None:
        for state in client.watch("run-w", timeout=30):
            seen.append(state)
            subscribed.set()
            if state["alpha_pinned"] and state["frozen"]:
                return

    t = threading.Thread(target=watch)
    t.start()
    assert subscribed.wait(10)
    operator.override("run-w", alpha=0.002, reason="watch me")
    client.report_entropy("run-w", 0, 1.0, 10)
    operator.override("run-w", frozen=True)
    t.join(30)
    assert not t.is_alive()
    assert [s["version"] for s in seen] == [1, 2, 3, 4]  # the initial state, then every change in order
    assert seen[1]["alpha_pinned"] and seen[1]["alpha"] == 0.002
    assert seen[2]["last_entropy"] == 1.0 and seen[3]["frozen"]


def test_health_and_reflection(service: RunningService) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "aerplane.v1.CoefficientService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in next(responses).list_services_response.service}
        assert {"aerplane.v1.CoefficientService", "grpc.health.v1.Health"} <= names


# --- REST


def test_rest_reads_runs_state_history_and_audit(client: CoefficientClient, http: httpx.Client) -> None:
    client.start_run("run-h", "aer", {"anchor_steps": 1}, {})
    client.get_coefficients("run-h", 0, [("a", 0.0, 4), ("b", 1.0, 4)])
    st = client.report_entropy("run-h", 0, 1.6, 100)
    runs = http.get("/v1/runs").json()
    assert [r["run_id"] for r in runs] == ["run-h"]
    detail = http.get("/v1/runs/run-h").json()
    assert {k: detail[k] for k in st} == st  # the RunState fields, same names and values
    assert detail["overrides"] == {"alpha": None, "target_entropy": None, "frozen": False}
    assert http.get("/v1/runs/run-h/history").json() == [
        {
            "step": 0,
            "alpha": 0.0,
            "mean_entropy": 1.6,
            "target_entropy": 0.8,
            "mean_prompt_weight": 0.5,
            "mean_accuracy": 0.5,
            "num_prompts": 2,
            "num_tokens": 100,
            "alpha_next": 0.0,
            "p_term": None,  # the anchoring step: no update, no terms
            "i_term": None,
            "d_term": None,
            "accuracy_by_difficulty": None,  # the learner sent none with this report
            "response_length": None,
        }
    ]
    assert runs[0]["mean_prompt_weight"] == 0.5 and runs[0]["mean_accuracy"] == 0.5  # the latest batch's means
    assert not runs[0]["finished"] and runs[0]["total_steps"] is None
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/runs", "/v1/runs/{run_id}/coefficients", "/v1/runs/{run_id}/overrides"} <= set(paths)


def test_a_reports_figures_reach_the_history_and_its_last_step_finishes_the_run(
    client: CoefficientClient, http: httpx.Client
) -> None:
    client.start_run("run-f", "aer", {"anchor_steps": 1}, {})
    figures = [({"easy": 0.75, "hard": 0.125}, 180.5), ({"easy": 1.0, "hard": 0.25}, 150.0)]
    for step, (buckets, length) in enumerate(figures):
        st = client.report_entropy(
            "run-f", step, 1.5, 100, accuracy_by_difficulty=buckets, response_length=length, total_steps=3
        )
        assert st["total_steps"] == 3 and not st["finished"]
    rows = http.get("/v1/runs/run-f/history").json()
    assert [(r["accuracy_by_difficulty"], r["response_length"]) for r in rows] == figures
    # Figures do not move α: the same entropies without them give the same α.
    client.start_run("run-plain", "aer", {"anchor_steps": 1}, {})
    plain = [client.report_entropy("run-plain", step, 1.5, 100) for step in range(2)]
    assert plain[-1]["alpha"] == st["alpha"] and plain[-1]["total_steps"] is None

    last = client.report_entropy("run-f", 2, 1.4, 100, total_steps=3)  # no figures this time: none kept
    assert last["finished"] and http.get("/v1/runs/run-f").json()["finished"]
    assert http.get("/v1/runs/run-f/history").json()[2]["accuracy_by_difficulty"] is None
    assert client.report_entropy("run-f", 2, 1.4, 100, total_steps=3) == last  # applied once, as before
    resumed = client.report_entropy("run-f", 3, 1.3, 100, total_steps=6)  # resumed with more steps: live again
    assert resumed["total_steps"] == 6 and not resumed["finished"]
    assert client.report_entropy("run-f", 4, 1.3, 100)["total_steps"] == 6  # kept when a report leaves it out


def test_rest_override_flow(client: CoefficientClient, http: httpx.Client) -> None:
    client.start_run("run-x", "aer", {"anchor_steps": 1}, {})
    client.report_entropy("run-x", 0, 2.0, 100)
    r = http.patch(
        "/v1/runs/run-x/coefficients",
        json={"alpha": 0.004, "params": {"tau": 0.6, "eta": 0.005}, "reason": "hard set"},
        headers={"Authorization": "Bearer alice-token"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["alpha"] == 0.004 and body["alpha_pinned"] and body["params"]["tau"] == 0.6
    assert client.get_coefficients("run-x", 1, [("a", 0.5, 4)]) == (0.004, [1.0], 1.0)  # τ = 0.6 now
    r = http.patch("/v1/runs/run-x/coefficients", json={"target_entropy": 1.5, "frozen": True}, headers=AUTH)
    assert r.json()["target_entropy"] == 1.5 and r.json()["frozen"]
    r = http.delete("/v1/runs/run-x/overrides", params={"reason": "done"}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert not body["alpha_pinned"] and not body["frozen"] and body["target_entropy"] == 1.0
    assert body["params"]["tau"] == 0.6  # parameter changes are configuration: they stay
    audit = http.get("/v1/runs/run-x/audit").json()
    assert [(e["actor"], e["action"], e["reason"]) for e in audit[1:]] == [
        ("alice", "override", "hard set"),
        ("operator", "override", ""),
        ("operator", "release", "done"),
    ]
    assert audit[1]["changes"]["params.tau"] == {"old": 0.4, "new": 0.6}
    assert audit[3]["changes"]["target_entropy"] == {"old": 1.5, "new": 1.0}
    assert all(e["at"].endswith("Z") for e in audit)


def test_rest_mutations_need_the_token_and_never_log_it(
    client: CoefficientClient, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    client.start_run("run-a", "aer", {}, {})
    caplog.set_level(logging.DEBUG)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
        r = http.patch("/v1/runs/run-a/coefficients", json={"alpha": 0.001}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert http.delete("/v1/runs/run-a/overrides", headers=headers).status_code == 401
    assert http.get("/v1/runs/run-a").json()["version"] == 1
    assert http.patch("/v1/runs/run-a/coefficients", json={"alpha": 0.001}, headers=AUTH).status_code == 200
    assert TOKEN not in caplog.text and "alice-token" not in caplog.text


# --- tokens by role: operator, read-only, learner

READ_TOKEN, LEARNER_TOKEN = "s3cret-read-token", "s3cret-learner-token"
ALL_TOKENS = (TOKEN, READ_TOKEN, LEARNER_TOKEN, "alice-token", "grafana-token")


@pytest.fixture
def locked(redis_url: str) -> Iterator[RunningService]:
    """A service with every kind of token: reads, the learner's calls and mutations all need one."""
    settings = CoefficientSettings(
        redis_url=redis_url,
        host="127.0.0.1",
        grpc_port=0,
        http_port=0,
        api_token=TOKEN,
        api_tokens="alice:alice-token",
        read_token=READ_TOKEN,
        read_tokens="grafana:grafana-token",
        learner_token=LEARNER_TOKEN,
        watch_poll_seconds=0.2,
        shutdown_grace_seconds=1.0,
    )
    svc = start(settings)
    try:
        yield svc
    finally:
        svc.stop()


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def test_rest_reads_need_a_token_once_a_read_token_exists_and_only_operators_mutate(locked: RunningService) -> None:
    with CoefficientClient(f"127.0.0.1:{locked.grpc_port}", timeout=10, token=LEARNER_TOKEN) as learner:
        learner.start_run("guarded", "aer", {}, {})
    with httpx.Client(base_url=f"http://127.0.0.1:{locked.http_port}", timeout=10) as http:
        for path in ("/v1/runs", "/v1/runs/guarded", "/v1/runs/guarded/history", "/v1/runs/guarded/audit"):
            for token in (None, "wrong"):
                r = http.get(path, headers=_bearer(token))
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            for token in (READ_TOKEN, "grafana-token", LEARNER_TOKEN, TOKEN, "alice-token"):
                assert http.get(path, headers=_bearer(token)).status_code == 200, (path, token)
        for token, status in [(None, 401), ("wrong", 401), (READ_TOKEN, 403), (LEARNER_TOKEN, 403)]:
            r = http.patch("/v1/runs/guarded/coefficients", json={"alpha": 0.001}, headers=_bearer(token))
            assert r.status_code == status, (token, r.text)
            assert http.delete("/v1/runs/guarded/overrides", headers=_bearer(token)).status_code == status
        assert "operator token" in r.json()["detail"]
        assert http.patch(
            "/v1/runs/guarded/coefficients", json={"alpha": 0.001}, headers=_bearer("alice-token")
        ).is_success
        audit = http.get("/v1/runs/guarded/audit", headers=_bearer(READ_TOKEN)).json()
        assert [(e["actor"], e["action"]) for e in audit] == [("learner", "start"), ("alice", "override")]
        for ops in ("/healthz", "/readyz", "/metrics"):  # probes and Prometheus never need a token
            assert http.get(ops).status_code == 200
        assert 'aerplane_coefficient_auth_failures_total{transport="rest"} 16.0' in http.get("/metrics").text


def test_grpc_calls_need_the_token_of_their_role(locked: RunningService) -> None:
    target = f"127.0.0.1:{locked.grpc_port}"
    with (
        CoefficientClient(target, timeout=10) as anonymous,
        CoefficientClient(target, timeout=10, token=READ_TOKEN) as reader,
        CoefficientClient(target, timeout=10, token=LEARNER_TOKEN) as learner,
        CoefficientClient(target, timeout=10, token=TOKEN) as operator,
    ):
        for client, code in [(anonymous, grpc.StatusCode.UNAUTHENTICATED), (reader, grpc.StatusCode.PERMISSION_DENIED)]:
            for call in (
                lambda c: c.start_run("g", "aer", {}, {}),
                lambda c: c.get_coefficients("g", 0, [("a", 0.5, 4)]),
                lambda c: c.report_entropy("g", 0, 1.0, 10),
            ):
                with pytest.raises(AuthError) as info:
                    call(client)
                assert info.value.code == code
        learner.start_run("g", "aer", {"anchor_steps": 1}, {})
        assert learner.get_coefficients("g", 0, [("a", 0.5, 4)])[1] == [0.0]
        assert learner.report_entropy("g", 0, 1.0, 10)["step"] == 0
        for client in (reader, learner, operator):  # reads: any token
            assert client.get_state("g")["run_id"] == "g" and [r["run_id"] for r in client.list_runs()] == ["g"]
            assert next(iter(client.watch("g", timeout=10)))["run_id"] == "g"
        for call in (
            lambda: anonymous.get_state("g"),
            lambda: anonymous.list_runs(),
            lambda: next(anonymous.watch("g")),
        ):
            with pytest.raises(AuthError) as info:
                call()
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        for client in (reader, learner):  # mutations: operators only
            with pytest.raises(AuthError) as info:
                client.override("g", alpha=0.001)
            assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert operator.override("g", alpha=0.001)["alpha_pinned"]
        assert operator.report_entropy("g", 1, 1.0, 10)["step"] == 1  # an operator may do what the learner does
    with grpc.insecure_channel(target) as channel:  # health and reflection stay open
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_only_an_operator_token_keeps_reads_and_the_learner_open(client: CoefficientClient, http: httpx.Client) -> None:
    """`AERPLANE_API_TOKEN` (and named operator tokens) alone: the behaviour before read and learner tokens."""
    client.start_run("compat", "aer", {}, {})  # no token: the learner's calls are open
    client.get_coefficients("compat", 0, [("a", 0.5, 4)])
    assert http.get("/v1/runs/compat").status_code == 200  # reads too
    assert http.patch("/v1/runs/compat/coefficients", json={"alpha": 0.001}).status_code == 401
    assert http.patch("/v1/runs/compat/coefficients", json={"alpha": 0.001}, headers=AUTH).status_code == 200


def test_openapi_declares_every_status_and_where_a_token_is_needed(http: httpx.Client, locked: RunningService) -> None:
    statuses = {
        ("get", "/v1/runs"): {"200", "401", "503"},
        ("get", "/v1/runs/{run_id}"): {"200", "401", "404", "422", "503"},
        ("get", "/v1/runs/{run_id}/history"): {"200", "401", "404", "422", "503"},
        ("get", "/v1/runs/{run_id}/audit"): {"200", "401", "404", "422", "503"},
        ("patch", "/v1/runs/{run_id}/coefficients"): {"200", "401", "403", "404", "409", "422", "503"},
        ("delete", "/v1/runs/{run_id}/overrides"): {"200", "401", "403", "404", "422", "503"},
    }
    operator_only = http.get("/openapi.json").json()
    with httpx.Client(base_url=f"http://127.0.0.1:{locked.http_port}") as h:
        every_role = h.get("/openapi.json").json()  # the document itself is open, like /docs
    for doc, reads_secured in [(operator_only, False), (every_role, True)]:
        ops = {(m, path): op for path, item in doc["paths"].items() for m, op in item.items()}
        assert {k: set(op["responses"]) for k, op in ops.items()} == statuses
        for (method, _), op in ops.items():
            secured = method != "get" or reads_secured
            assert op.get("security") == ([{"bearer": []}] if secured else None), (method, op["operationId"])
        assert doc["components"]["securitySchemes"]["bearer"] == {
            "type": "http",
            "scheme": "bearer",
            "description": "An aerplane API token.",
        }
        links = ops[("get", "/v1/runs")]["responses"]["200"]["links"]
        assert links["getRun"] == {"operationId": "getRun", "parameters": {"run_id": "$response.body#/0/run_id"}}


def test_no_token_is_ever_logged(locked: RunningService, caplog: pytest.LogCaptureFixture) -> None:
    """Every outcome — accepted, refused, wrong role, unknown run, bad input — at DEBUG, REST and gRPC."""
    caplog.set_level(logging.DEBUG)
    target = f"127.0.0.1:{locked.grpc_port}"
    with httpx.Client(base_url=f"http://127.0.0.1:{locked.http_port}", timeout=10) as http:
        for token in (*ALL_TOKENS, None, "Bearer-lookalike"):
            with CoefficientClient(target, timeout=10, token=token) as c:
                for call in (
                    lambda: c.start_run("logs", "aer", {}, {}, resume=True),
                    lambda: c.get_coefficients("logs", 0, [("a", 0.5, 4)]),
                    lambda: c.report_entropy("logs", 0, 1.0, 10),
                    lambda: c.get_state("nope"),
                    lambda: c.override("logs", alpha=0.001, reason="log test"),
                    lambda: c.override("logs", alpha=5.0),
                ):
                    try:
                        call()
                    except CoefficientError:
                        pass
            headers = _bearer(token)
            http.get("/v1/runs/logs", headers=headers)
            http.get("/v1/runs/nope/history", headers=headers)
            http.patch("/v1/runs/logs/coefficients", json={"alpha": 0.002}, headers=headers)
            http.patch("/v1/runs/logs/coefficients", json={"alpha": 0.5}, headers=headers)
            http.patch("/v1/runs/logs/coefficients", content=b"{bad", headers={**headers, "Content-Type": "x"})
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for token in ALL_TOKENS:
        assert token not in caplog.text


def test_rest_unknown_run_is_404(http: httpx.Client) -> None:
    for method, path in [
        ("GET", "/v1/runs/ghost"),
        ("GET", "/v1/runs/ghost/history"),
        ("GET", "/v1/runs/ghost/audit"),
        ("DELETE", "/v1/runs/ghost/overrides"),
    ]:
        assert http.request(method, path, headers=AUTH).status_code == 404, path
    assert http.patch("/v1/runs/ghost/coefficients", json={"alpha": 0.001}, headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"alpha": NaN}', "finite"),
        ('{"alpha": Infinity}', "finite"),
        ('{"target_entropy": -Infinity}', "finite"),
        ('{"alpha": -0.001}', "greater than or equal"),
        ('{"alpha": 5}', "less than or equal"),
        ('{"target_entropy": 0}', "greater than"),
        ('{"alpha": "0.1"}', "valid number"),
        ('{"frozen": "yes"}', "valid boolean"),
        ('{"frozen": 1}', "valid boolean"),
        ('{"params": {"eta": -1.0}}', "greater than or equal to 0"),
        ('{"params": {"rho": 1.5}}', "less than or equal to 1"),
        ('{"params": {"bogus": 1.0}}', "Extra inputs"),
        ('{"params": {"anchor_steps": 1.5}}', "multiple of 1"),
        ('{"params": {"eta": NaN}}', "finite"),
        ('{"params": [1, 2]}', "valid dictionary"),
        ('{"options": {"weighting": "cubic"}}', "weighting"),
        ('{"strategy": "bogus"}', "'skywork'"),
        ('{"unexpected": 1}', "Extra inputs"),
        ('{"alpha": 0.001, "run_id": "other"}', "Extra inputs"),
        ("{}", "nothing to change"),
        ('{"reason": "just a reason", "release": false}', "nothing to change"),
        ('{"alpha": ', "JSON"),
        ("[1, 2]", "valid dictionary"),
        ("", "Field required"),
    ],
)
def test_rest_bad_bodies_get_422_with_a_message(
    client: CoefficientClient, http: httpx.Client, content: str, match: str
) -> None:
    client.start_run("run-v", "aer", {}, {})
    r = http.patch("/v1/runs/run-v/coefficients", content=content, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert match.lower() in r.text.lower()
    assert http.get("/v1/runs/run-v").json()["version"] == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"alpha": 0.5}, "alpha: must be within"),  # beyond the run's alpha_max
        ({"params": {"alpha_min": 0.5, "alpha_max": 0.1}}, "alpha_min: must be <= alpha_max"),
        ({"params": {"alpha": 0.1}}, "unknown parameter for strategy 'aer'"),  # fixed's parameter
        ({"strategy": "fixed", "params": {"eta": 0.1}}, "unknown parameter for strategy 'fixed'"),
        ({"strategy": "none", "target_entropy": 1.0}, "has no target entropy"),
        ({"strategy": "fixed", "options": {"weighting": "linear"}}, "weighting"),
    ],
)
def test_rest_changes_the_run_cannot_take_are_409(
    client: CoefficientClient, http: httpx.Client, body: dict, match: str
) -> None:
    """Bodies that pass the schema but do not fit the run (its strategy, its bounds) conflict with its state."""
    client.start_run("run-c", "aer", {}, {})
    r = http.patch("/v1/runs/run-c/coefficients", json=body, headers=AUTH)
    assert r.status_code == 409, r.text
    assert match in r.json()["detail"]
    assert http.get("/v1/runs/run-c").json()["version"] == 1


def test_rest_oversized_bodies_and_bad_paths_get_422(
    client: CoefficientClient, http: httpx.Client, service: RunningService
) -> None:
    client.start_run("run-big", "aer", {}, {})
    big = '{"reason": "' + "x" * (service.settings.max_body_bytes + 10) + '", "alpha": 0.001}'
    r = http.patch("/v1/runs/run-big/coefficients", content=big, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "larger than" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield big.encode()[:1000]
        yield big.encode()[1000:]

    r = http.patch(
        "/v1/runs/run-big/coefficients", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "larger than" in r.json()["detail"]
    assert http.get("/v1/runs/bad%20id!").status_code == 422
    assert http.get("/v1/runs/run-big/history", params={"limit": 0}).status_code == 422
    assert http.get("/v1/runs/run-big/history", params={"since": "x"}).status_code == 422
    assert http.get("/v1/runs/run-big").json()["version"] == 1


# --- metrics


def test_metrics_show_per_run_gauges_and_request_counts(
    client: CoefficientClient, operator: CoefficientClient, http: httpx.Client
) -> None:
    client.start_run("run-m", "aer", {"anchor_steps": 1, "eta": 0.01}, {})
    client.get_coefficients("run-m", 0, [("a", 0.0, 4), ("b", 1.0, 4), ("c", 0.2, 4), ("d", 0.9, 4)])
    client.report_entropy("run-m", 0, 2.0, 100)
    st = client.report_entropy("run-m", 1, 0.5, 100)
    operator.override("run-m", frozen=True)
    http.get("/v1/runs/run-m")
    http.get("/v1/runs/ghost")
    text = http.get("/metrics").text
    samples = _samples(text)
    assert samples['aerplane_coefficient_alpha{run_id="run-m"}'] == st["alpha"] > 0
    assert samples['aerplane_coefficient_target_entropy{run_id="run-m"}'] == 1.0
    assert samples['aerplane_coefficient_initial_entropy{run_id="run-m"}'] == 2.0
    assert samples['aerplane_coefficient_last_entropy{run_id="run-m"}'] == 0.5
    assert samples['aerplane_coefficient_mean_prompt_weight{run_id="run-m"}'] == 0.5
    assert samples['aerplane_coefficient_step{run_id="run-m"}'] == 1.0
    assert samples['aerplane_coefficient_frozen{run_id="run-m"}'] == 1.0
    assert samples['aerplane_coefficient_grpc_requests_total{code="OK",method="ReportEntropy"}'] == 2.0
    assert samples['aerplane_coefficient_grpc_request_duration_seconds_count{method="GetCoefficients"}'] == 1.0
    assert samples['aerplane_coefficient_http_requests_total{method="GET",route="/v1/runs/{run_id}",status="200"}'] == 1
    assert samples['aerplane_coefficient_http_requests_total{method="GET",route="/v1/runs/{run_id}",status="404"}'] == 1
    assert (
        'aerplane_coefficient_http_request_duration_seconds_bucket{le="0.001",method="GET",route="/v1/runs/{run_id}"}'
        in samples
    )
    assert samples["aerplane_coefficient_store_up"] == 1.0


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# --- nothing a client sends makes a 500

_json = hst.recursive(
    hst.none() | hst.booleans() | hst.floats() | hst.integers() | hst.text(max_size=20),
    lambda children: hst.lists(children, max_size=4) | hst.dictionaries(hst.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
_field = hst.sampled_from(
    ["alpha", "target_entropy", "params", "options", "strategy", "frozen", "reason", "release", "other"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=hst.dictionaries(_field, _json, max_size=4)
    | hst.dictionaries(_field, hst.dictionaries(hst.sampled_from(["eta", "rho", "tau", "alpha_max", "x"]), _json))
    | _json,
    raw=hst.binary(max_size=64),
)
def test_fuzzed_override_bodies_get_200_409_or_422_never_500(
    client: CoefficientClient, http: httpx.Client, body: object, raw: bytes
) -> None:
    if not http.get("/v1/runs/fuzz").is_success:
        client.start_run("fuzz", "aer", {}, {})
    text = json.dumps(body, allow_nan=True)  # NaN / Infinity tokens included
    for content in (text.encode(), raw):
        r = http.patch(
            "/v1/runs/fuzz/coefficients", content=content, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert r.status_code in (200, 409, 422), (content, r.status_code, r.text)
        if r.status_code != 200:
            assert r.json()["detail"]


def test_text_bodies_and_unusual_numbers_get_422(client: CoefficientClient, http: httpx.Client) -> None:
    client.start_run("odd", "aer", {}, {})
    for content, ctype in [
        ("alpha=0.1", "application/x-www-form-urlencoded"),
        ('{"alpha": 0.1}', "text/plain"),
        ('{"alpha": 1e400}', "application/json"),
        ('{"params": {"eta": 1e400}}', "application/json"),
        ('{"params": {"eta": {"nested": 1}}}', "application/json"),
        ('{"alpha": 0.001, "alpha": "x"}', "application/json"),
    ]:
        r = http.patch("/v1/runs/odd/coefficients", content=content, headers={**AUTH, "Content-Type": ctype})
        assert r.status_code == 422, (content, ctype, r.status_code, r.text)


@pytest.mark.slow
def test_redis_outage_is_unavailable_then_recovers(tmp_path) -> None:
    redis = LocalRedis(log_path=tmp_path / "redis.log").start()
    svc = start(
        CoefficientSettings(redis_url=redis.url, host="127.0.0.1", grpc_port=0, http_port=0, shutdown_grace_seconds=1)
    )
    try:
        with (
            CoefficientClient(f"127.0.0.1:{svc.grpc_port}", timeout=10) as c,
            httpx.Client(base_url=f"http://127.0.0.1:{svc.http_port}", timeout=30) as http,
        ):
            c.start_run("outage", "none", {}, {})
            assert http.get("/readyz").status_code == 200
            redis.kill()
            ready = http.get("/readyz")
            assert ready.status_code == 503 and "unreachable" in ready.json()["redis"]
            assert http.get("/v1/runs/outage").status_code == 503
            with pytest.raises(CoefficientError) as info:
                c.get_state("outage")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert "aerplane_coefficient_store_up 0.0" in http.get("/metrics").text
            redis.start()  # an empty Redis on the same port: the service reconnects by itself
            assert http.get("/readyz").status_code == 200
            with pytest.raises(RunNotFoundError):
                c.get_state("outage")
    finally:
        svc.stop()
        redis.stop()


def test_watchers_cannot_take_every_handler_thread(redis_url: str) -> None:
    svc = start(
        CoefficientSettings(
            redis_url=redis_url, host="127.0.0.1", grpc_port=0, http_port=0, grpc_workers=4, watch_poll_seconds=0.2
        )
    )
    try:
        with CoefficientClient(f"127.0.0.1:{svc.grpc_port}", timeout=10) as c:
            c.start_run("busy-watch", "none", {}, {})
            watches = [c.watch("busy-watch", timeout=20) for _ in range(2)]  # grpc_workers // 2 = 2 slots
            assert [next(w)["run_id"] for w in watches] == ["busy-watch"] * 2
            with pytest.raises(CoefficientError) as info:
                next(c.watch("busy-watch", timeout=20))
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert c.get_coefficients("busy-watch", 0, [("a", 0.5, 2)])[1] == [1.0]  # the learner still gets through
            for w in watches:
                w.close()
    finally:
        svc.stop()


# --- the PID terms (DESIGN §1.3) through every surface


PID = {"rho": 0.5, "eta": 0.005, "kp": 0.06, "kd": 0.05, "smoothing": 0.5, "alpha_max": 0.05}


def test_pid_terms_show_in_grpc_rest_history_and_metrics_and_replay_across_a_restart(redis_url: str) -> None:
    """The terms of every update are visible per step; a second service process on the same Redis continues the
    controller (integral and filtered measurement) exactly where the first left it."""
    core = build_strategy("aer", **PID)
    cs = core.initial_state()
    entropies = [1.0, 0.7, 0.35, 0.3, 0.45, 0.6, 0.52]
    settings = CoefficientSettings(redis_url=redis_url, host="127.0.0.1", grpc_port=0, http_port=0, api_token=TOKEN)
    for half in (entropies[:4], entropies[4:]):  # a restart between the halves
        svc = start(settings)
        try:
            with CoefficientClient(f"127.0.0.1:{svc.grpc_port}", timeout=10.0) as c:
                if cs.step == 0:
                    c.start_run("run-pid", "aer", PID, {}, resume=False)
                for h in half:
                    step = cs.step
                    assert c.get_coefficients("run-pid", step, [("q", 0.0, 8)])[0] == core.coefficient(cs)
                    st = c.report_entropy("run-pid", step, h, num_tokens=100)
                    cs = core.observe(cs, entropy=h)
                    assert (st["alpha"], st["p_term"], st["i_term"], st["d_term"]) == (
                        cs.alpha,
                        *(cs.terms or (None,) * 3),
                    )
            with httpx.Client(base_url=f"http://127.0.0.1:{svc.http_port}", timeout=10.0) as h:
                state = h.get("/v1/runs/run-pid").json()
                assert (state["p_term"], state["i_term"], state["d_term"]) == cs.terms
                samples = _samples(h.get("/metrics").text)
                assert samples['aerplane_coefficient_p_term{run_id="run-pid"}'] == cs.p_term
                assert samples['aerplane_coefficient_i_term{run_id="run-pid"}'] == cs.i_term
                assert samples['aerplane_coefficient_d_term{run_id="run-pid"}'] == cs.d_term
                rows = h.get("/v1/runs/run-pid/history").json()
        finally:
            svc.stop()
    assert cs.d_term != 0 and cs.p_term != 0  # the run exercised every term
    replay = core.initial_state()
    for row, h in zip(rows, entropies, strict=True):
        replay = core.observe(replay, entropy=h)
        assert (row["p_term"], row["i_term"], row["d_term"]) == (replay.terms or (None, None, None))
        assert row["alpha_next"] == replay.alpha == pytest.approx(min(max(sum(replay.terms or (0.0,)), 0.0), 0.05))
    assert rows[0]["p_term"] is None  # the anchoring step has no update


def test_pid_gains_change_mid_run_through_patch(client: CoefficientClient, http: httpx.Client) -> None:
    client.start_run("run-gains", "aer", {"eta": 0.01, "alpha_max": 0.1}, {})
    client.report_entropy("run-gains", 0, 1.0, 100)
    r = http.patch(
        "/v1/runs/run-gains/coefficients",
        json={"params": {"kp": 0.1, "kd": 0.02, "smoothing": 0.3}, "reason": "add P and D"},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    assert {k: r.json()["params"][k] for k in ("kp", "kd", "smoothing")} == {"kp": 0.1, "kd": 0.02, "smoothing": 0.3}
    st = client.report_entropy("run-gains", 1, 0.25, 100)  # e = 0.5: P = 0.05, I = 0.005
    assert st["p_term"] == pytest.approx(0.05) and st["i_term"] == pytest.approx(0.005)
    assert st["alpha"] == pytest.approx(0.055) and st["d_term"] == 0.0  # no derivative on the first update
    audit = http.get("/v1/runs/run-gains/audit").json()
    assert audit[-1]["changes"]["params.kp"] == {"old": 0.0, "new": 0.1}
    bad = http.patch(
        "/v1/runs/run-gains/coefficients", json={"params": {"smoothing": 1.0}, "reason": "x"}, headers=AUTH
    )
    assert bad.status_code == 422 and "smoothing" in bad.text


def test_history_between_reads_a_few_steps_exactly_as_the_whole_history_has_them(redis_url: str) -> None:
    """The console's stream reads the steps since its last event by name (`history_between`): the same rows as the
    full `history`, with a step's several batches (a retry of one counted once) and the report's figures."""
    from aerplane.coefficient.store import STEPS_PER_READ, RunStore
    from aerplane.core.step_figures import StepFigures

    store = RunStore(redis_url)
    try:
        store.start_run("between", "aer", {"anchor_steps": 2}, {}, resume=False)
        for step in range(10):
            store.get_coefficients("between", step, [0.25, 0.5, 1.0])
            if step % 3 == 0:  # a second batch for the step, then a retry of it: counted once
                store.get_coefficients("between", step, [0.0, 0.125])
                store.get_coefficients("between", step, [0.0, 0.125])
            if step < 8:
                figures = StepFigures({"easy": 0.5, "hard": step / 10}, 100.0 + step, 10) if step % 2 else StepFigures()
                store.report_entropy("between", step, 2.0 - step / 10, 100, figures)
        whole = store.history("between", since=0, limit=100)
        assert [r["num_prompts"] for r in whole[:4]] == [5, 3, 3, 5]
        assert whole[3]["accuracy_by_difficulty"] == {"easy": 0.5, "hard": 0.3} and whole[3]["response_length"] == 103
        for first, last in [(0, 9), (3, 5), (7, 7), (8, 12), (12, 20), (5, 4), (0, STEPS_PER_READ + 5)]:
            expected = [r for r in whole if first <= r["step"] <= last]
            assert store.history_between("between", first, last) == expected, (first, last)
        # A step answered before the index existed (a service from before it): read in full, nothing missing.
        store.redis.hdel("aerplane:between:coefficient:batch_fields", "4")
        assert store.history_between("between", 3, 5) == whole[3:6] and whole[4]["mean_accuracy"] is not None
    finally:
        store.close()
