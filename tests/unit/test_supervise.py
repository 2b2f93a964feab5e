"""The supervisor of `aerplane up` on real child processes, with a clock the test moves."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from aerplane.common.process import ManagedProcess, live_group_members
from aerplane.launcher.supervise import GaveUp, RestartPolicy, Supervised, Supervisor, probe_healthz, with_flag

EXIT_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def group_alive(pgid: int) -> bool:
    return bool(live_group_members(pgid))


def wait_exit(process: ManagedProcess) -> int:
    assert process.proc is not None
    return process.proc.wait(timeout=30)


def child(tmp_path: Path, argv: list[str], **kw) -> Supervised:
    process = ManagedProcess("svc", argv, log_path=tmp_path / "svc.log").start()
    return Supervised("svc", process, ready=process.alive, ready_timeout=30, **kw)


def test_backoff_doubles_up_to_its_ceiling() -> None:
    policy = RestartPolicy(backoff_s=1.0, backoff_max_s=10.0)
    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize("kw", [{"max_failures": 0}, {"window_s": 0}, {"backoff_s": 5, "backoff_max_s": 1}])
def test_policy_rejects_nonsense(kw) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kw)


def test_a_dead_child_is_restarted_after_its_backoff_and_its_recovery_timed(tmp_path: Path) -> None:
    clock, shown = Clock(), []
    sup = Supervisor(
        RestartPolicy(backoff_s=2.0), on_event=shown.append, events_path=tmp_path / "events.jsonl", clock=clock
    )
    svc = sup.add(child(tmp_path, EXIT_3, restart_argv=lambda argv: SLEEP))
    first_pid = svc.process.pid
    wait_exit(svc.process)
    try:
        sup.tick()
        assert svc.state == "backoff" and sup.recovering == ["svc"]
        clock.now += 1.9
        sup.tick()
        assert svc.state == "backoff"  # not before its delay
        clock.now += 0.2
        sup.tick()
        assert svc.state == "starting" and svc.process.pid != first_pid and svc.restarts == 1
        time.sleep(0.05)
        sup.tick()  # the restarted child is alive, which is this test's readiness check
        assert svc.state == "running" and sup.recovering == []
    finally:
        svc.process.stop()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["failed", "restarted", "recovered"]
    assert events[0]["code"] == 3 and events[0]["restart_in_s"] == 2.0
    (recovery,) = sup.summary()
    assert recovery["service"] == "svc" and recovery["exit_code"] == 3 and recovery["seconds"] > 0
    assert "svc exited (code 3); restarting in 2.0s" in shown[0]
    assert shown[-1].startswith("svc is back after")


def test_too_many_failures_in_the_window_give_up_naming_the_service_and_its_log(tmp_path: Path) -> None:
    clock = Clock()
    sup = Supervisor(RestartPolicy(max_failures=3, window_s=100, backoff_s=1.0), clock=clock)
    svc = sup.add(child(tmp_path, EXIT_3))
    for _ in range(2):
        wait_exit(svc.process)
        sup.tick()
        clock.now += 10
        sup.tick()
        assert svc.state == "starting"
    wait_exit(svc.process)
    with pytest.raises(GaveUp) as info:
        sup.tick()
    assert info.value.name == "svc" and info.value.code == 3
    assert "failed 3 times within 100s" in str(info.value) and str(tmp_path / "svc.log") in str(info.value)


def test_failures_older_than_the_window_do_not_count(tmp_path: Path) -> None:
    clock = Clock()
    sup = Supervisor(RestartPolicy(max_failures=2, window_s=50, backoff_s=1.0), clock=clock)
    svc = sup.add(child(tmp_path, EXIT_3))
    for _ in range(4):  # one failure every 60 s: never two within 50 s
        wait_exit(svc.process)
        sup.tick()
        assert svc.state == "backoff" and len(svc.failures) == 1
        clock.now += 60
        sup.tick()
    svc.process.stop()


def test_a_fatal_exit_code_is_not_retried(tmp_path: Path) -> None:
    sup = Supervisor(RestartPolicy(), clock=Clock())
    svc = sup.add(child(tmp_path, EXIT_3, fatal_codes=(3,)))
    wait_exit(svc.process)
    with pytest.raises(GaveUp, match="which a restart cannot fix"):
        sup.tick()
    assert svc.restarts == 0


def test_a_child_that_finishes_with_0_is_done_not_restarted(tmp_path: Path) -> None:
    sup = Supervisor(RestartPolicy(), clock=Clock())
    svc = sup.add(child(tmp_path, [sys.executable, "-c", "pass"], finishes=True))
    wait_exit(svc.process)
    sup.tick()
    assert svc.state == "done" and svc.restarts == 0 and sup.recoveries == []


def test_a_restart_that_never_becomes_ready_counts_as_a_failure(tmp_path: Path) -> None:
    clock = Clock()
    sup = Supervisor(RestartPolicy(backoff_s=1.0), clock=clock)
    process = ManagedProcess("svc", EXIT_3, log_path=tmp_path / "svc.log").start()
    svc = sup.add(Supervised("svc", process, ready=lambda: False, ready_timeout=5, restart_argv=lambda a: SLEEP))
    wait_exit(process)
    sup.tick()
    clock.now += 1
    sup.tick()
    assert svc.state == "starting"
    clock.now += 6
    sup.tick()
    assert svc.state == "backoff" and len(svc.failures) == 2 and not process.alive()


def test_with_flag_adds_the_flag_once() -> None:
    add = with_flag("--resume")
    assert add(["learner", "train"]) == ["learner", "train", "--resume"]
    assert add(["learner", "train", "--resume"]) == ["learner", "train", "--resume"]


# --- hung children: found by their /healthz -------------------------------------------------------------------------

# A child serving GET /healthz with the status and JSON body given on its command line, on the port given.
HEALTHZ = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, status, body = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(status); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def healthz_child(tmp_path: Path, status: int, body: dict, **kw) -> tuple[Supervised, str]:
    from aerplane.common.process import free_port

    port = free_port()
    argv = [sys.executable, "-c", HEALTHZ, str(port), str(status), json.dumps(body)]
    process = ManagedProcess("svc", argv, log_path=tmp_path / "svc.log").start()
    url = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + 30
    while probe_healthz(url, 2.0).detail.get("status") != body["status"]:  # listening, answering as told
        assert time.monotonic() < deadline, process.log_tail()
        time.sleep(0.05)
    health = functools.partial(probe_healthz, url)
    return Supervised("svc", process, ready=process.alive, ready_timeout=30, health=health, **kw), url


def tick_until(sup: Supervisor, done, clock: Clock, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the supervisor did not get there in time"
        sup.tick()
        clock.now += 0.1
        time.sleep(0.02)


def events_of(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]


def test_a_stopped_child_is_found_hung_by_its_unanswered_healthz_killed_and_restarted(tmp_path: Path) -> None:
    clock, shown = Clock(), []
    policy = RestartPolicy(backoff_s=1.0, health_interval_s=0.0, health_timeout_s=0.3, health_failures=3)
    sup = Supervisor(policy, on_event=shown.append, events_path=tmp_path / "events.jsonl", clock=clock)
    svc, url = healthz_child(tmp_path, 200, {"status": "ok"}, restart_argv=lambda a: SLEEP)
    sup.add(svc)
    pid = svc.process.pid
    try:
        tick_until(sup, lambda: svc.probe_due > 0, clock)  # one answered probe: healthy, nothing recorded
        assert svc.state == "running" and svc.unanswered == 0 and not (tmp_path / "events.jsonl").exists()
        os.killpg(pid, signal.SIGSTOP)  # held stopped: only the supervisor's SIGKILL ends it
        tick_until(sup, lambda: svc.state == "backoff", clock)
        assert svc.process.poll() == -signal.SIGKILL and not group_alive(pid)
        clock.now += 1.0
        tick_until(sup, lambda: svc.state == "running", clock)
        assert svc.restarts == 1 and svc.process.pid != pid
    finally:
        svc.process.stop()
        sup.close()
    hung, failed, restarted, recovered = events_of(tmp_path)
    assert [e["event"] for e in (hung, failed, restarted, recovered)] == ["hung", "failed", "restarted", "recovered"]
    assert "/healthz unanswered 3 times in a row" in hung["why"] and hung["seconds"] >= 0.6
    assert failed["code"] == -signal.SIGKILL and failed["what"].startswith("hung for")
    assert failed["failures_in_window"] == 1  # counts towards max_failures like a crash
    assert any("svc is hung: /healthz unanswered 3 times" in line for line in shown)


def test_a_child_whose_loop_stalled_says_so_and_is_killed_at_the_first_answer(tmp_path: Path) -> None:
    clock = Clock()
    policy = RestartPolicy(health_interval_s=0.0, health_timeout_s=5.0, health_failures=3)
    sup = Supervisor(policy, events_path=tmp_path / "events.jsonl", clock=clock)
    stalled = {"status": "hung", "loop": "rollout", "stalled_s": 12.5, "bound_s": 10.0}
    svc, _ = healthz_child(tmp_path, 503, stalled)
    sup.add(svc)
    try:
        tick_until(sup, lambda: svc.state == "backoff", clock)
    finally:
        svc.process.stop()
        sup.close()
    hung = events_of(tmp_path)[0]
    assert hung["event"] == "hung" and hung["seconds"] == 12.5
    assert hung["why"] == "its rollout loop made no progress for 12s (bound 10.0s)"


def test_a_child_answering_ok_is_left_alone(tmp_path: Path) -> None:
    clock = Clock()
    sup = Supervisor(RestartPolicy(health_interval_s=0.0, health_timeout_s=2.0), clock=clock)
    svc, _ = healthz_child(tmp_path, 200, {"status": "ok"})
    sup.add(svc)
    answered = 0
    try:
        while answered < 5:
            before = svc.probe_due
            tick_until(sup, lambda b=before: svc.probe_due != b, clock)
            answered += 1
        assert svc.state == "running" and svc.restarts == 0 and svc.unanswered == 0
    finally:
        svc.process.stop()
        sup.close()


def test_an_exit_with_the_hung_code_is_recorded_as_hung(tmp_path: Path) -> None:
    from aerplane.common.liveness import HUNG_EXIT_CODE

    sup = Supervisor(RestartPolicy(), events_path=tmp_path / "events.jsonl", clock=Clock())
    svc = sup.add(child(tmp_path, [sys.executable, "-c", f"import sys; sys.exit({HUNG_EXIT_CODE})"]))
    wait_exit(svc.process)
    sup.tick()
    svc.process.stop()
    hung, failed = events_of(tmp_path)
    assert hung["event"] == "hung" and hung["code"] == HUNG_EXIT_CODE and "stalled past its bound" in hung["why"]
    assert failed["event"] == "failed" and svc.state == "backoff"


def test_probe_healthz_reads_ok_hung_and_no_answer(tmp_path: Path) -> None:
    from aerplane.common.process import free_port

    assert probe_healthz(f"http://127.0.0.1:{free_port()}/healthz", 1.0).status == "unanswered"  # refused
    for status, body, expected in [(200, {"status": "ok"}, "ok"), (503, {"status": "hung"}, "hung")]:
        svc, url = healthz_child(tmp_path, status, body)
        try:
            result = probe_healthz(url, 2.0)
            assert result.status == expected and result.detail.get("status") == body["status"]
        finally:
            svc.process.stop()
    with pytest.raises(ValueError, match="health checks"):
        RestartPolicy(health_failures=0)
