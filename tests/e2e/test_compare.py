"""`aerplane compare` end to end on the tiny model: two short configurations, interrupted mid-matrix, then resumed.

The real entrypoint runs as a subprocess (STYLE §10). The test interrupts it with SIGINT (what Ctrl-C sends) while the
second configuration is training, checks that nothing outlived it, runs `aerplane compare --out OUT` again, and checks
that the finished run was not redone, the interrupted one continued from its checkpoint, and the comparison report
holds both configurations.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aerplane.common.process import live_group_members

SETUP = [
    "--model",
    "tiny",
    "--backend",
    "transformers",
    "--steps",
    "3",
    "--prompts-per-step",
    "2",
    "-G",
    "4",
    "--max-tokens",
    "16",
    "--eval-size",
    "4",
    "--eval-k",
    "8",
    "--checkpoint-interval",
    "1",
    "--no-live",
]
CONFIGS = "none,aer:rho=0.9:eta=0.01"


def _aerplane(*args: str) -> list[str]:
    return [sys.executable, "-m", "aerplane.cli", *args]


def _state(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "compare.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pids(out: Path) -> dict[str, int]:
    """Every process group the comparison started: the shared Redis and coefficient service, and each run's."""
    pids: dict[str, int] = {}
    for path in [out / "services.json", *sorted((out / "runs").glob("*/services.json"))]:
        info = json.loads(path.read_text())
        for name, svc in info.get("services", {}).items():
            pids[f"{path.parent.name}/{name}"] = svc["pid"]
        if "redis_pid" in info:
            pids[f"{path.parent.name}/redis"] = info["redis_pid"]
    return pids


def _assert_no_survivors(out: Path) -> None:
    pids = _pids(out)
    assert any(k.endswith("/coefficient") for k in pids) and any(k.endswith("/learner") for k in pids), pids
    for name, pid in pids.items():
        assert not live_group_members(pid), f"{name} (pid {pid}) outlived aerplane compare"


@contextlib.contextmanager
def _compare(argv: list[str], log: Path, out: Path):
    """`aerplane compare` in a session of its own; on the way out (a failed assertion, a timeout) it gets SIGINT,
    then SIGKILL, and every process group it started is killed, so a failing test leaves nothing running."""
    with open(log, "wb") as f:
        proc = subprocess.Popen(_aerplane(*argv), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        try:
            started = _pids(out)
        except (OSError, ValueError):  # nothing started yet, or a file caught mid-write
            started = {}
        for pid in started.values():
            if live_group_members(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


def _interrupt_mid_second_run(first: subprocess.Popen, out: Path, log: Path) -> None:
    """SIGINT once the second configuration has trained a step (and checkpointed it); compare exits 130."""
    second = out / "runs" / "aer-rho-0.9-eta-0.01-s0"
    deadline = time.monotonic() + 1200
    while not _rows(second):
        assert first.poll() is None, f"compare ended before the interrupt:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"the second run never trained a step:\n{log.read_text()[-4000:]}"
        time.sleep(0.3)
    first.send_signal(signal.SIGINT)
    assert first.wait(120) == 128 + signal.SIGINT, log.read_text()[-4000:]


@pytest.mark.slow
def test_compare_resumes_after_interrupt_without_redoing_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    log1 = tmp_path / "compare-1.log"
    with _compare(["compare", "--strategies", CONFIGS, "--seeds", "0", "--out", str(out), *SETUP], log1, out) as first:
        _interrupt_mid_second_run(first, out, log1)
    _assert_no_survivors(out)
    second = out / "runs" / "aer-rho-0.9-eta-0.01-s0"
    state = _state(out)
    runs = state["runs"]
    assert runs["none-s0"]["status"] == "finished" and runs["none-s0"]["attempts"] == 1
    assert runs["aer-rho-0.9-eta-0.01-s0"]["status"] == "pending"
    assert "interrupted" in log1.read_text()
    none_run = out / "runs" / "none-s0"
    finished_before = (none_run / "run.json").read_text()
    metrics_before = (none_run / "metrics.jsonl").read_text()
    eval_before = (none_run / "eval.json").read_text()
    rows_before = _rows(second)

    # Continue with the folder alone: the matrix, setup and command come from compare.json.
    log2 = tmp_path / "compare-2.log"
    with _compare(["compare", "--out", str(out), "--no-live"], log2, out) as again:
        code = again.wait(1500)
    assert code == 0, log2.read_text()[-4000:]
    text = log2.read_text()
    assert "1 already finished" in text and "(resuming)" in text
    _assert_no_survivors(out)

    # The finished run was never touched again.
    assert (none_run / "run.json").read_text() == finished_before
    assert (none_run / "metrics.jsonl").read_text() == metrics_before
    assert (none_run / "eval.json").read_text() == eval_before
    state = _state(out)
    assert state["runs"]["none-s0"]["attempts"] == 1
    entry = state["runs"]["aer-rho-0.9-eta-0.01-s0"]
    assert entry["status"] == "finished" and entry["attempts"] == 2
    # The interrupted run continued from its checkpoint: the steps done before were not all trained again.
    rows = _rows(second)
    assert {r["step"] for r in rows} == {0, 1, 2}
    assert rows[: len(rows_before)] == rows_before
    assert len(rows) < len(rows_before) + 3
    assert json.loads((second / "run.json").read_text()).get("finished")
    # Finished runs keep only their final weights (checkpoints and older versions are pruned).
    for run_dir in (none_run, second):
        assert not (run_dir / "checkpoints").exists()
        assert [p.name for p in (run_dir / "weights").iterdir()] == ["v3"]
    assert len(state["history"]) == 2 and state["command"][:2] == ["aerplane", "compare"]

    # The comparison report: both configurations with their numbers, the command and revision, overlaid plots.
    results = json.loads((out / "results.json").read_text())
    by_label = {c["label"]: c for c in results["configs"]}
    assert set(by_label) == {"none", "aer:rho=0.9:eta=0.01"}
    for c in by_label.values():
        s = c["summary"]
        assert s["seeds"] == [0] and not c["not_finished"]
        assert set(s["eval"]) == {"1", "4", "8"}
        for k in ("1", "4", "8"):
            assert 0.0 <= s["eval"][k]["avg"]["mean"] <= 1.0
            assert s["eval"][k]["avg"]["mean"] <= s["eval"][k]["pass"]["mean"] + 1e-9 or k == "1"
        assert s["min_entropy"]["mean"] <= s["final_entropy"]["mean"]
        assert s["wall_seconds"]["mean"] > 0
        assert s["problems"] == 4
    assert by_label["none"]["summary"]["tracking_error"]["mean"] is None  # α never positive under `none`
    aer_run = by_label["aer:rho=0.9:eta=0.01"]["runs"][0]
    assert aer_run["target_entropy"] == pytest.approx(0.9 * aer_run["initial_entropy"], rel=1e-6)
    report = (out / "report.md").read_text()
    assert "| `none` |" in report and "| `aer:rho=0.9:eta=0.01` |" in report
    assert results["git_revision"] in report and "aerplane compare" in report
    from PIL import Image

    for name in ("entropy", "alpha", "prompt_weight", "accuracy", "response_length"):
        path = out / "plots" / f"{name}.png"
        assert f"plots/{name}.png" in report
        with Image.open(path) as img:
            img.verify()
            assert img.format == "PNG"


def test_compare_refuses_bad_matrix_before_anything_starts(tmp_path: Path) -> None:
    matrix = tmp_path / "m.toml"
    matrix.write_text('seeds = [0]\n[setup]\nsteps = 2\n[[config]]\nstrategy = "aer"\nparams = { rhoo = 1 }\n')
    out = subprocess.run(
        _aerplane("compare", "--matrix", str(matrix), "--out", str(tmp_path / "o")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "rhoo" in out.stderr and "config[0]" in out.stderr, out.stderr
    assert not (tmp_path / "o" / "compare.json").exists()
