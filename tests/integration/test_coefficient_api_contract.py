"""The coefficient service's REST contract, held by schemathesis against a real `aerplane coefficient serve`.

schemathesis (PyPI) reads the service's own OpenAPI document and runs every check it has (`--checks all`: no
server errors, only documented statuses and content types, response bodies and headers matching their schemas,
schema-valid requests accepted, invalid ones refused, a missing or ignored token answered with 401, …) in all four
phases, the stateful one included: it follows the document's links from a listed run to its state, history, audit,
override and release. The service runs as a process with operator, read-only and learner tokens, the way it is
deployed; runs exist beforehand (created over gRPC by a "learner"), so there is state to read and change. Any
finding fails the test, and the fix belongs in the service.

Run it alone:  pytest tests/integration/test_coefficient_api_contract.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from service_support import start_coefficient_service

from aerplane.coefficient.client import CoefficientClient
from aerplane.common.process import ManagedProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

OPERATOR = "contract-operator-token"
READER = "contract-read-token"
LEARNER = "contract-learner-token"


@pytest.fixture
def service(tmp_path: Path, redis_url: str):
    env = {
        **os.environ,
        "AERPLANE_REDIS_URL": redis_url,
        "AERPLANE_API_TOKEN": OPERATOR,
        "AERPLANE_API_READ_TOKEN": READER,
        "AERPLANE_LEARNER_TOKEN": LEARNER,
        "AERPLANE_LOG_LEVEL": "DEBUG",
    }
    proc, http_port, grpc_port = start_coefficient_service(tmp_path, env)
    proc.grpc_port, proc.http_port = grpc_port, http_port  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


def _seed_runs(grpc_port: int) -> None:
    """Runs of every strategy, one with history and one with an override, created the way the learner does."""
    with CoefficientClient(f"127.0.0.1:{grpc_port}", timeout=10, token=LEARNER) as learner:
        learner.start_run("aer-1", "aer", {"anchor_steps": 1, "eta": 0.01}, {"weighting": "linear"})
        for step, h in enumerate([2.0, 1.4, 0.9]):
            learner.get_coefficients("aer-1", step, [("a", 0.25, 4), ("b", 1.0, 4)])
            learner.report_entropy("aer-1", step, h, 100)
        learner.start_run("sky-1", "skywork", {"target_entropy": 0.3}, {})
        learner.start_run("fixed-1", "fixed", {"alpha": 0.002}, {})
        learner.start_run("none-1", "none", {}, {})
    with CoefficientClient(f"127.0.0.1:{grpc_port}", timeout=10, token=OPERATOR) as operator:
        operator.override("sky-1", alpha=0.001, reason="seeded pin")


def test_schemathesis_finds_nothing_with_every_check_and_phase(service: ManagedProcess, tmp_path: Path) -> None:
    _seed_runs(service.grpc_port)  # type: ignore[attr-defined]
    schemathesis = Path(sys.executable).parent / "schemathesis"
    argv = [
        str(schemathesis),
        "run",
        f"http://127.0.0.1:{service.http_port}/openapi.json",  # type: ignore[attr-defined]
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--header",
        f"Authorization: Bearer {OPERATOR}",
        "--max-examples",
        "60",
        "--seed",
        "20260101",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=800, cwd=tmp_path)
    output = result.stdout + result.stderr
    print(output)  # the phase table and, on failure, every finding with a curl line to reproduce it
    assert result.returncode == 0, f"schemathesis found problems:\n{output[-20000:]}"
    assert "Stateful" in output and "Scenarios:" in output, "the stateful phase did not run"
    log = (tmp_path / "coefficient.log").read_text()
    for token in (OPERATOR, READER, LEARNER):
        assert token not in log, "a token reached the service's log"
