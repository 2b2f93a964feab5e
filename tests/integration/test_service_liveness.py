"""Liveness of real services (common.liveness): the HTTP server answers while the work loop is stuck, and /healthz
says so (503 "hung", naming the loop); the same service idle past the bound is healthy; with `exit_on_hang` the
stuck process exits by itself with `HUNG_EXIT_CODE`.

Reward (reward/app.py, the `StreamScorer` loop): the stuck part is the verification pool, whose futures come back
only when the test opens a gate (or never): what a pool whose workers can no longer be replaced looks like to the
loop. Generation (the `GenerationWorker` loop under `GenerationService`'s ops server): an engine that holds its
requests until the gate opens; waiting for a weights announcement first is waiting for input, not a hang. Learner
(`aerplane learner train`, two gloo ranks): waiting for rollouts is not a hang, a rank stopped mid-step is.
Everything else is real: the apps, the loops, the watchdogs, the HTTP servers and Redis."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import generated_sample

from aerplane.common import messages as m
from aerplane.common.liveness import HUNG_EXIT_CODE
from aerplane.common.process import ManagedProcess, free_port
from aerplane.common.streams import StreamClient
from aerplane.generation.app import GenerationService
from aerplane.generation.backends import Backend
from aerplane.generation.backends.base import Sample
from aerplane.generation.settings import GenerationSettings
from aerplane.generation.worker import GenerationWorker
from aerplane.reward.app import build_app
from aerplane.reward.settings import RewardSettings

RUN = "live"
BOUND_S = 1.0


def generated(i: int) -> m.GeneratedSample:
    return generated_sample(i, run=RUN)


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def client(redis_url: str) -> Iterator[StreamClient]:
    c = StreamClient(redis_url, RUN)
    yield c
    c.close()


def test_reward_healthz_is_hung_while_its_loop_is_stuck_and_ok_when_idle(
    redis_url: str, client: StreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    settings = RewardSettings(
        run_id=RUN,
        redis_url=redis_url,
        workers=1,
        timeout_s=0.5,
        hang_timeout_s=BOUND_S,
        exit_on_hang=False,
        block_ms=100,
    )
    app = build_app(settings)
    pool, gate, held = app.state.pool, threading.Event(), ThreadPoolExecutor(4)
    real_submit = pool.submit

    def submit_after_gate(*args: Any, **kwargs: Any) -> Future:
        return held.submit(lambda: (gate.wait(), real_submit(*args, **kwargs).result())[1])

    monkeypatch.setattr(pool, "submit", submit_after_gate)
    try:
        with TestClient(app) as c:
            wait_until(lambda: c.get("/readyz").status_code == 200, what="the service to be ready")
            time.sleep(BOUND_S * 2)  # idle, nothing on the stream, for twice the bound
            idle = c.get("/healthz")
            assert idle.status_code == 200 and idle.json()["status"] == "ok" and idle.json()["pending"] == 0

            client.publish(m.ROLLOUT_GENERATED, generated(7))
            wait_until(lambda: c.get("/healthz").status_code == 503, what="/healthz to report the loop hung")
            body = c.get("/healthz").json()
            assert body["status"] == "hung" and body["loop"] == "reward.stream" and body["pending"] == 1
            assert body["stalled_s"] > BOUND_S and body["bound_s"] == BOUND_S
            assert c.get("/readyz").status_code == 200, "the HTTP side answers; only the loop is stuck"
            assert "aerplane_reward_verifications_total" in c.get("/metrics").text

            gate.set()
            wait_until(lambda: c.get("/healthz").status_code == 200, what="/healthz to recover")
            wait_until(lambda: client.length(m.ROLLOUT_SCORED) == 1, what="the batch to be published")
            assert c.get("/healthz").json()["pending"] == 0
    finally:
        gate.set()
        held.shutdown(wait=False)
    scored = client.entries(m.ROLLOUT_SCORED, count=1)
    record = m.decode(scored[0][1], expect=m.ScoredSample)
    assert (record.prompt_id, record.reward, record.reason) == ("p7", 1.0, "match")  # type: ignore[attr-defined]


STUCK_POOL = """
import sys
from concurrent.futures import Future

from aerplane.reward.pool import WorkerPool

WorkerPool.submit = lambda self, *args, **kwargs: Future()  # a pool whose items never come back
from aerplane.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_a_stuck_reward_service_exits_by_itself_with_the_hung_code(
    tmp_path: Path, redis_url: str, client: StreamClient
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-c", STUCK_POOL, "reward", "serve", "--redis-url", redis_url, "--run-id", RUN]
    argv += ["--host", "127.0.0.1", "--http-port", str(port), "--workers", "1", "--timeout", "0.5"]
    argv += ["--hang-timeout-s", str(BOUND_S)]  # exit_on_hang is on by default
    proc = ManagedProcess("reward-stuck", argv, log_path=tmp_path / "reward.log", ready_url=f"{base}/readyz")
    proc.start()
    try:
        proc.wait_ready(90)
        time.sleep(BOUND_S * 2)
        assert proc.alive() and httpx.get(f"{base}/healthz").status_code == 200, "idle: healthy, still running"
        client.publish(m.ROLLOUT_GENERATED, generated(1))
        wait_until(lambda: not proc.alive(), timeout=30, what="the stuck service to exit")
        assert proc.poll() == HUNG_EXIT_CODE, proc.log_tail(40)
    finally:
        proc.stop()
    log = (tmp_path / "reward.log").read_text()
    assert "ERROR" in log and "loop reward.stream hung: no progress for" in log, log[-3000:]
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 1, "the batch stays pending for the next replica"


class GatedEngine(Backend):
    """An engine whose requests come back only once `gate` is set (one sample "5" each)."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.loaded: list[Path] = []

    @property
    def max_model_len(self) -> int:
        return 64

    def generate_waves(self, requests):  # type: ignore[no-untyped-def]
        self.gate.wait()
        yield [(i, [Sample([5], "5", [-0.1], "stop")] * r.params.n) for i, r in enumerate(requests)]

    def load_weights(self, path: Path) -> None:
        self.loaded.append(path)


def test_generation_healthz_is_hung_while_the_engine_holds_requests_not_while_waiting_for_weights(
    redis_url: str, client: StreamClient
) -> None:
    settings = GenerationSettings(
        run_id=RUN,
        redis_url=redis_url,
        backend="transformers",
        host="127.0.0.1",
        http_port=free_port(),
        batch_wait_ms=0,
        consumer="t",
        weights_wait_s=600,
        hang_timeout_s=BOUND_S,
        exit_on_hang=False,
    )
    engine = GatedEngine()
    tokenizer = lambda prompt, add_special_tokens=False: {"input_ids": [1, 2, 3]}  # noqa: E731
    with GenerationService(settings) as service:
        health = f"http://127.0.0.1:{service.ops.port}/healthz"  # type: ignore[union-attr]
        assert httpx.get(health).json() == {"status": "ok"}, "no loop yet (the engine is starting): healthy"
        service.worker = worker = GenerationWorker(settings, engine, tokenizer, client, service.metrics)
        loop = threading.Thread(target=worker.run, daemon=True)
        loop.start()
        try:
            time.sleep(BOUND_S * 2)
            assert httpx.get(health).json()["pending"] == 0 and httpx.get(health).status_code == 200, "idle"

            request = dict(run_id=RUN, prompt="2+3=", ground_truth="5", task="math", difficulty="easy")
            client.publish(
                m.ROLLOUT_REQUESTS, m.RolloutRequest(step=1, prompt_id="q", num_samples=2, policy_version=1, **request)
            )
            wait_until(lambda: client.pending(m.ROLLOUT_REQUESTS, "generation") == 1, what="the request to be read")
            time.sleep(BOUND_S * 2)  # waiting for policy v1's weights: waiting for input
            assert httpx.get(health).status_code == 200 and httpx.get(health).json()["pending"] == 0

            announcement = m.WeightsAnnouncement(run_id=RUN, version=1, step=1, path=str(Path("/nowhere/v1")))
            client.publish(m.WEIGHTS, announcement)
            wait_until(lambda: httpx.get(health).status_code == 503, what="/healthz to report the engine hung")
            body = httpx.get(health).json()
            assert body["status"] == "hung" and body["loop"] == "generation.engine" and body["pending"] == 1
            assert body["stalled_s"] > BOUND_S and engine.loaded == [Path("/nowhere/v1")]

            engine.gate.set()
            wait_until(lambda: httpx.get(health).status_code == 200, what="/healthz to recover")
            wait_until(lambda: client.length(m.ROLLOUT_GENERATED) == 1, what="the samples to be published")
        finally:
            engine.gate.set()
            worker.stop()
            loop.join(10)
    assert not loop.is_alive()


def _rank_pid(launcher_pid: int, rank: int) -> int:
    """The pid of torchrun's worker of `rank` (from its environment)."""
    from aerplane.common.process import descendants

    for pid in descendants(launcher_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK" in b"".join(env):
            return pid
    raise AssertionError(f"no worker of rank {rank} under {launcher_pid}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_learner_stuck_in_a_collective_exits_by_itself_but_not_while_waiting_for_rollouts(
    tmp_path: Path, redis_url: str
) -> None:
    """The real learner under torchrun (2 gloo ranks, tiny model): rollouts held back are waiting on other services,
    not a hang; a rank that stops (SIGSTOP) leaves rank 0 stuck in the step's collectives, and rank 0 exits by
    itself, naming the loop, so torchrun tears the group down."""
    import os
    import signal

    from test_learner_run import FakeRollouts, aer_flags, learner, wait_for
    from transformers import AutoTokenizer

    from aerplane.data.embedded_models import tiny_model

    bound = 15.0  # a tiny step takes a few seconds on a busy CPU; one phase of it must never take this long
    metrics = tmp_path / "hang" / "metrics.jsonl"
    gen = FakeRollouts(redis_url, "hang", AutoTokenizer.from_pretrained(str(tiny_model())))
    gen.hold_from_step = 2
    gen.start()
    local = aer_flags("local", "eta=0.01", "target_entropy=20")  # the coefficients in-process: no outage to ride
    proc = learner(tmp_path, "learner", redis_url, "hang", *local, "--hang-timeout-s", str(bound), steps=4)
    health = f"http://127.0.0.1:{proc.http_port}/healthz"  # type: ignore[attr-defined]
    stopped: int | None = None
    try:
        proc.start().wait_ready(240)
        wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) == 2, 300, "two steps", proc)
        time.sleep(bound + 2)  # rank 0 waits for step 2's rollouts (rank 1 in the plan's broadcast) past the bound
        assert proc.alive() and httpx.get(health).json()["status"] == "ok"

        stopped = _rank_pid(proc.pid, 1)  # type: ignore[arg-type]
        os.kill(stopped, signal.SIGSTOP)
        gen.hold_from_step = None
        wait_until(lambda: not proc.alive(), timeout=bound + 90, what="the stuck learner to exit")
        assert proc.poll() != 0
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        proc.stop()
        gen.stop()
    log = (tmp_path / "learner.log").read_text()
    assert "loop learner.step hung: no progress for" in log and "exitcode  : 124" in log, log[-3000:]
