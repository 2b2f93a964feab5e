"""Running `aerplane up` as a user does, for the e2e tests: start it as a subprocess, watch the run directory, REST
and /metrics from outside while it runs, and check afterwards that no child outlived it."""

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

TINY_RUN = [
    "--model",
    "tiny",
    "--free-ports",
    "--no-live",
    "--prompts-per-step",
    "2",
    "-G",
    "4",
    "--max-tokens",
    "24",
    "--eval-size",
    "4",
    "--eval-k",
    "2",
]


def aerplane_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "aerplane.cli", *args]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return json.loads(resp.read())


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def group_alive(pgid: int) -> bool:
    """Does any process of the group still run? (Zombies waiting for init to reap them do not.)"""
    return bool(live_group_members(pgid))


class RunWatcher:
    """Starts `aerplane up`, then polls what a user could see while it runs."""

    def __init__(self, run_dir: Path, *args: str) -> None:
        self.run_dir = run_dir
        self.log = run_dir.parent / f"{run_dir.name}-up.log"
        self.proc = subprocess.Popen(
            aerplane_argv("up", "--run-dir", str(run_dir), *args),
            stdout=open(self.log, "wb"),  # lives as long as the process
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
                text = fetch(svc["metrics"])
                if text and f"aerplane_{name}_" in text:
                    self.metrics_text[name] = text
        if "redis_pid" in info:
            self.pids["redis"] = info["redis_pid"]
        if "coefficient" in info.get("services", {}):
            try:
                self.states.append(get_json(self.rest_base()))  # type: ignore[arg-type]
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


def metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def assert_no_survivors(watcher: RunWatcher) -> None:
    assert {"redis", "coefficient", "reward", "generation", "learner"} <= set(watcher.pids), watcher.pids
    for name, pid in watcher.pids.items():
        assert not group_alive(pid), f"{name} (pid {pid}) or a child of it outlived aerplane up"
