"""The verification worker pool with real worker processes: hung and crashed workers are killed and replaced,
their items score 0 with a reason, and the other items keep flowing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aerplane.reward.pool import HARD_KILL_GRACE_S, PoolConfig, WorkerPool

TIMEOUT = 1.5


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    restarts: list[str] = []
    p = WorkerPool(PoolConfig(workers=2, timeout_s=TIMEOUT), on_restart=restarts.append)
    p.restart_reasons = restarts  # type: ignore[attr-defined]
    with p:
        yield p


def wait_for_workers(pool: WorkerPool, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(pool.worker_pids()) < n:
        assert time.monotonic() < deadline, "replacement worker did not start"
        time.sleep(0.05)


def test_scores_many_items_concurrently_in_order(pool: WorkerPool) -> None:
    items = [("math", rf"\boxed{{{i}}}", str(i if i % 3 else i + 1)) for i in range(30)]
    scores = pool.score_many(items)
    assert [s.reason for s in scores] == ["mismatch" if i % 3 == 0 else "match" for i in range(30)]


def test_hung_worker_is_killed_and_replaced_while_others_serve(pool: WorkerPool) -> None:
    wait_for_workers(pool, 2)
    before = pool.restarts
    stuck_pid = pool.worker_pids()[0]  # the next item goes to the longest-idle worker
    os.kill(stuck_pid, signal.SIGSTOP)  # a hang no in-process timer can end (like C code that never returns)
    try:
        started = time.monotonic()
        hung = pool.submit("math", r"\boxed{1}", "1")
        others = [pool.submit("math", rf"\boxed{{{i}}}", str(i)) for i in range(10)]
        assert all(f.result(timeout=TIMEOUT).reason == "match" for f in others)  # served beside the hang
        score = hung.result(timeout=TIMEOUT + 5)
        elapsed = time.monotonic() - started
    finally:
        try:
            os.kill(stuck_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert (score.reward, score.reason) == (0.0, "timeout")
    assert elapsed <= TIMEOUT + HARD_KILL_GRACE_S + 1.0
    assert pool.restarts == before + 1 and pool.restart_reasons[-1] == "timeout"  # type: ignore[attr-defined]
    wait_for_workers(pool, 2)
    assert stuck_pid not in pool.worker_pids()
    assert pool.score("math", r"\boxed{2}", "2").reason == "match"


def test_crashed_worker_scores_error_and_is_replaced(pool: WorkerPool) -> None:
    wait_for_workers(pool, 2)
    before = pool.restarts
    victim = pool.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.1)
    score = pool.score("math", r"\boxed{1}", "1")
    assert (score.reward, score.reason) == (0.0, "error") and "worker died" in score.detail
    assert pool.restarts == before + 1 and pool.restart_reasons[-1] == "crash"  # type: ignore[attr-defined]
    wait_for_workers(pool, 2)
    assert pool.score("math", r"\boxed{1}", "1").reason == "match"


def test_size_cap_and_invalid_unicode_never_reach_a_worker_badly(pool: WorkerPool) -> None:
    assert pool.score("math", "9" * (64 * 1024 + 1), "9").reason == "too_long"
    assert pool.score("math", "é" * (32 * 1024 + 1), "9").reason == "too_long"  # the cap counts UTF-8 bytes
    assert pool.score("math", "\ud800\udfff oops \\boxed{3}", "3").reason == "match"
    assert pool.score("nope", "1", "1").reason == "error"


def test_soft_timeout_keeps_the_worker(pool: WorkerPool) -> None:
    wait_for_workers(pool, 2)
    pids = set(pool.worker_pids())
    score = pool.score("math", r"\boxed{9^{9^{9^9}}}", "1")
    assert score.reason == "timeout"
    wait_for_workers(pool, 2)
    # Either the worker's own timer ended it (same worker) or the parent killed it: a timeout either way.
    assert len(set(pool.worker_pids()) & pids) >= 1


def test_workers_run_under_an_address_space_cap(pool: WorkerPool) -> None:
    wait_for_workers(pool, 2)
    for pid in pool.worker_pids():
        limits = Path(f"/proc/{pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
        assert line.split()[3] == str(1024 * 1024 * 1024), line


def test_close_lets_in_flight_items_finish() -> None:
    p = WorkerPool(PoolConfig(workers=1, timeout_s=TIMEOUT)).start()
    slow = p.submit("math", r"\boxed{9^{9^{9^9}}}", "1")  # busy for ~TIMEOUT
    time.sleep(0.2)
    p.close(timeout=10)
    assert slow.result(timeout=0).reason == "timeout"
    assert p.alive == 0
    with pytest.raises(RuntimeError, match="closing"):
        p.submit("math", "1", "1")
