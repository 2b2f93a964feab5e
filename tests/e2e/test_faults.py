"""Fault injection into a running `aerplane up`: every service is killed mid-run, Redis is restarted, and the run
still completes every step, each prompt group trained exactly once, with α continuous across the crashes.

One run on the tiny model (real Redis, vLLM, verifier pool, coefficient service, torchrun learner) takes the faults
one after another, each once the previous service is back and the learner has trained further:

    reward      SIGKILL of its process group (the service and its verifier workers)
    generation  SIGKILL of its process group (the service and vLLM's server and engine core)
    coefficient SIGKILL
    learner     SIGKILL of torchrun's group; its workers, in sessions of their own, die with it (PDEATHSIG)
    redis       a restart: SIGTERM (the append-only file is flushed), then the supervisor starts it again
    reward      SIGSTOP of its process group, held until the supervisor finds it hung (its /healthz unanswered)
    generation  SIGSTOP of its process group (the service and vLLM), likewise; the supervisor SIGKILLs and restarts

The module's tests read that one run; the recovery table (seconds from the exit being seen to the service answering
its readiness check again) is printed at the end of the session.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from up_support import TINY_RUN, RunWatcher, group_alive, metrics_rows

from aerplane.common.process import descendants
from aerplane.core.strategies import build_strategy
from aerplane.learner.ledger import read_ledger

STEPS = 18
G = 4
PROMPTS = 2
# (fault, service, signal, completed steps before the fault); each fault also waits for the previous recovery.
FAULTS = [
    ("reward", "reward", signal.SIGKILL, 2),
    ("generation", "generation", signal.SIGKILL, 4),
    ("coefficient", "coefficient", signal.SIGKILL, 6),
    ("learner", "learner", signal.SIGKILL, 8),
    ("redis", "redis", signal.SIGTERM, 10),
    ("reward stopped", "reward", signal.SIGSTOP, 12),
    ("generation stopped", "generation", signal.SIGSTOP, 14),
]
# `aerplane up`'s defaults: a /healthz probe every 5 s that waits 10 s; 3 unanswered in a row make a service hung.
HEALTH_INTERVAL, HEALTH_TIMEOUT, HEALTH_FAILURES = 5.0, 10.0, 3
FOUND_WITHIN = HEALTH_INTERVAL + HEALTH_FAILURES * (HEALTH_TIMEOUT + HEALTH_INTERVAL)
# α rises every step (H* = 20 nats is above any entropy the tiny model has), without reaching α_max.
AER = ["--strategy", "aer:target_entropy=20:eta=1e-4:alpha_max=0.5"]


def _events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Injector:
    """Called on every poll of the watcher: injects the next fault once its step is reached."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.todo = list(FAULTS)
        self.injected: dict[str, dict[str, Any]] = {}
        self.killed_pids: list[int] = []

    def __call__(self, watcher: RunWatcher) -> None:
        if not self.todo or not (self.run_dir / "metrics.jsonl").exists():
            return
        recovered = Counter(e["service"] for e in _events(self.run_dir) if e["event"] == "recovered")
        if recovered != Counter(fault["service"] for fault in self.injected.values()):
            return  # the previous fault is not recovered yet
        name, service, sig, after = self.todo[0]
        done = len(metrics_rows(self.run_dir))
        if done < after:
            return
        info = watcher.services()
        pid = info["redis_pid"] if service == "redis" else info["services"][service]["pid"]
        group = [pid, *descendants(pid)]
        if sig == signal.SIGTERM:
            os.kill(pid, sig)  # the process alone: a clean shutdown
        else:
            os.killpg(pid, sig)  # SIGSTOP: held until the supervisor's SIGKILL ends it
        self.killed_pids += group
        self.injected[name] = {"service": service, "signal": sig, "pid": pid, "after_steps": done, "time": time.time()}
        self.todo.pop(0)


def _events_after(run_dir: Path, service: str, since: float) -> list[dict[str, Any]]:
    return [e for e in _events(run_dir) if e["service"] == service and e["time"] >= since]


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    injector = Injector(run_dir)
    watcher = RunWatcher(
        run_dir, "--steps", str(STEPS), "--checkpoint-interval", "2", "--max-failures", "3", *AER, *TINY_RUN
    )
    code = watcher.wait(timeout=2400, on_poll=injector)
    return {"code": code, "run_dir": run_dir, "watcher": watcher, "injector": injector}


@pytest.mark.slow
def test_the_run_completes_every_step_after_each_fault(faulty_run: dict[str, Any]) -> None:
    watcher, injector = faulty_run["watcher"], faulty_run["injector"]
    assert faulty_run["code"] == 0, watcher.output()
    assert [name for name, *_ in FAULTS] == list(injector.injected), (injector.injected, watcher.output())
    rows = metrics_rows(faulty_run["run_dir"])
    assert [r["step"] for r in rows] == list(range(STEPS))
    evaluation = json.loads((faulty_run["run_dir"] / "eval.json").read_text())["splits"][0]
    assert evaluation["policy_versions"] == [STEPS]


@pytest.mark.slow
def test_no_group_is_lost_or_trained_twice(faulty_run: dict[str, Any]) -> None:
    record = read_ledger(faulty_run["run_dir"])
    assert [e["step"] for e in record] == list(range(STEPS))
    trained = [(e["step"], g["prompt_id"]) for e in record for g in e["groups"]]
    assert len(trained) == len(set(trained)) == STEPS * PROMPTS
    assert all(sorted(g["samples"]) == list(range(G)) for e in record for g in e["groups"])


@pytest.mark.slow
def test_alpha_is_continuous_across_the_crashes(faulty_run: dict[str, Any]) -> None:
    rows = metrics_rows(faulty_run["run_dir"])
    # Each step trains with the α the previous step's report produced: nothing reset it, nothing applied a step twice.
    for before, after in zip(rows, rows[1:], strict=False):
        assert after["alpha"] == pytest.approx(before["next_alpha"], abs=1e-12), (before["step"], after["step"])
    # And it is the controller's own trajectory, replayed from the recorded entropies by the same strategy code.
    strategy = build_strategy("aer", target_entropy=20.0, eta=1e-4, alpha_max=0.5)
    state = strategy.initial_state()
    for r in rows:
        assert r["alpha"] == pytest.approx(strategy.coefficient(state), abs=1e-12), r["step"]
        state = strategy.observe(state, entropy=r["mean_entropy"])
    assert rows[-1]["alpha"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("fault", [name for name, *_ in FAULTS])
def test_each_service_is_restarted_and_recovers(faulty_run: dict[str, Any], fault: str, report_table) -> None:
    injected = faulty_run["injector"].injected[fault]
    service, sig = injected["service"], injected["signal"]
    events = _events_after(faulty_run["run_dir"], service, injected["time"])
    kinds = [e["event"] for e in events]
    found = "–"
    if sig == signal.SIGSTOP:  # no exit to see: found hung by its unanswered /healthz, then killed
        assert kinds[:4] == ["hung", "failed", "restarted", "recovered"], events
        hung, failed = events[0], events[1]
        found_after = hung["time"] - injected["time"]
        assert found_after <= FOUND_WITHIN + 5, events  # + the watcher's poll interval
        assert "/healthz unanswered" in hung["why"] and failed["what"].startswith("hung for"), events
        found = f"{found_after:.1f}"
    else:
        assert kinds[:3] == ["failed", "restarted", "recovered"], events
        failed = events[0]
    if service == "redis":
        assert failed["code"] == 0  # SIGTERM: a clean shutdown, restarted all the same
    else:
        assert failed["code"] == -signal.SIGKILL
    run = json.loads((faulty_run["run_dir"] / "run.json").read_text())
    recovery = next(r for r in run["recoveries"] if r["service"] == service and r["failed_at"] >= injected["time"])
    assert recovery["seconds"] is not None and recovery["seconds"] > 0
    report_table(
        "time to recover per fault (aerplane up, tiny model)",
        ["fault", "signal", "after step", "found hung after s", "exit code", "seconds"],
        [fault, signal.Signals(sig).name, injected["after_steps"], found, failed["code"], f"{recovery['seconds']:.1f}"],
    )


@pytest.mark.slow
def test_no_process_outlives_the_run(faulty_run: dict[str, Any]) -> None:
    watcher, injector = faulty_run["watcher"], faulty_run["injector"]
    # Every process of every generation of every service: the killed ones (learner workers included, which torchrun
    # started in sessions of their own) and their replacements.
    for pid in [*injector.killed_pids, *watcher.pids.values()]:
        assert not group_alive(pid), f"pid {pid} (or its group) outlived aerplane up"


@pytest.mark.slow
def test_a_service_that_keeps_failing_stops_the_run_naming_it_and_its_log(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    killed: list[int] = []

    def kill_reward_after_the_first_step(watcher: RunWatcher) -> None:
        if not killed and (run_dir / "metrics.jsonl").exists() and metrics_rows(run_dir):
            pid = watcher.services()["services"]["reward"]["pid"]
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)

    watcher = RunWatcher(run_dir, "--steps", "50", "--max-failures", "1", "--backend", "transformers", *TINY_RUN)
    code = watcher.wait(timeout=900, on_poll=kill_reward_after_the_first_step)
    assert killed and code == 1, watcher.output()
    assert f"service 'reward' failed 1 time within 600s (last exit code -9); its log: {run_dir}/logs/reward.log" in (
        watcher.output()
    )
    assert len(metrics_rows(run_dir)) < 50
    for pid in [*killed, *watcher.pids.values()]:
        assert not group_alive(pid), f"pid {pid} outlived aerplane up"
