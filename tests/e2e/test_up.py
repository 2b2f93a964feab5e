"""`aerplane up` itself, on the tiny model and a few steps: the README's main command, end to end.

These run the real entrypoint as a subprocess (STYLE §10): Redis, the coefficient, reward and generation services
and the learner all start as processes; the test watches from outside like a user would (the run directory, REST,
/metrics) and checks afterwards that no child outlived the launcher.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from up_support import TINY_RUN, RunWatcher, aerplane_argv, assert_no_survivors, metrics_rows


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

    rows = metrics_rows(run_dir)
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

    assert_no_survivors(watcher)


@pytest.mark.slow
def test_alpha_override_through_rest_reaches_the_learner(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pinned = 0.0042
    sent: dict[str, Any] = {}

    def override_after_first_step(w: RunWatcher) -> None:
        if sent or not (run_dir / "metrics.jsonl").exists() or not metrics_rows(run_dir):
            return
        body = json.dumps({"alpha": pinned, "reason": "e2e: pin alpha"}).encode()
        req = urllib.request.Request(
            f"{w.rest_base()}/coefficients", data=body, method="PATCH", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            sent["state"] = json.loads(resp.read())
        sent["after_step"] = metrics_rows(run_dir)[-1]["step"]

    watcher = RunWatcher(run_dir, "--steps", "6", "--backend", "transformers", *TINY_RUN)
    code = watcher.wait(timeout=1500, on_poll=override_after_first_step)
    assert code == 0, watcher.output()
    assert sent, "the run ended before the override could be sent"
    assert sent["state"]["alpha"] == pytest.approx(pinned) and sent["state"]["alpha_pinned"] is True

    rows = metrics_rows(run_dir)
    before = [r for r in rows if r["step"] <= sent["after_step"]]
    # Steps that started after the override (allow one step in flight when it landed) use the pinned α.
    after = [r for r in rows if r["step"] > sent["after_step"] + 1]
    assert after, f"no step ran after the override at step {sent['after_step']}"
    assert all(r["alpha"] == pytest.approx(pinned) for r in after), [r["alpha"] for r in rows]
    assert all(r["alpha"] != pytest.approx(pinned) for r in before)
    assert_no_survivors(watcher)


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
        aerplane_argv("up", "--run-dir", str(run_dir), "--free-ports", "--no-live", *args),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (run_dir / "services.json").exists()


def test_malformed_data_file_and_busy_port_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "1+1?", "answer": "2"}\n{not json\n')
    out = subprocess.run(
        aerplane_argv("up", "--run-dir", str(tmp_path / "r1"), "--model", "tiny", "--free-ports", "--data", str(data)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "bad.jsonl" in out.stderr and ":2" in out.stderr, out.stderr

    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = dict(os.environ)
        out = subprocess.run(
            aerplane_argv(  # every other port free, so the one held here is the one reported, whatever else runs
                "up",
                "--run-dir",
                str(tmp_path / "r2"),
                "--model",
                "tiny",
                "--free-ports",
                "--coefficient-http-port",
                str(port),
            ),
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    assert out.returncode == 2 and f"port {port}" in out.stderr and "in use" in out.stderr, out.stderr


@pytest.mark.slow
def test_aerplane_up_reports_to_every_tracker_offline(tmp_path: Path) -> None:
    """`--report-to tensorboard,wandb,mlflow --wandb-mode offline`: each tracker's own reader gives the run's step
    count and H per step as metrics.jsonl has them, and the held-out evaluation the launcher sent after the learner."""
    from tracker_support import tracker_reads

    run_dir = tmp_path / "run"
    trackers = ("--report-to", "tensorboard,wandb,mlflow", "--wandb-mode", "offline")
    watcher = RunWatcher(run_dir, "--steps", "3", *TINY_RUN, *trackers)
    code = watcher.wait(timeout=1500)
    assert code == 0, watcher.output()
    entropy = {r["step"]: r["mean_entropy"] for r in metrics_rows(run_dir)}
    assert list(entropy) == [0, 1, 2]
    for name, read in tracker_reads(run_dir, "mean_entropy").items():
        assert read == pytest.approx(entropy, rel=1e-6), name
    avg = json.loads((run_dir / "eval.json").read_text())["splits"][0]["avg_at_k"]
    evals = tracker_reads(run_dir, "eval/rg-heldout/avg_at_k")
    assert evals["tensorboard"] == pytest.approx({3: avg}) and evals["mlflow"] == pytest.approx({3: avg})
    assert list(evals["wandb"].values()) == pytest.approx([avg])  # W&B plots it against eval/step
    assert_no_survivors(watcher)
