"""Many clients at once lose no update: concurrent reporters, readers and overriders against one run."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest

from aerplane.coefficient.app import RunningService, start
from aerplane.coefficient.client import CoefficientClient, StaleStepError
from aerplane.coefficient.runs import Override
from aerplane.coefficient.settings import CoefficientSettings
from aerplane.coefficient.store import RunStore
from aerplane.core.strategies import build_strategy

TOKEN = "concurrency-token"


@pytest.fixture
def service(redis_url: str) -> Iterator[RunningService]:
    svc = start(
        CoefficientSettings(
            redis_url=redis_url, host="127.0.0.1", grpc_port=0, http_port=0, api_token=TOKEN, shutdown_grace_seconds=1
        )
    )
    try:
        yield svc
    finally:
        svc.stop()


def _run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait(10)
                fn()
            except BaseException as exc:  # re-raised in the test thread below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def _entropy(step: int) -> float:
    return 0.3 + (step * 37 % 23) / 10


def test_concurrent_reporters_apply_each_step_at_most_once(service: RunningService) -> None:
    target = f"127.0.0.1:{service.grpc_port}"
    params = {"anchor_steps": 2, "eta": 0.003, "alpha_max": 0.02}
    with CoefficientClient(target) as c:
        c.start_run("race", "aer", params, {})
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def reporter() -> None:
        with CoefficientClient(target, timeout=30) as c:
            for step in range(30):
                try:
                    c.report_entropy("race", step, _entropy(step), 500)
                    result = "ok"
                except StaleStepError:
                    result = "stale"  # another reporter already applied a later step
                with lock:
                    outcomes[result] += 1

    def reader() -> None:
        with CoefficientClient(target, timeout=30) as c:
            for step in range(30):
                alpha, weights, _ = c.get_coefficients("race", step, [("a", 0.1, 4), ("b", 0.8, 4)])
                assert 0.0 <= alpha <= 0.02 and weights == [1.0, 0.0]

    _run_threads([reporter] * 4 + [reader] * 2)
    assert outcomes["ok"] + outcomes["stale"] == 120

    with httpx.Client(base_url=f"http://127.0.0.1:{service.http_port}") as http:
        history = http.get("/v1/runs/race/history").json()
        state = http.get("/v1/runs/race").json()
    applied = [row for row in history if row["mean_entropy"] is not None]
    assert state["observations"] == len(applied) and state["version"] == 1 + len(applied)
    assert applied[-1]["step"] == 29 == state["step"]
    # The final state is exactly the strategy replayed over the applied steps, in step order: nothing was lost,
    # nothing applied twice.
    core = build_strategy("aer", **params)
    st = core.initial_state()
    for row in applied:
        assert row["mean_entropy"] == _entropy(row["step"])
        assert row["alpha"] is not None
        st = core.observe(st, entropy=row["mean_entropy"])
        assert row["alpha_next"] == core.coefficient(st)
    assert (state["alpha"], state["last_entropy"], state["initial_entropy"]) == (
        core.coefficient(st),
        st.last_entropy,
        st.initial_entropy,
    )


def test_concurrent_overriders_and_a_learner_lose_no_update(service: RunningService) -> None:
    target = f"127.0.0.1:{service.grpc_port}"
    with CoefficientClient(target) as c:
        c.start_run("busy", "aer", {"anchor_steps": 1}, {})
    per_thread = 12

    def learner() -> None:
        with CoefficientClient(target, timeout=30) as c:
            for step in range(40):
                c.get_coefficients("busy", step, [("a", 0.2, 4)])
                c.report_entropy("busy", step, _entropy(step), 100)

    def grpc_overrider(i: int) -> Callable[[], None]:
        def run() -> None:
            with CoefficientClient(target, timeout=30, token=TOKEN) as c:
                for k in range(per_thread):
                    c.override(
                        "busy", params={"eta": 2e-3 + (i * 100 + k) * 1e-6}, frozen=k % 3 == 0, reason=f"{i}-{k}"
                    )

        return run

    def rest_overrider(i: int) -> Callable[[], None]:
        def run() -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{service.http_port}", timeout=30) as http:
                for k in range(per_thread):
                    body = {"params": {"eta": 2e-3 + (i * 100 + k) * 1e-6}, "reason": f"{i}-{k}"}
                    r = http.patch(
                        "/v1/runs/busy/coefficients", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
                    )
                    assert r.status_code == 200, r.text

        return run

    _run_threads([learner, grpc_overrider(0), grpc_overrider(1), rest_overrider(2), rest_overrider(3)])

    with httpx.Client(base_url=f"http://127.0.0.1:{service.http_port}") as http:
        audit = http.get("/v1/runs/busy/audit").json()
        state = http.get("/v1/runs/busy").json()
        history = http.get("/v1/runs/busy/history").json()
    overrides = [e for e in audit if e["action"] == "override"]
    assert len(overrides) == 4 * per_thread
    assert Counter(e["reason"] for e in overrides) == Counter(f"{i}-{k}" for i in range(4) for k in range(per_thread))
    # Each override saw the one before it: the chain of old → new values has no gap (a lost update would break it).
    eta = 1e-3
    versions = [e["version"] for e in audit]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    for e in overrides:
        change = e["changes"]["params.eta"]
        assert change["old"] == eta
        eta = change["new"]
    assert state["params"]["eta"] == eta
    # Every report applied exactly once, alongside the overrides.
    assert state["observations"] == 40 == len([r for r in history if r["mean_entropy"] is not None])
    assert state["version"] == 1 + 40 + len(overrides)


def test_two_replicas_answer_from_the_current_run(redis_url: str) -> None:
    """A replica computes GetCoefficients from the run as it last saw it; another replica's change must win."""
    a, b = RunStore(redis_url), RunStore(redis_url)
    try:
        a.start_run("two", "aer", {"anchor_steps": 1}, {}, resume=False)
        a.report_entropy("two", 0, 2.0, 10)
        assert a.get_coefficients("two", 1, [0.5]).prompt_weights == [0.0]  # τ = 0.4
        b.override("two", Override(alpha=0.007, params={"tau": 0.6}), actor="ops", transport="test")
        answer = a.get_coefficients("two", 2, [0.5])  # a's view of the run is stale; the answer is not
        assert (answer.alpha, answer.prompt_weights) == (0.007, [1.0])
        b.report_entropy("two", 2, 0.1, 10)
        assert a.get_coefficients("two", 2, [0.5]).alpha == 0.007  # step 2 keeps its first answer
        b.override("two", Override(release=True), actor="ops", transport="test")
        assert a.get_coefficients("two", 3, [0.5]).alpha == b.get_run("two").coefficient()
        assert a.get_coefficients("two", 3, [0.2]).alpha == b.get_coefficients("two", 3, [0.9]).alpha
        rows = {r["step"]: r for r in a.history("two")}
        assert rows[3]["num_prompts"] == 3 and rows[3]["mean_accuracy"] == pytest.approx((0.5 + 0.2 + 0.9) / 3)
        assert a.conflicts >= 2
    finally:
        a.close()
        b.close()
