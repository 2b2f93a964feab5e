"""`aerplane up` itself, on the tiny model and a few steps: the README's main command, end to end.

These run the real entrypoint as a subprocess (STYLE §10): Redis, the coefficient, reward and generation services
and the learner all start as processes; the test watches from outside like a user would (the run directory, REST,
/metrics) and checks afterwards that no child outlived the launcher.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from aerplane.common.process import live_group_members

TINY_RUN = ["--model", "tiny", "--free-ports", "--no-live", "--prompts-per-step", "2", "-G", "4",
            "--max-tokens", "24", "--eval-size", "4", "--eval-k", "2"]  # fmt: skip


def _aerplane(*args: str) -> list[str]:
    return [sys.executable, "-m", "aerplane.cli", *args]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return json.loads(resp.read())


def _fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def _group_alive(pgid: int) -> bool:
    """Does any process of the group still run? (Zombies waiting for init to reap them do not.)"""
    return bool(live_group_members(pgid))


class RunWatcher:
    """Starts `aerplane up`, then polls what a user could see while it runs."""

    def __init__(self, run_dir: Path, *args: str) -> None:
        self.run_dir = run_dir
        self.log = run_dir.parent / f"{run_dir.name}-up.log"
        self.proc = subprocess.Popen(
            _aerplane("up", "--run-dir", str(run_dir), *args),
            stdout=open(self.log, "wb"),  # noqa: SIM115 - lives as long as the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.metrics_text: dict[str, str] = {}
        self.states: list[dict[str, Any]] = []
        self.pids: dict[str, int] = {}

    def services(self) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir / "services.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def rest_base(self) -> str | None:
        run = json.loads((self.run_dir / "run.json").read_text())
        return f"http://127.0.0.1:{run['ports']['coefficient_http']}/v1/runs/{run['run_id']}"

    def poll_once(self) -> None:
        info = self.services()
        for name, svc in info.get("services", {}).items():
            self.pids[name] = svc["pid"]
            if name not in self.metrics_text:
                text = _fetch(svc["metrics"])
                if text and f"aerplane_{name}_" in text:
                    self.metrics_text[name] = text
        if "redis_pid" in info:
            self.pids["redis"] = info["redis_pid"]
        if "coefficient" in info.get("services", {}):
            try:
                self.states.append(_get_json(self.rest_base()))  # type: ignore[arg-type]
            except (urllib.error.URLError, OSError, ValueError):
                pass

    def wait(self, timeout: float, on_poll: Any = None) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(60)
                pytest.fail(f"aerplane up did not finish in {timeout}s:\n{self.output()}")
            self.poll_once()
            if on_poll is not None:
                on_poll(self)
            time.sleep(0.2)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


def _metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _assert_no_survivors(watcher: RunWatcher) -> None:
    assert {"redis", "coefficient", "reward", "generation", "learner"} <= set(watcher.pids), watcher.pids
    for name, pid in watcher.pids.items():
        assert not _group_alive(pid), f"{name} (pid {pid}) or a child of it outlived aerplane up"


@pytest.mark.slow
def test_aerplane_up_runs_a_whole_aer_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    watcher = RunWatcher(run_dir, "--steps", "3", *TINY_RUN)
    code = watcher.wait(timeout=1500)
    assert code == 0, watcher.output()

    # Every service became ready (the launcher waits on /readyz before starting the next) and answered /metrics.
    info = watcher.services()["services"]
    assert set(info) == {"coefficient", "reward", "generation", "learner"}
    assert set(watcher.metrics_text) == {"coefficient", "reward", "generation", "learner"}, watcher.output()
    assert "aerplane_learner_" in watcher.metrics_text["learner"]

    # The coefficient service's REST state followed the run through its three steps (0-based: the last applied
    # step is 2, after 3 observations), anchored on H_0 measured at step 0.
    final = [s for s in watcher.states if s.get("observations") == 3]
    assert final, f"REST never showed 3 steps: {[s.get('observations') for s in watcher.states]}"
    state = final[-1]
    assert state["step"] == 2 and state["has_step"] is True
    assert state["strategy"] == "aer"
    assert state["initial_entropy"] is not None and state["initial_entropy"] > 0
    assert state["target_entropy"] == pytest.approx(0.5 * state["initial_entropy"])

    rows = _metrics_rows(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[0]["initial_entropy"] == pytest.approx(state["initial_entropy"], rel=1e-6)

    # The report: markdown that embeds valid PNG plots, and the held-out evaluation.
    report = (run_dir / "report.md").read_text()
    from PIL import Image

    plots = sorted((run_dir / "plots").glob("*.png"))
    assert {p.stem for p in plots} >= {"entropy", "alpha", "prompt_weight", "accuracy", "response_length"}
    for p in plots:
        assert f"plots/{p.name}" in report
        with Image.open(p) as img:
            img.verify()
            assert img.format == "PNG" and img.size[0] > 100
    evaluation = json.loads((run_dir / "eval.json").read_text())["splits"][0]
    assert evaluation["problems"] == 4 and evaluation["k"] == 2
    assert 0.0 <= evaluation["avg_at_k"] <= evaluation["pass_at_k"] <= 1.0
    assert evaluation["policy_versions"] == [3]

    _assert_no_survivors(watcher)


@pytest.mark.slow
def test_alpha_override_through_rest_reaches_the_learner(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pinned = 0.0042
    sent: dict[str, Any] = {}

    def override_after_first_step(w: RunWatcher) -> None:
        if sent or not (run_dir / "metrics.jsonl").exists() or not _metrics_rows(run_dir):
            return
        body = json.dumps({"alpha": pinned, "reason": "e2e: pin alpha"}).encode()
        req = urllib.request.Request(
            f"{w.rest_base()}/coefficients", data=body, method="PATCH", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            sent["state"] = json.loads(resp.read())
        sent["after_step"] = _metrics_rows(run_dir)[-1]["step"]

    watcher = RunWatcher(run_dir, "--steps", "6", "--backend", "transformers", *TINY_RUN)
    code = watcher.wait(timeout=1500, on_poll=override_after_first_step)
    assert code == 0, watcher.output()
    assert sent, "the run ended before the override could be sent"
    assert sent["state"]["alpha"] == pytest.approx(pinned) and sent["state"]["alpha_pinned"] is True

    rows = _metrics_rows(run_dir)
    before = [r for r in rows if r["step"] <= sent["after_step"]]
    # Steps that started after the override (allow one step in flight when it landed) use the pinned α.
    after = [r for r in rows if r["step"] > sent["after_step"] + 1]
    assert after, f"no step ran after the override at step {sent['after_step']}"
    assert all(r["alpha"] == pytest.approx(pinned) for r in after), [r["alpha"] for r in rows]
    assert all(r["alpha"] != pytest.approx(pinned) for r in before)
    _assert_no_survivors(watcher)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model"], "--model /nonexistent/model"),
        (["--strategy", "aer", "--rho", "1.5"], "rho"),
        (["--strategy", "bogus"], "strategy"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_input_stops_before_anything_starts(tmp_path: Path, args: list[str], message: str) -> None:
    run_dir = tmp_path / "run"
    out = subprocess.run(
        _aerplane("up", "--run-dir", str(run_dir), "--free-ports", "--no-live", *args),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (run_dir / "services.json").exists()


def test_malformed_data_file_and_busy_port_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "1+1?", "answer": "2"}\n{not json\n')
    out = subprocess.run(
        _aerplane("up", "--run-dir", str(tmp_path / "r1"), "--model", "tiny", "--free-ports", "--data", str(data)),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2 and "bad.jsonl" in out.stderr and ":2" in out.stderr, out.stderr

    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = dict(os.environ)
        out = subprocess.run(
            _aerplane("up", "--run-dir", str(tmp_path / "r2"), "--model", "tiny", "--coefficient-http-port", str(port)),
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
    assert out.returncode == 2 and f"port {port}" in out.stderr and "in use" in out.stderr, out.stderr
