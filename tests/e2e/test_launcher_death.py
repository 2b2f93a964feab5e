"""`aerplane up` SIGKILLed mid-run takes every process it started with it, and `--resume` finishes the run.

The launcher gets no chance to clean up (SIGKILL runs no handler): each child's wrapper (`common/deathsig.py`) is told
by the kernel that its parent died and SIGKILLs the child's process group — Redis, the coefficient service, reward
with its verifier pool, generation with vLLM's server (whose own wrapper follows), and torchrun, whose workers die
with it. A later `aerplane up --resume` on the same run directory trains every step exactly once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from up_support import TINY_RUN, RunWatcher, group_alive, metrics_rows

from aerplane.common.process import descendants, port_in_use
from aerplane.learner.ledger import read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

STEPS = 6
PROMPTS, G = 2, 4
RUN = ["--steps", str(STEPS), "--checkpoint-interval", "2", *TINY_RUN]
GONE_WITHIN_S = 15.0


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _run_ports(run_dir: Path, services: dict) -> dict[str, int]:
    """Every port the run listens on: its services' (run.json) and its private Redis's."""
    run = json.loads((run_dir / "run.json").read_text())
    ports = dict(run["ports"])
    if run["backend"] != "vllm":
        ports.pop("vllm")
    ports["redis"] = urlparse(services["redis_url"]).port
    return ports


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_sigkilled_launcher_leaves_nothing_running_and_resume_trains_every_step_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    watcher = RunWatcher(run_dir, *RUN)
    started = time.monotonic()
    # --- run until the learner has trained two steps (and checkpointed after the second) ---------------------------
    deadline = started + 1500
    while not ((run_dir / "metrics.jsonl").exists() and len(metrics_rows(run_dir)) >= 2):
        assert watcher.proc.poll() is None, f"aerplane up exited early:\n{watcher.output()}"
        if time.monotonic() > deadline:
            os.killpg(watcher.proc.pid, signal.SIGTERM)
            watcher.proc.wait(60)
            pytest.fail(f"no two steps within 1500s:\n{watcher.output()}")
        time.sleep(0.5)
    trained_before = len(metrics_rows(run_dir))
    services = watcher.services()
    children = [svc["pid"] for svc in services["services"].values()] + [services["redis_pid"]]
    started_by_up = descendants(watcher.proc.pid)  # wrappers, services, their pools, vLLM, torchrun and its workers
    assert set(children) <= set(started_by_up), (children, started_by_up)

    # --- SIGKILL the launcher alone (not its group) ------------------------------------------------------------------
    killed = time.monotonic()
    os.kill(watcher.proc.pid, signal.SIGKILL)
    watcher.proc.wait(10)
    everything_gone = _wait_until(lambda: not any(_running(p) for p in started_by_up), GONE_WITHIN_S)
    gone_after = time.monotonic() - killed
    survivors = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in started_by_up if _running(p)}
    assert everything_gone, f"still running {GONE_WITHIN_S:.0f}s after aerplane up was SIGKILLed: {survivors}"
    assert not any(group_alive(p) for p in children)
    ports = _run_ports(run_dir, services)
    assert _wait_until(lambda: not any(port_in_use(p) for p in ports.values()), 5), ports
    first_output = watcher.output()
    print(
        f"aerplane up SIGKILLed after {trained_before} steps, {killed - started:.0f}s in; "
        f"{len(started_by_up)} processes gone {gone_after:.1f}s later"
    )

    # --- resume: the same run directory and flags --------------------------------------------------------------------
    resumed = RunWatcher(run_dir, "--resume", *RUN)
    resume_started = time.monotonic()
    code = resumed.wait(timeout=1500)
    print(f"aerplane up --resume finished in {time.monotonic() - resume_started:.0f}s")
    assert code == 0, f"{resumed.output()}\n--- the killed run ---\n{first_output}"
    assert [r["step"] for r in metrics_rows(run_dir)] == list(range(STEPS))
    record = read_ledger(run_dir)
    assert [e["step"] for e in record] == list(range(STEPS))
    groups = [g["prompt_id"] for e in record for g in e["groups"]]
    assert len(groups) == len(set(groups)) == STEPS * PROMPTS, groups
    assert all(sorted(g["samples"]) == list(range(G)) for e in record for g in e["groups"])
    # The resumed learner continued from a checkpoint (one was written after step 2), not from the start.
    learner_log = (run_dir / "logs" / "learner.log").read_text(errors="replace")
    resumed_at = [int(n) for n in re.findall(r"resumed from \S+: next step (\d+)", learner_log)]
    assert resumed_at and resumed_at[0] >= 2, learner_log[-3000:]
