"""The supervisor of `aerplane up` on real child processes, with a clock the test moves."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from aerplane.common.process import ManagedProcess
from aerplane.launcher.supervise import GaveUp, RestartPolicy, Supervised, Supervisor, with_flag

EXIT_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
