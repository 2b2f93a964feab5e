"""What several integration tests start or send the same way: a real `aerplane coefficient serve` process, and a
generated rollout sample for the reward stream."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from aerplane.common import messages as m
from aerplane.common.process import ManagedProcess, free_port


def start_coefficient_service(tmp_path: Path, env: Mapping[str, str]) -> tuple[ManagedProcess, int, int]:
    """`aerplane coefficient serve` on two free ports with `env`, ready; returns it with its HTTP and gRPC ports.
    The caller stops it."""
    http_port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "aerplane.cli", "coefficient", "serve", "--host", "127.0.0.1"]
    argv += ["--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    proc = ManagedProcess(
        "coefficient",
        argv,
        env=dict(env),
        log_path=tmp_path / "coefficient.log",
        ready_url=f"http://127.0.0.1:{http_port}/readyz",
    )
    proc.start().wait_ready(60)
    return proc, http_port, grpc_port


def generated_sample(
    i: int,
    *,
    run: str,
    step: int = 1,
    text: str | None = None,
    truth: str | None = None,
    task: str = "math",
    response: Sequence[int] = (3,),
    logprobs: Sequence[float] = (-0.5,),
) -> m.GeneratedSample:
    """Sample 0 of prompt `p{i}`, whose answer `\\boxed{i}` is right unless `text` or `truth` say otherwise."""
    return m.GeneratedSample(
        run_id=run,
        step=step,
        prompt_id=f"p{i}",
        sample_index=0,
        num_samples=1,
        policy_version=0,
        task=task,
        difficulty="easy",
        ground_truth=str(i) if truth is None else truth,
        prompt_token_ids=[1, 2],
        response_token_ids=list(response),
        logprobs=list(logprobs),
        response_text=rf"\boxed{{{i}}}" if text is None else text,
    )
