"""The learner as processes (`aerplane learner train`, 2 gloo ranks, tiny model) against a real Redis.

The test plays generation + reward: a thread consumes the learner's rollout requests and publishes scored samples
whose content is a pure function of (step, prompt, sample index), so two runs see identical data. This is the
contract the learner has with any producer of scored samples — nothing here is a learner-specific shortcut.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from aerplane.common.messages import (
    ROLLOUT_REQUESTS,
    ROLLOUT_SCORED,
    WEIGHTS,
    RolloutRequest,
    ScoredSample,
    WeightsAnnouncement,
)
from aerplane.common.process import ManagedProcess, descendants, free_port
from aerplane.common.streams import StreamClient
from aerplane.learner import checkpoint as ckpt

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 6
G = 4


class FakeRollouts:
    """Generation + reward stand-in: deterministic responses and rewards for every rollout request."""

    def __init__(self, redis_url: str, run_id: str, tokenizer) -> None:
        self.client = StreamClient(redis_url, run_id)
        self.run_id = run_id
        self.tokenizer = tokenizer
        self.hold_from_step: int | None = None  # requests of this step and later wait while set
        self.requests: list[RolloutRequest] = []
        self.versions: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FakeRollouts:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()

    @staticmethod
    def scored(req: RolloutRequest, prompt_ids: list[int], version: int) -> list[ScoredSample]:
        rng = random.Random(f"{req.step}:{req.prompt_id}")
        correct = rng.randint(0, req.num_samples)  # group accuracies spread over [0, 1]
        out = []
        for i in range(req.num_samples):
            r = random.Random(f"{req.step}:{req.prompt_id}:{i}")
            response = [r.randrange(100, 5000) for _ in range(r.randint(2, 6))]
            out.append(
                ScoredSample(
                    run_id=req.run_id,
                    step=req.step,
                    prompt_id=req.prompt_id,
                    sample_index=i,
                    num_samples=req.num_samples,
                    policy_version=version,
                    task=req.task,
                    difficulty=req.difficulty,
                    ground_truth=req.ground_truth,
                    prompt_token_ids=prompt_ids,
                    response_token_ids=response,
                    logprobs=[-8.0] * len(response),
                    response_text="",
                    finish_reason="stop",
                    reward=1.0 if i < correct else 0.0,
                    reason="match" if i < correct else "mismatch",
                )
            )
        return out

    def _run(self) -> None:
        requests = self.client.consumer(ROLLOUT_REQUESTS, "generation", "fake-0", RolloutRequest)
        weights = self.client.consumer(WEIGHTS, "fake-generation", "fake-0", WeightsAnnouncement)
        held: list = []
        version = 0
        while not self._stop.is_set():
            for d in weights.read(count=64, block_ms=0):
                version = max(version, d.record.version)
                self.versions.append(d.record.version)
                weights.ack(d.id)
            ready, held = held, []
            for d in ready + requests.read(count=64, block_ms=100):
                req = d.record
                if self.hold_from_step is not None and req.step >= self.hold_from_step:
                    held.append(d)
                    continue
                self.requests.append(req)
                ids = self.tokenizer(req.prompt, add_special_tokens=False)["input_ids"][-48:]
                samples = self.scored(req, ids, max(version, req.policy_version))
                requests.publish_and_ack(ROLLOUT_SCORED, samples, [d.id])
            if not held:
                continue
            time.sleep(0.05)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from aerplane.data.embedded_models import tiny_model

    return AutoTokenizer.from_pretrained(str(tiny_model()))


def learner(
    tmp_path: Path, name: str, redis_url: str, run_id: str, *extra: str, nproc: int = 2, steps: int = STEPS
) -> ManagedProcess:
    http = free_port()
    argv = [
        sys.executable,
        "-m",
        "aerplane.cli",
        "learner",
        "train",
        "--nproc-per-node",
        str(nproc),
        "--run-id",
        run_id,
        "--run-dir",
        str(tmp_path / run_id),
        "--redis-url",
        redis_url,
        "--model",
        "tiny",
        "--steps",
        str(steps),
        "--prompts-per-step",
        "4",
        "--samples-per-prompt",
        str(G),
        "--micro-batch-size",
        "4",
        "--data-size",
        "24",
        "--lr",
        "1e-3",
        "--seed",
        "3",
        "--http-port",
        str(http),
        "--checkpoint-interval",
        "2",
        "--max-response-tokens",
        "8",
        *extra,
    ]
    proc = ManagedProcess(name, argv, log_path=tmp_path / f"{name}.log", ready_url=f"http://127.0.0.1:{http}/readyz")
    proc.http_port = http  # type: ignore[attr-defined]
    return proc


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(cond, timeout: float, what: str, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(
                f"{proc.name} exited with {proc.poll()} while waiting for {what}:\n{proc.log_tail(40)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{proc.log_tail(40)}")
        time.sleep(0.2)


def sigkill_learner(proc: ManagedProcess) -> None:
    """SIGKILL torchrun and its workers at once, the way a machine or container dies. torchrun starts each worker
    in a session of its own, so killing its process group alone would leave the workers training on."""
    workers = descendants(proc.pid)
    proc.kill()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, "a learner worker outlived SIGKILL"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return stat[stat.rfind(")") + 2 :].split()[0]


def final_params(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return ckpt.load_trainer_state(run_dir / "checkpoints" / ckpt.step_dir_name(step))["model"]


def aer_flags(target: str, *params: str) -> tuple[str, ...]:
    """Learner flags: the coefficient target ("local" or host:port), strategy aer and each `KEY=VALUE` parameter."""
    return ("--coefficient-target", target, "--strategy", "aer", *(a for p in params for a in ("--strategy-param", p)))


def test_kill_and_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, redis_url, tokenizer) -> None:
    local = aer_flags("local", "eta=0.5", "alpha_max=0.05", "target_entropy=20")

    # --- uninterrupted run ---
    gen = FakeRollouts(redis_url, "straight", tokenizer).start()
    try:
        proc = learner(tmp_path, "straight", redis_url, "straight", *local).start()
        proc.wait_ready(240)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5).read().decode()
        assert "aerplane_learner_step" in metrics and "aerplane_learner_alpha" in metrics
        assert proc.proc.wait(timeout=600) == 0, proc.log_tail(40)
    finally:
        proc.stop()
        gen.stop()
    straight = read_metrics(tmp_path / "straight")
    assert [r["step"] for r in straight] == list(range(STEPS))
    assert gen.versions == list(range(1, STEPS + 1))  # one weights announcement per step, in order
    assert (tmp_path / "straight" / "weights" / f"v{STEPS}" / "model.safetensors").is_file()
    assert len(list((tmp_path / "straight" / "weights").iterdir())) == 3  # older versions collected

    # --- killed after step 4's checkpoint, then resumed ---
    gen = FakeRollouts(redis_url, "resumed", tokenizer)
    gen.hold_from_step = 5  # step 5's rollouts never come: the learner is waiting when it is killed
    gen.start()
    try:
        proc = learner(tmp_path, "killed", redis_url, "resumed", *local).start()
        run_dir = tmp_path / "resumed"
        wait_for(lambda: len(read_metrics(run_dir)) >= 5, 600, "step 4", proc)
        wait_for(
            lambda: (
                ckpt.latest_checkpoint(run_dir / "checkpoints") is not None
                and ckpt.latest_checkpoint(run_dir / "checkpoints")[0] == 4
            ),
            60,
            "checkpoint 4",
            proc,
        )
        sigkill_learner(proc)
        gen.hold_from_step = None
        again = learner(tmp_path, "resume", redis_url, "resumed", *local, "--resume").start()
        assert again.proc.wait(timeout=600) == 0, again.log_tail(40)
    finally:
        proc.stop()
        again.stop()
        gen.stop()
    resumed = read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == list(range(STEPS))  # each step once, the re-run replaced nothing twice

    a, b = final_params(tmp_path / "straight", STEPS), final_params(tmp_path / "resumed", STEPS)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed parameters differ from the uninterrupted run"
    for x, y in zip(straight, resumed, strict=True):
        assert x["mean_entropy"] == y["mean_entropy"] and x["alpha"] == y["alpha"]
    assert any(r["alpha"] > 0 for r in straight)  # the coefficient moved, and moved identically after resuming


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def coefficient_service(
    name: str, tmp_path: Path, redis_url: str, env: dict[str, str] | None = None
) -> tuple[ManagedProcess, int, int]:
    """A real `aerplane coefficient serve` on free ports (not started): (process, gRPC port, REST port)."""
    grpc_port, http_port = free_port(), free_port()
    argv = [sys.executable, "-m", "aerplane.cli", "coefficient", "serve", "--host", "127.0.0.1"]
    argv += ["--grpc-port", str(grpc_port), "--http-port", str(http_port), "--redis-url", redis_url]
    process = ManagedProcess(
        name, argv, env=env, log_path=tmp_path / f"{name}.log", ready_url=f"http://127.0.0.1:{http_port}/readyz"
    )
    return process, grpc_port, http_port


def test_alpha_and_initial_entropy_in_the_coefficient_service_follow_the_run(tmp_path, redis_url, tokenizer) -> None:
    service, grpc_port, http_port = coefficient_service("coefficient", tmp_path, redis_url)
    coef = aer_flags(
        f"127.0.0.1:{grpc_port}",
        "eta=0.01",
        "target_entropy=20",
        "kp=0.002",
        "kd=0.01",
        "smoothing=0.5",
        "alpha_max=0.1",
    )
    api = f"http://127.0.0.1:{http_port}/v1/runs/svc"
    gen = FakeRollouts(redis_url, "svc", tokenizer).start()
    procs = [service]
    try:
        service.start().wait_ready(60)
        first = learner(tmp_path, "svc-a", redis_url, "svc", *coef, steps=3)
        procs.append(first)
        first.start()
        assert first.proc.wait(timeout=600) == 0, first.log_tail(40)
        rows = read_metrics(tmp_path / "svc")
        state = get_json(api)
        assert state["step"] == 2 and state["observations"] == 3  # `step`: the last applied step (0-based)
        assert state["initial_entropy"] == pytest.approx(rows[0]["mean_entropy"], rel=1e-9)  # H_0 = step 0's H
        assert state["alpha"] == pytest.approx(rows[-1]["next_alpha"], rel=1e-9) and state["alpha"] > 0
        history = get_json(api + "/history")
        assert [h["mean_entropy"] for h in history] == pytest.approx([r["mean_entropy"] for r in rows], rel=1e-9)
        # The service's record of each step: the α it answered is the α the learner trained with.
        assert [h["step"] for h in history] == [0, 1, 2]
        assert [r["alpha"] for r in rows] == pytest.approx([h["alpha"] for h in history], abs=1e-12)
        assert [r["next_alpha"] for r in rows] == pytest.approx([h["alpha_next"] for h in history], abs=1e-12)
        assert [r["mean_prompt_weight"] for r in rows] == pytest.approx([h["mean_prompt_weight"] for h in history])
        for term in ("p_term", "i_term", "d_term"):  # the controller's terms of each next α, in metrics.jsonl too
            assert [r[term] for r in rows] == [h[term] for h in history]
        assert rows[0]["p_term"] is None and rows[2]["p_term"] > 0 and rows[2]["d_term"] != 0
        # The step's figures for the console: accuracy per difficulty and response length as in metrics.jsonl.
        for key in ("accuracy_by_difficulty", "response_length"):
            assert [h[key] for h in history] == [r[key] for r in rows]
        assert history[0]["accuracy_by_difficulty"] and history[0]["response_length"] > 0
        assert state["total_steps"] == 3 and state["finished"]

        # A resumed learner continues the same coefficient run (H_0 kept, α keeps moving).
        second = learner(tmp_path, "svc-b", redis_url, "svc", *coef, "--resume", steps=5)
        procs.append(second)
        second.start()
        assert second.proc.wait(timeout=600) == 0, second.log_tail(40)
        rows = read_metrics(tmp_path / "svc")
        assert [r["step"] for r in rows] == list(range(5))
        later = get_json(api)
        assert later["step"] == 4 and later["initial_entropy"] == state["initial_entropy"]
        assert later["total_steps"] == 5 and later["finished"]  # live again at step 3, finished at 4
        assert later["alpha"] > state["alpha"] and rows[3]["alpha"] == pytest.approx(state["alpha"], rel=1e-9)
    finally:
        for p in reversed(procs):
            p.stop()
        gen.stop()


def test_sigterm_checkpoints_the_finished_steps_and_a_resume_completes_the_run(tmp_path, redis_url, tokenizer) -> None:
    run_dir = tmp_path / "term"
    gen = FakeRollouts(redis_url, "term", tokenizer)
    gen.hold_from_step = 2
    gen.start()
    common = ("--coefficient-target", "local", "--checkpoint-interval", "0")  # no checkpoint before the end
    procs = []
    try:
        proc = learner(tmp_path, "term-a", redis_url, "term", *common, steps=4)
        procs.append(proc)
        proc.start()
        wait_for(lambda: len(read_metrics(run_dir)) >= 2, 600, "step 1", proc)
        assert ckpt.latest_checkpoint(run_dir / "checkpoints") is None
        proc.stop(timeout=60)  # SIGTERM to the launcher and its workers while they wait for step 2's rollouts
        assert "stop requested: leaving before step 2" in proc.log_tail(200)
        assert ckpt.latest_checkpoint(run_dir / "checkpoints")[0] == 2  # the two finished steps were kept

        gen.hold_from_step = None
        again = learner(tmp_path, "term-b", redis_url, "term", *common, "--resume", steps=4)
        procs.append(again)
        again.start()
        assert again.proc.wait(timeout=600) == 0, again.log_tail(40)
        assert [r["step"] for r in read_metrics(run_dir)] == [0, 1, 2, 3]
        assert ckpt.latest_checkpoint(run_dir / "checkpoints")[0] == 4
    finally:
        for p in procs:
            p.stop()
        gen.stop()


def test_fsdp_bf16_run_publishes_bf16_weights_and_resumes_from_its_sharded_checkpoint(
    tmp_path, redis_url, tokenizer
) -> None:
    """`--parallel fsdp --dtype bfloat16` (and gradient checkpointing) through the real entrypoint, 2 gloo ranks."""
    from safetensors.torch import load_file

    run_dir = tmp_path / "fsdp"
    extra = ("--coefficient-target", "local", "--parallel", "fsdp", "--dtype", "bfloat16", "--gradient-checkpointing")
    gen = FakeRollouts(redis_url, "fsdp", tokenizer).start()
    procs = []
    try:
        first = learner(tmp_path, "fsdp-a", redis_url, "fsdp", *extra, steps=3)
        procs.append(first)
        first.start()
        assert first.proc.wait(timeout=600) == 0, first.log_tail(40)
        again = learner(tmp_path, "fsdp-b", redis_url, "fsdp", *extra, "--resume", steps=4)
        procs.append(again)
        again.start()
        assert again.proc.wait(timeout=600) == 0, again.log_tail(40)
    finally:
        for p in procs:
            p.stop()
        gen.stop()
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(r["grad_norm"] > 0 for r in rows[1:])  # step 0 anchors H_0 (AER): no update
    assert gen.versions[-1] == 4 and set(gen.versions) == {1, 2, 3, 4}
    step, path = ckpt.latest_checkpoint(run_dir / "checkpoints")
    assert step == 4 and (path / ckpt.SHARDS).is_dir()
    full = ckpt.load_model_state(path)  # float32 master weights, gathered from the shards
    assert {v.dtype for v in full.values()} == {torch.float32}
    published = load_file(str(run_dir / "weights" / "v4" / "model.safetensors"))
    assert published.keys() <= full.keys()
    for name, tensor in published.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, full[name].to(torch.bfloat16)), name


def get_json_as(url: str, token: str):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def test_sigkilled_learner_resumes_training_every_group_exactly_once(
    tmp_path, redis_url, tokenizer, monkeypatch
) -> None:
    """SIGKILL the learner after it trained a step past its last checkpoint, then `--resume`. The learner's record
    of consumed rollouts shows every group of every step trained once; the coefficient service has one history row
    per step and α continues from where it stood; the parameters equal an uninterrupted run's, bit for bit. The
    service runs with operator, read-only and learner tokens (the learner sends its token from the variable the
    service reads it from), and no token reaches any log."""
    from aerplane.learner.ledger import read_ledger

    operator, reader, learner_token = "once-operator-token", "once-read-token", "once-learner-token"
    monkeypatch.setenv("AERPLANE_LEARNER_TOKEN", learner_token)  # both ends: the service and the learner
    service, grpc_port, http_port = coefficient_service(
        "coefficient-once",
        tmp_path,
        redis_url,
        env={**os.environ, "AERPLANE_API_TOKEN": operator, "AERPLANE_API_READ_TOKEN": reader},
    )
    coef = aer_flags(f"127.0.0.1:{grpc_port}", "eta=0.5", "alpha_max=0.05", "target_entropy=20")
    api = f"http://127.0.0.1:{http_port}/v1/runs"
    procs = [service]
    try:
        service.start().wait_ready(60)

        # --- uninterrupted ---
        gen = FakeRollouts(redis_url, "once-straight", tokenizer).start()
        try:
            straight = learner(tmp_path, "once-straight", redis_url, "once-straight", *coef, nproc=1)
            procs.append(straight)
            straight.start()
            assert straight.proc.wait(timeout=600) == 0, straight.log_tail(40)
        finally:
            gen.stop()

        # --- SIGKILL after step 4 was trained (checkpoint 4 holds steps 0–3), then --resume ---
        run_dir = tmp_path / "once-killed"
        gen = FakeRollouts(redis_url, "once-killed", tokenizer)
        gen.hold_from_step = 5
        gen.start()
        try:
            killed = learner(tmp_path, "once-killed", redis_url, "once-killed", *coef, nproc=1)
            procs.append(killed)
            killed.start()
            wait_for(lambda: len(read_metrics(run_dir)) >= 5, 600, "step 4", killed)
            wait_for(lambda: ckpt.latest_checkpoint(run_dir / "checkpoints") is not None, 60, "a checkpoint", killed)
            sigkill_learner(killed)
            assert ckpt.latest_checkpoint(run_dir / "checkpoints")[0] == 4
            assert [e["step"] for e in read_ledger(run_dir)] == [0, 1, 2, 3, 4]  # step 4: trained, then lost
            gen.hold_from_step = None
            resumed = learner(tmp_path, "once-resumed", redis_url, "once-killed", *coef, "--resume", nproc=1)
            procs.append(resumed)
            resumed.start()
            assert resumed.proc.wait(timeout=600) == 0, resumed.log_tail(40)
        finally:
            gen.stop()
        history = {run: get_json_as(f"{api}/{run}/history", reader) for run in ("once-straight", "once-killed")}
    finally:
        for p in reversed(procs):
            p.stop()

    # The learner's record: every group of every step, once; the same groups as the uninterrupted run.
    record, reference = read_ledger(run_dir), read_ledger(tmp_path / "once-straight")
    assert [e["step"] for e in record] == list(range(STEPS))
    trained = [(e["step"], g["prompt_id"]) for e in record for g in e["groups"]]
    assert len(trained) == len(set(trained)) == STEPS * 4
    assert all(g["samples"] == list(range(G)) for e in record for g in e["groups"])
    groups = lambda entries: [[(g["prompt_id"], g["samples"]) for g in e["groups"]] for e in entries]  # noqa: E731
    assert groups(record) == groups(reference)  # (the samples' policy versions follow the fake generator's timing)
    assert "dropped steps 4" in resumed.log_tail(400)

    # The coefficient service applied each step once, and α continued from the state before the crash.
    rows = history["once-killed"]
    assert [h["step"] for h in rows] == list(range(STEPS))
    assert all(h["mean_entropy"] is not None for h in rows)
    assert all(later["alpha"] == earlier["alpha_next"] for earlier, later in zip(rows[:-1], rows[1:], strict=True))
    assert rows == history["once-straight"] and any(h["alpha"] > 0 for h in rows)
    assert "run once-killed: step 4 was applied before; state unchanged" in service.log_tail(400)
    metrics = read_metrics(run_dir)
    assert [r["alpha"] for r in metrics] == [h["alpha"] for h in rows]

    # The parameters: bit-exact with the uninterrupted run.
    a, b = final_params(tmp_path / "once-straight", STEPS), final_params(run_dir, STEPS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "parameters differ after the restart"

    # No token in any log or in the settings the learner wrote down.
    for path in [*tmp_path.glob("*.log"), run_dir / "learner_settings.json"]:
        text = path.read_text(errors="replace")
        for token in (operator, reader, learner_token):
            assert token not in text, f"a token reached {path.name}"


def test_the_learner_reports_each_step_and_an_override_to_every_tracker(tmp_path, redis_url, tokenizer) -> None:
    """`--report-to tensorboard,wandb,mlflow`, offline: each tracker's own reader gives the run's steps and H per
    step exactly as metrics.jsonl has them, and the α pin an operator makes mid-run shows as an event."""
    from tracker_support import tensorboard_scalars, tracker_reads

    from aerplane.common.trackers import read_state

    service, grpc_port, http_port = coefficient_service("coefficient", tmp_path, redis_url)
    coef = aer_flags(f"127.0.0.1:{grpc_port}", "eta=0.01", "target_entropy=20")
    trackers = ("--report-to", "tensorboard,wandb", "--report-to", "mlflow", "--wandb-mode", "offline")
    gen = FakeRollouts(redis_url, "tracked", tokenizer)
    gen.hold_from_step = 1
    procs = [service]
    try:
        service.start().wait_ready(60)
        gen.start()
        proc = learner(tmp_path, "tracked", redis_url, "tracked", *coef, *trackers, nproc=1, steps=3)
        procs.append(proc)
        proc.start()
        wait_for(lambda: len(read_metrics(tmp_path / "tracked")) >= 1, 600, "step 0", proc)
        pin = {"alpha": 0.005, "reason": "tracker test"}
        r = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/runs/tracked/coefficients",
            data=json.dumps(pin).encode(),
            headers={"Content-Type": "application/json"},
            method="PATCH",
        )
        assert urllib.request.urlopen(r, timeout=10).status == 200
        gen.hold_from_step = None
        assert proc.proc.wait(timeout=600) == 0, proc.log_tail(40)
    finally:
        for p in reversed(procs):
            p.stop()
        gen.stop()
    run_dir = tmp_path / "tracked"
    rows = read_metrics(run_dir)
    entropy = {r["step"]: r["mean_entropy"] for r in rows}
    assert list(entropy) == [0, 1, 2]
    reads = tracker_reads(run_dir, "mean_entropy")
    for name in ("tensorboard", "wandb", "mlflow"):
        assert reads[name] == pytest.approx(entropy, rel=1e-6), name  # TensorBoard keeps float32
    state = read_state(run_dir)["trackers"]
    assert tensorboard_scalars(state["tensorboard"]["logdir"], "events/override") == {1: 1.0}
