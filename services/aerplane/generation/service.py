"""`aerplane generation serve`: wire settings → model → engine → worker loop, with the ops server alongside.

    aerplane generation serve --backend vllm --model tiny --run-id r1 --redis-url redis://127.0.0.1:6379/0

/healthz answers as soon as the process is up; /readyz turns 200 once the engine is loaded (vLLM takes about a
minute on CPU) and Redis answers. SIGTERM/SIGINT: the current batch finishes and is published, the vLLM child is
stopped, exit 0. While the engine is still starting, SIGTERM stops the child and exits at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from aerplane.common.ops import OpsServer, new_registry
from aerplane.generation.metrics import GenerationMetrics, VLLMMetricsProxy
from aerplane.generation.settings import GenerationSettings

log = logging.getLogger("aerplane.generation")


class _Terminated(Exception):
    """SIGTERM while the engine was still starting."""


def serve(settings: GenerationSettings) -> int:
    registry = new_registry()
    metrics = GenerationMetrics(registry)
    state: dict[str, Any] = {"backend": None, "client": None, "worker": None}
    stopping = threading.Event()

    def ready() -> tuple[bool, dict[str, Any]]:
        backend, client, worker = state["backend"], state["client"], state["worker"]
        if backend is None or client is None or worker is None:
            return False, {"engine": "loading", "backend": settings.backend}
        engine_ok, details = backend.ready()
        redis_ok = client.ping()
        metrics.engine_ready.set(1 if engine_ok else 0)
        return engine_ok and redis_ok and not stopping.is_set(), {
            "backend": settings.backend,
            "policy_version": worker.version,
            "redis": "ok" if redis_ok else "unreachable",
            **details,
        }

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: finishing the current batch, then exiting", signum)
        stopping.set()
        worker = state["worker"]
        if worker is not None:
            worker.stop()
        else:
            raise _Terminated()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ops = OpsServer(settings.host, settings.http_port, registry, ready).start()
    log.info("ops server on %s:%d; backend %s, model %s", settings.host, ops.port, settings.backend, settings.model)
    try:
        return _run(settings, metrics, state)
    except _Terminated:
        log.info("terminated during start-up")
        return 0
    finally:
        for key in ("backend", "client"):
            if state[key] is not None:
                state[key].close()
        ops.stop()


def _run(settings: GenerationSettings, metrics: GenerationMetrics, state: dict[str, Any]) -> int:
    from aerplane.common.streams import StreamClient
    from aerplane.data.models import ModelUnavailable, resolve_model
    from aerplane.generation.backends import BackendError, build_backend
    from aerplane.generation.worker import EngineDied, GenerationWorker

    try:
        model_path = resolve_model(settings.model, settings.cache_dir)
    except (ValueError, ModelUnavailable) as exc:
        log.error("generation.model: %s", exc)
        return 2
    try:
        state["backend"] = backend = build_backend(settings, model_path)
    except BackendError as exc:
        log.error("engine failed to start: %s", exc)
        return 1
    vllm_url = getattr(backend, "base_url", None)
    if vllm_url:  # vLLM's own vllm:* series, served on this service's /metrics
        metrics.registry.register(VLLMMetricsProxy(f"{vllm_url}/metrics"))
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    state["client"] = client = StreamClient(settings.redis_url, settings.run_id)
    worker = GenerationWorker(settings, backend, tokenizer, client, metrics)
    state["worker"] = worker
    metrics.engine_ready.set(1)
    try:
        worker.run()
    except EngineDied as exc:
        log.error("%s", exc)
        return 1
    return 0
