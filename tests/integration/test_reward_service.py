"""`aerplane reward serve` as a real subprocess against a real Redis: scores come out exactly once through crashes,
SIGTERM, poison messages and a Redis restart; POST /v1/verify survives adversarial input while serving others."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from reward_cases import HACK_CASES, MATH_CASES
from service_support import generated_sample

from aerplane.common import messages as m
from aerplane.common.process import ManagedProcess, free_port
from aerplane.common.redis_server import LocalRedis
from aerplane.common.streams import StreamClient

RUN = "svc"
SLOW = r"\boxed{9^{9^{9^9}}}"  # keeps a worker busy until the per-item timeout
AERPLANE = str(Path(sys.executable).parent / "aerplane")


def generated(i: int, text: str, truth: str, task: str = "math") -> m.GeneratedSample:
    return generated_sample(i, run=RUN, text=text, truth=truth, task=task)


def start_service(tmp_path: Path, redis_url: str, *extra: str, name: str = "reward") -> tuple[ManagedProcess, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [AERPLANE, "reward", "serve", "--redis-url", redis_url, "--run-id", RUN, "--host", "127.0.0.1"]
    argv += ["--http-port", str(port), "--workers", "2", *extra]
    proc = ManagedProcess(name, argv, log_path=tmp_path / f"{name}.log", ready_url=f"{base}/readyz")
    proc.start()
    try:
        proc.wait_ready(60)
    except BaseException:
        proc.stop()
        raise
    return proc, base


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for p in started:
        p.stop()


def collect(client: StreamClient, want: int, *, timeout: float = 60.0, settle: float = 1.5) -> list[m.ScoredSample]:
    """Read the scored stream as the learner would until `want` arrived, then keep listening `settle` s for extras."""
    out = client.consumer(m.ROLLOUT_SCORED, "learner", "test-learner", m.ScoredSample)
    got: list[m.ScoredSample] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for d in out.read(count=100, block_ms=200):
            got.append(d.record)  # type: ignore[arg-type]
            out.ack(d.id)
    end = time.monotonic() + settle
    while time.monotonic() < end:
        for d in out.read(count=100, block_ms=200):
            got.append(d.record)  # type: ignore[arg-type]
            out.ack(d.id)
    return got


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- the stream path --------------------------------------------------------------------------------------------


def test_batch_in_right_scores_out_exactly_once_and_poison_dead_lettered(
    tmp_path: Path, redis_url: str, services: list[ManagedProcess]
) -> None:
    cases = [
        (r"so \boxed{\frac{1}{2}}", "0.5", "math", 1.0, "match"),
        (r"\boxed{0.3}", "1/3", "math", 0.0, "mismatch"),
        ("I give up", "7", "math", 0.0, "no_answer"),
        ("9" * 70_000, "9", "math", 0.0, "too_long"),
        (r"\boxed{5}", "5", "no_such_task", 0.0, "error"),
        (r"\boxed{-14282}", "-14282", "chain_sum", 1.0, "match"),
        ("the total is 106475279601", "106475279601", "basic_arithmetic", 1.0, "match"),
        (r"\boxed{28,080}", "28080", "gsm_symbolic", 1.0, "match"),
        (r"\boxed{13}", "12", "basic_arithmetic", 0.0, "mismatch"),
    ] * 3
    client = StreamClient(redis_url, RUN)
    key = client.key(m.ROLLOUT_GENERATED)
    client.publish_many(m.ROLLOUT_GENERATED, [generated(i, *c[:3]) for i, c in enumerate(cases)])
    client.redis.xadd(key, {"d": b"\x92 garbage"})
    client.publish(m.ROLLOUT_GENERATED, m.Event(run_id=RUN, kind="misrouted"))

    proc, base = start_service(tmp_path, redis_url, "--batch-size", "8")
    services.append(proc)
    got = collect(client, len(cases))

    assert sorted(s.prompt_id for s in got) == sorted(f"p{i}" for i in range(len(cases)))  # each exactly once
    for s in got:
        _, _, _, reward, reason = cases[int(s.prompt_id[1:])]
        assert (s.reward, s.reason) == (reward, reason), s.prompt_id
        assert s.response_token_ids == [3] and s.logprobs == [-0.5]  # the sample travels on intact
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 0
    letters = client.dead_letters()
    assert len(letters) == 2 and all(x["stream"] == key for x in letters)
    assert "not msgpack" in letters[0]["reason"] and "expected 'generated_sample'" in letters[1]["reason"]

    metrics = httpx.get(f"{base}/metrics").text
    assert 'aerplane_reward_verifications_total{reason="match",source="stream",task="math"} 3.0' in metrics
    assert 'aerplane_reward_verifications_total{reason="too_long",source="stream",task="math"} 3.0' in metrics
    assert 'aerplane_reward_verifications_total{reason="error",source="stream",task="unknown"} 3.0' in metrics
    assert "aerplane_reward_dead_letters_total 2.0" in metrics
    client.close()


def test_consumer_sigkilled_mid_batch_is_reclaimed_nothing_lost_nothing_twice(
    tmp_path: Path, redis_url: str, services: list[ManagedProcess]
) -> None:
    client = StreamClient(redis_url, RUN)
    n = 16
    samples = [generated(i, SLOW if i in (3, 11) else rf"\boxed{{{i}}}", str(i)) for i in range(n)]
    a, _ = start_service(
        tmp_path,
        redis_url,
        "--consumer",
        "a",
        "--batch-size",
        "64",
        "--timeout",
        "3",
        "--claim-idle-ms",
        "1000",
        name="reward-a",
    )
    services.append(a)
    client.publish_many(m.ROLLOUT_GENERATED, samples)
    # `a` holds the whole batch (two items take the full timeout); kill it before it can publish.
    wait_until(lambda: client.pending(m.ROLLOUT_GENERATED, "reward") == n, what="a to read the batch")
    a.kill()
    assert client.length(m.ROLLOUT_SCORED) == 0, "the kill came too late to be mid-batch"
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == n

    b, _ = start_service(
        tmp_path, redis_url, "--consumer", "b", "--timeout", "3", "--claim-idle-ms", "1000", name="reward-b"
    )
    services.append(b)
    got = collect(client, n)
    assert sorted(s.prompt_id for s in got) == sorted(f"p{i}" for i in range(n))
    by_id = {s.prompt_id: s for s in got}
    assert by_id["p3"].reason == "timeout" and by_id["p1"].reason == "match"
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 0
    assert client.dead_letters() == []
    client.close()


def test_a_batch_longer_than_claim_idle_is_not_rescored_by_another_replica(
    tmp_path: Path, redis_url: str, services: list[ManagedProcess]
) -> None:
    client = StreamClient(redis_url, RUN)
    opts = ("--batch-size", "64", "--timeout", "2.5", "--claim-idle-ms", "600")
    bases = []
    for name in ("a", "b"):
        proc, base = start_service(tmp_path, redis_url, "--consumer", name, *opts, name=f"reward-{name}")
        services.append(proc)
        bases.append(base)
    n = 4
    client.publish_many(
        m.ROLLOUT_GENERATED, [generated(i, SLOW if i == 0 else rf"\boxed{{{i}}}", str(i)) for i in range(n)]
    )
    got = collect(client, n)
    assert sorted(s.prompt_id for s in got) == [f"p{i}" for i in range(n)]

    def stream_verifications(base: str) -> float:
        text = httpx.get(f"{base}/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("aerplane_reward_verifications_total{") and 'source="stream"' in line
        )

    # The batch took ~2.5 s, four times claim_idle_ms; the heartbeat kept the idle replica from scoring it again.
    assert sum(stream_verifications(b) for b in bases) == n
    client.close()


def test_sigterm_finishes_the_batch_in_flight_then_exits(
    tmp_path: Path, redis_url: str, services: list[ManagedProcess]
) -> None:
    client = StreamClient(redis_url, RUN)
    n = 6
    proc, _ = start_service(tmp_path, redis_url, "--batch-size", "64", "--timeout", "2")
    services.append(proc)
    client.publish_many(
        m.ROLLOUT_GENERATED, [generated(i, SLOW if i == 0 else rf"\boxed{{{i}}}", str(i)) for i in range(n)]
    )
    wait_until(lambda: client.pending(m.ROLLOUT_GENERATED, "reward") == n, what="the batch to be read")
    proc.stop(timeout=30)  # SIGTERM mid-batch
    assert not proc.alive()
    assert client.length(m.ROLLOUT_SCORED) == n
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 0
    assert "consumer stopped after publishing 6 scored samples" in (tmp_path / "reward.log").read_text()
    client.close()


def test_redis_restart_mid_stream_is_survived(tmp_path: Path, services: list[ManagedProcess]) -> None:
    server = LocalRedis(data_dir=tmp_path / "redis", log_path=tmp_path / "redis.log").start()
    try:
        r = redis.Redis.from_url(server.url)
        r.config_set("appendfsync", "always")
        r.close()
        client = StreamClient(server.url, RUN, reconnect_timeout=30)
        proc, base = start_service(tmp_path, server.url, "--claim-idle-ms", "2000")
        services.append(proc)
        client.publish_many(m.ROLLOUT_GENERATED, [generated(i, rf"\boxed{{{i}}}", str(i)) for i in range(10)])
        first = collect(client, 10, settle=0.2)
        assert len(first) == 10

        server.kill()
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 503, what="/readyz to report Redis down")
        time.sleep(1.0)
        server.start()
        client.publish_many(m.ROLLOUT_GENERATED, [generated(i, rf"\boxed{{{i}}}", str(i)) for i in range(10, 20)])
        rest = collect(client, 10)
        assert sorted(s.prompt_id for s in first + rest) == sorted(f"p{i}" for i in range(20))
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz to recover")
        assert client.pending(m.ROLLOUT_GENERATED, "reward") == 0
        assert proc.alive()
        client.close()
    finally:
        for p in services:
            p.stop()
        services.clear()
        server.stop()


# --- the HTTP path ----------------------------------------------------------------------------------------------

TIMEOUT_S = 2.0
ADVERSARIAL = {
    "deeply nested braces": r"\boxed{" + "{" * 30_000 + "1" + "}" * 30_000 + "}",
    "deeply nested fractions": r"\boxed{" + r"\frac{1}{" * 3_000 + "2" + "}" * 3_000 + "}",
    "huge exponent tower": r"\boxed{9^{9^{9^9}}}",
    "huge literal": r"\boxed{" + "9" * 60_000 + "}",
    "megabytes of text": "The answer is " + "blah " * 600_000 + r"\boxed{1}",
    "lone surrogates": "\ud800\udc00\udfff \\boxed{1}",
    "a box never closed": r"\boxed{" + "3+" * 20_000,  # math-verify finds no answer in it
}


def test_verify_endpoint_adversarial_inputs_return_in_time_while_serving_others(
    tmp_path: Path, services: list[ManagedProcess]
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [AERPLANE, "reward", "serve", "--no-consume", "--host", "127.0.0.1", "--http-port", str(port)]
    argv += ["--workers", "3", "--timeout", str(TIMEOUT_S)]
    proc = ManagedProcess("reward-http", argv, log_path=tmp_path / "http.log", ready_url=f"{base}/readyz").start()
    services.append(proc)
    proc.wait_ready(60)

    # Background traffic: correct answers must keep coming back while the adversarial items are in flight.
    stop = threading.Event()
    served: list[tuple[float, str]] = []
    failures: list[str] = []

    def traffic() -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                resp = c.post(
                    "/v1/verify", json={"task": "math", "response": rf"\boxed{{{i}/2}}", "ground_truth": str(i / 2)}
                )
                if resp.status_code != 200 or resp.json()["reason"] != "match":
                    failures.append(resp.text)
                served.append((time.monotonic(), resp.json().get("reason", "")))

    t = threading.Thread(target=traffic)
    t.start()
    results: dict[str, tuple[float, dict]] = {}
    windows: dict[str, tuple[float, float]] = {}
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for name, text in ADVERSARIAL.items():
                body = json.dumps({"task": "math", "response": text, "ground_truth": "1"})  # \ud800 stays escaped
                started = time.monotonic()
                resp = c.post("/v1/verify", content=body, headers={"content-type": "application/json"})
                windows[name] = (started, time.monotonic())
                results[name] = (windows[name][1] - started, resp.json())
                assert resp.status_code == 200, (name, resp.text)
            raw = b'{"task": "math", "response": "\xff\xfe invalid \xc3\x28 utf-8 \\\\boxed{1}", "ground_truth": "1"}'
            started = time.monotonic()
            resp = c.post("/v1/verify", content=raw, headers={"content-type": "application/json"})
            results["invalid utf-8 bytes"] = (time.monotonic() - started, resp.json())
    finally:
        stop.set()
        t.join()

    for name, (elapsed, body) in results.items():
        assert elapsed <= TIMEOUT_S + 1.0, (name, elapsed, body)
        assert body["reward"] in (0.0, 1.0) and body["reason"] in scorers_reasons(), (name, body)
    assert results["megabytes of text"][1]["reason"] == "too_long"
    assert results["huge exponent tower"][1]["reason"] == "timeout"
    assert results["lone surrogates"][1]["reason"] == "match"
    assert results["invalid utf-8 bytes"][1]["reason"] == "match"
    assert results["a box never closed"][1]["reason"] == "no_answer"
    assert results["deeply nested braces"][1]["reason"] == "too_long"  # the nesting cap, before any parsing
    assert results["deeply nested fractions"][1]["reason"] == "too_long"
    assert not failures, failures[:3]
    begin, end = windows["huge exponent tower"]  # a worker is stuck for the whole timeout here
    assert sum(begin <= done <= end for done, _ in served) >= 3, "other requests were not served meanwhile"
    assert httpx.get(f"{base}/readyz").status_code == 200


def scorers_reasons() -> tuple[str, ...]:
    from aerplane.reward.scorers import REASONS

    return REASONS


def start_http_only(tmp_path: Path, services: list[ManagedProcess], *extra: str) -> str:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [AERPLANE, "reward", "serve", "--no-consume", "--host", "127.0.0.1", "--http-port", str(port), *extra]
    proc = ManagedProcess("reward-http", argv, log_path=tmp_path / "http.log", ready_url=f"{base}/readyz").start()
    services.append(proc)
    proc.wait_ready(60)
    return base


def test_verify_endpoint_reads_answer_forms_and_refuses_hacks(tmp_path: Path, services: list[ManagedProcess]) -> None:
    """The unit tests' `math` cases through a real service with its defaults (math-verify reads the response)."""
    base = start_http_only(tmp_path, services)
    cases = MATH_CASES + HACK_CASES
    items = [{"task": "math", "response": r, "ground_truth": g} for r, g, _, _ in cases]
    with httpx.Client(base_url=base, timeout=60) as c:
        batch = c.post("/v1/verify", json={"items": items})
        assert batch.status_code == 200, batch.text
        for (response, truth, reward, method), got in zip(cases, batch.json()["results"], strict=True):
            want = (reward, "match" if reward == 1.0 else "mismatch", method)
            assert (got["reward"], got["reason"], got["method"]) == want, (response, truth, got)
            assert got["answer"], (response, got)
        one = c.post(
            "/v1/verify", json={"task": "math", "response": r"so $\frac{10}{9}$ it is", "ground_truth": "10/9"}
        )
        assert one.json() == {"reward": 1.0, "reason": "match", "answer": r"\frac{10}{9}", "method": "latex"}
        none = c.post("/v1/verify", json={"task": "math", "response": "no idea", "ground_truth": "3"})
        assert none.json() == {"reward": 0.0, "reason": "no_answer", "answer": None, "method": None}


def test_verify_endpoint_forms_and_errors(tmp_path: Path, services: list[ManagedProcess]) -> None:
    """Request forms and errors, on a service with the old cut-out extraction (still an option)."""
    base = start_http_only(tmp_path, services, "--extraction", "boxed_or_last_number")
    with httpx.Client(base_url=base, timeout=30) as c:
        one = c.post("/v1/verify", json={"task": "math", "response": r"\boxed{\dfrac{1}{2}}", "ground_truth": "0.5"})
        assert one.status_code == 200 and one.json()["reward"] == 1.0 and one.json()["reason"] == "match"
        assert one.json()["method"] == "boxed"
        cut = c.post("/v1/verify", json={"task": "math", "response": r"$\frac{10}{9}$", "ground_truth": "10/9"})
        assert cut.json() == {"reward": 0.0, "reason": "mismatch", "answer": "9", "method": "last_number"}
        batch = c.post(
            "/v1/verify",
            json={
                "items": [
                    {"task": "math", "response": r"\boxed{2}", "ground_truth": "3"},
                    {"task": "basic_arithmetic", "response": "= 12", "ground_truth": "12"},
                ]
            },
        )
        assert [(r["reward"], r["reason"], r["method"]) for r in batch.json()["results"]] == [
            (0.0, "mismatch", "boxed"),
            (1.0, "match", "last_number"),
        ]
        for bad in (
            {"task": "astrology", "response": "1", "ground_truth": "1"},
            {"task": "math", "response": "1"},
            {"task": "math", "response": "1", "ground_truth": "1", "extra": 1},
            {"items": []},
            {"items": [{"task": "math"}]},
            [1, 2],
        ):
            resp = c.post("/v1/verify", json=bad)
            assert resp.status_code == 422, (bad, resp.text)
        assert c.post("/v1/verify", content=b"{not json").status_code == 422
        assert (
            "unknown task 'astrology'"
            in c.post("/v1/verify", json={"task": "astrology", "response": "1", "ground_truth": "1"}).text
        )
        assert c.get("/healthz").json() == {"status": "ok"}
        metrics = c.get("/metrics").text
    for name in (
        "aerplane_reward_verifications_total",
        "aerplane_reward_verify_seconds_bucket",
        "aerplane_reward_worker_restarts_total",
        "aerplane_reward_pool_queue_depth",
    ):
        assert name in metrics or name.replace("_total", "") in metrics, name
