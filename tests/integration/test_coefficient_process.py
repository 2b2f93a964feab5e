"""`aerplane coefficient serve` as a real process: kill -9 and restart continue every run exactly; SIGTERM is clean."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from aerplane.coefficient.client import CoefficientClient
from aerplane.common.process import ManagedProcess, free_port
from aerplane.core.strategies import build_strategy

TOKEN = "process-token"


def _serve(tmp_path: Path, redis_url: str, grpc_port: int, http_port: int, name: str) -> ManagedProcess:
    env = {**os.environ, "AERPLANE_REDIS_URL": redis_url, "AERPLANE_API_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "aerplane.cli", "coefficient", "serve", "--host", "127.0.0.1"]
    argv += ["--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    proc = ManagedProcess(
        name, argv, env=env, log_path=tmp_path / f"{name}.log", ready_url=f"http://127.0.0.1:{http_port}/readyz"
    )
    proc.start().wait_ready(60)
    return proc


def test_kill_9_and_restart_continue_the_run_exactly(tmp_path: Path, redis_url: str) -> None:
    grpc_port, http_port = free_port(), free_port()
    params = {"anchor_steps": 2, "eta": 0.004, "rho": 0.6}
    entropies = [2.0, 1.6, 0.9, 0.7, 1.5, 0.4, 0.5, 1.2]
    core = build_strategy("aer", **params)
    cs = core.initial_state()

    first = _serve(tmp_path, redis_url, grpc_port, http_port, "coefficient-1")
    try:
        with CoefficientClient(f"127.0.0.1:{grpc_port}", timeout=10, token=TOKEN) as c:
            c.start_run("crash", "aer", params, {"weighting": "linear"})
            for step, h in enumerate(entropies[:5]):
                c.get_coefficients("crash", step, [("a", 0.25, 4)])
                c.report_entropy("crash", step, h, 100)
                cs = core.observe(cs, entropy=h)
            c.override("crash", target_entropy=0.8, reason="before the crash")
            c.get_coefficients("crash", 5, [("a", 0.5, 4)])  # step 5 answered, then the process dies
            before = c.get_state("crash")
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}") as http:
            history_before = http.get("/v1/runs/crash/history").json()
            audit_before = http.get("/v1/runs/crash/audit").json()
    finally:
        first.kill()
    assert first.poll() == -signal.SIGKILL

    second = _serve(tmp_path, redis_url, grpc_port, http_port, "coefficient-2")
    try:
        with CoefficientClient(f"127.0.0.1:{grpc_port}", timeout=10, token=TOKEN) as c:
            assert c.start_run("crash", "aer", {}, {}, resume=True) == before  # same α, H_0, target, step, overrides
            assert before["target_entropy"] == 0.8 and before["target_overridden"] and before["step"] == 4
            assert c.get_coefficients("crash", 5, [("a", 0.5, 4)])[0] == before["alpha"]
            assert c.report_entropy("crash", 4, 9.9, 100) == before  # the last applied step again: no change
            # Continue: the controller follows the overridden target from where it stopped.
            target_core = build_strategy("aer", **params, target_entropy=0.8)
            cs = target_core.reconcile(cs)
            for step, h in enumerate(entropies[5:], start=5):
                st = c.report_entropy("crash", step, h, 100)
                cs = target_core.observe(cs, entropy=h)
                assert (st["alpha"], st["target_entropy"], st["step"]) == (target_core.coefficient(cs), 0.8, step)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}") as http:
            assert http.get("/v1/runs/crash/history").json()[:5] == history_before[:5]
            assert http.get("/v1/runs/crash/audit").json() == audit_before
            assert 'aerplane_coefficient_step{run_id="crash"} 7.0' in http.get("/metrics").text
    finally:
        code = second.stop(timeout=20)
    assert code == 0, second.log_tail()  # SIGTERM: graceful, exit 0


def test_bad_configuration_fails_fast_naming_the_key(tmp_path: Path) -> None:
    port = free_port()
    proc = ManagedProcess(
        "coefficient-bad",
        [
            sys.executable,
            "-m",
            "aerplane.cli",
            "coefficient",
            "serve",
            "--grpc-port",
            str(port),
            "--http-port",
            "99999",
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("AERPLANE_")},
        log_path=tmp_path / "bad.log",
    ).start()
    assert proc.proc is not None
    assert proc.proc.wait(60) == 2
    assert "coefficient.http_port" in proc.log_tail()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_both_servers_gracefully(tmp_path: Path, redis_url: str, sig: signal.Signals) -> None:
    grpc_port, http_port = free_port(), free_port()
    proc = _serve(tmp_path, redis_url, grpc_port, http_port, f"coefficient-{sig.name}")
    try:
        with CoefficientClient(f"127.0.0.1:{grpc_port}", timeout=10) as c:
            c.start_run("sig", "none", {}, {})
        assert proc.proc is not None
        proc.proc.send_signal(sig)
        assert proc.proc.wait(30) == 0
        assert "coefficient service stopped" in proc.log_tail(50)
    finally:
        proc.stop()
