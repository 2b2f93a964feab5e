"""Liveness that means progress (common.liveness): the tracker's semantics on an injected clock, the watchdog's exit,
and /healthz answering 200 or 503 "hung" over real HTTP (common.ops)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from aerplane.common.liveness import HUNG_EXIT_CODE, Progress, Watchdog
from aerplane.common.ops import OpsServer, add_ops_routes, new_registry
from aerplane.common.process import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_idle_is_healthy_however_long(clock: Clock) -> None:
    p = Progress("loop", 10, clock=clock)
    clock.now += 10_000
    ok, detail = p.check()
    assert ok and detail == {"loop": "loop", "pending": 0, "stalled_s": 0.0, "bound_s": 10.0}


def test_pending_past_the_bound_is_hung_and_beat_resets(clock: Clock) -> None:
    p = Progress("loop", 10, clock=clock)
    clock.now += 500  # idle time before the work does not count
    p.begin(3)
    clock.now += 10
    assert p.check()[0], "at the bound: not yet"
    clock.now += 0.5
    ok, detail = p.check()
    assert not ok and detail == {"loop": "loop", "pending": 3, "stalled_s": 10.5, "bound_s": 10.0}
    p.beat()
    assert p.check() == (True, {"loop": "loop", "pending": 3, "stalled_s": 0.0, "bound_s": 10.0})
    clock.now += 11
    assert not p.check()[0]


def test_end_of_work_clears_and_the_next_work_starts_its_own_clock(clock: Clock) -> None:
    p = Progress("loop", 10, clock=clock)
    with p.working(2):
        clock.now += 30
        assert not p.check()[0]
    assert p.check()[0] and p.pending == 0
    clock.now += 30
    p.begin()
    assert p.check()[0], "the stall is counted from the start of the new work"
    clock.now += 11
    assert not p.check()[0]
    p.end()


def test_working_releases_on_an_exception(clock: Clock) -> None:
    p = Progress("loop", 1, clock=clock)
    with pytest.raises(RuntimeError), p.working(4):
        raise RuntimeError("boom")
    clock.now += 100
    assert p.check()[0] and p.pending == 0


def test_bound_zero_never_hangs_and_a_negative_one_is_refused(clock: Clock) -> None:
    p = Progress("loop", 0, clock=clock)
    p.begin()
    clock.now += 1e9
    ok, detail = p.check()
    assert ok and detail["stalled_s"] == 1e9
    with pytest.raises(ValueError, match="bound_s"):
        Progress("loop", -1)


def test_watchdog_exits_with_the_hung_code_naming_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    p = Progress("reward.stream", 0.2)
    codes: list[int] = []
    exited = threading.Event()

    def fake_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    watchdog = Watchdog(p.check, interval_s=0.05, exit_fn=fake_exit).start()
    try:
        with caplog.at_level(logging.ERROR, logger="aerplane.common.liveness"):
            time.sleep(0.5)
            assert not exited.is_set(), "idle: no exit"
            p.begin()
            assert exited.wait(5)
    finally:
        watchdog.stop()
        p.end()
    assert codes == [HUNG_EXIT_CODE] == [124]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "loop reward.stream hung: no progress for" in errors[0] and "code 124" in errors[0]


def test_watchdog_without_exit_on_hang_warns_once_and_stays(caplog: pytest.LogCaptureFixture) -> None:
    p = Progress("generation.engine", 0.1)
    codes: list[int] = []
    watchdog = Watchdog(p.check, exit_on_hang=False, interval_s=0.05, exit_fn=codes.append).start()
    with caplog.at_level(logging.INFO, logger="aerplane.common.liveness"):
        p.begin()
        time.sleep(0.6)
        p.beat()
        p.end()
        time.sleep(0.2)
    watchdog.stop()
    assert codes == []
    messages = [r.getMessage() for r in caplog.records]
    assert sum("loop generation.engine hung" in m for m in messages) == 1
    assert any("making progress again" in m for m in messages)


def test_a_real_process_exits_by_itself_with_the_hung_code() -> None:
    program = (
        "import threading, time\n"
        "from aerplane.common.liveness import Progress, Watchdog\n"
        "p = Progress('demo.loop', 0.3)\n"
        "Watchdog(p.check, interval_s=0.1).start()\n"
        "with p.working(2):\n"
        "    threading.Event().wait()  # a loop stuck for good: never joined, never returns\n"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert out.returncode == HUNG_EXIT_CODE, out.stderr
    assert time.monotonic() - started < 30
    assert "loop demo.loop hung: no progress for" in out.stderr and "with 2 pending" in out.stderr
    assert "Thread" in out.stderr, "the stacks of every thread, to see where it is stuck"


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_ops_server_healthz_is_503_hung_while_the_loop_is_stuck(clock: Clock) -> None:
    p = Progress("learner.step", 5, clock=clock)
    with OpsServer("127.0.0.1", free_port(), new_registry(), lambda: (True, {}), p.check) as ops:
        base = f"http://127.0.0.1:{ops.port}"
        clock.now += 3600
        assert _get(base + "/healthz") == (
            200,
            {"status": "ok", "loop": "learner.step", "pending": 0, "stalled_s": 0.0, "bound_s": 5.0},
        )
        p.begin()
        clock.now += 6
        assert _get(base + "/healthz") == (
            503,
            {"status": "hung", "loop": "learner.step", "pending": 1, "stalled_s": 6.0, "bound_s": 5.0},
        )
        assert _get(base + "/readyz")[0] == 200, "readiness is another question"
        assert urllib.request.urlopen(base + "/metrics", timeout=5).status == 200
        p.beat()
        assert _get(base + "/healthz")[0] == 200


def test_fastapi_healthz_is_503_hung_while_the_loop_is_stuck(clock: Clock) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    p = Progress("reward.stream", 5, clock=clock)
    app, plain = FastAPI(), FastAPI()
    add_ops_routes(app, new_registry(), lambda: (True, {}), p.check)
    add_ops_routes(plain, new_registry(), lambda: (True, {}))
    with TestClient(app) as c, TestClient(plain) as c_plain:
        assert c.get("/healthz").json()["status"] == "ok"
        p.begin()
        clock.now += 10
        resp = c.get("/healthz")
        assert resp.status_code == 503
        hung = {"status": "hung", "loop": "reward.stream", "pending": 1, "stalled_s": 10.0, "bound_s": 5.0}
        assert resp.json() == hung
        assert c_plain.get("/healthz").json() == {"status": "ok"}, "without `live`: the HTTP server answers"


# --- the settings of each service's bound ---------------------------------------------------------------------------


def test_each_service_has_its_bound_and_switch_with_defaults_and_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aerplane.common.settings import load_settings
    from aerplane.generation.settings import GenerationSettings
    from aerplane.learner.settings import LearnerSettings
    from aerplane.reward.settings import RewardSettings

    reward = load_settings(RewardSettings, {"consume": False})
    generation, learner = load_settings(GenerationSettings), load_settings(LearnerSettings)
    assert (reward.hang_timeout_s, generation.hang_timeout_s, learner.hang_timeout_s) == (300, 900, 1800)
    assert reward.exit_on_hang and generation.exit_on_hang and learner.exit_on_hang
    for service, cls in (("REWARD", RewardSettings), ("GENERATION", GenerationSettings), ("LEARNER", LearnerSettings)):
        monkeypatch.setenv(f"AERPLANE_{service}_HANG_TIMEOUT_S", "0")
        monkeypatch.setenv(f"AERPLANE_{service}_EXIT_ON_HANG", "false")
        s = load_settings(cls, {"consume": False} if cls is RewardSettings else {})
        assert (s.hang_timeout_s, s.exit_on_hang) == (0, False), service


@pytest.mark.parametrize(
    ("service", "overrides", "message"),
    [
        ("reward", {"hang_timeout_s": -1}, "reward.hang_timeout_s"),
        ("reward", {"hang_timeout_s": 5, "timeout_s": 5}, "must exceed timeout_s"),
        ("generation", {"hang_timeout_s": 600}, "must exceed vllm_request_timeout_s"),
        ("learner", {"hang_timeout_s": -5}, "learner.hang_timeout_s"),
        ("learner", {"hang_timeout_s": 200}, "must exceed coefficient.outage_s"),
    ],
)
def test_a_bound_that_would_call_slow_work_hung_is_refused(service: str, overrides: dict, message: str) -> None:
    from aerplane.common.settings import SettingsError, load_settings
    from aerplane.generation.settings import GenerationSettings
    from aerplane.learner.settings import LearnerSettings
    from aerplane.reward.settings import RewardSettings

    cls = {"reward": RewardSettings, "generation": GenerationSettings, "learner": LearnerSettings}[service]
    extra = {"consume": False} if service == "reward" else {}
    with pytest.raises(SettingsError, match=message):
        load_settings(cls, {**extra, **overrides}, section=service)
    if service == "generation":  # the transformers engine has no request timeout to exceed
        assert load_settings(cls, {**overrides, "backend": "transformers"}).hang_timeout_s == 600
    if service == "learner" and overrides["hang_timeout_s"] > 0:  # in-process coefficients: no outage to ride out
        assert load_settings(cls, {**overrides, "coefficient": {"target": "local"}}).hang_timeout_s == 200
