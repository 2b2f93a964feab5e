"""The generation service's process (`GenerationService`): wire settings → model → engine → rollout loop
(worker.py), with the ops server alongside. `serve` is what `aerplane generation serve` runs (launcher/services.py).

    aerplane generation serve --backend vllm --model tiny --run-id r1 --redis-url redis://127.0.0.1:6379/0

/healthz answers as soon as the process is up, and 503 "hung" when the rollout loop has requests in flight in the
engine with nothing back for `hang_timeout_s` (worker.py); a watchdog then exits with code 124 for the supervisor
to restart the service, unless `exit_on_hang` is off. /readyz turns 200 once the engine is loaded (vLLM takes
about a minute on CPU) and Redis answers. SIGTERM/SIGINT: the current batch finishes and is published, the vLLM child is
stopped, exit 0. While the engine is still starting, SIGTERM stops the child and exits at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from aerplane.common.liveness import Watchdog
from aerplane.common.ops import OpsServer, new_registry
from aerplane.generation.metrics import GenerationMetrics, VLLMMetricsProxy
from aerplane.generation.settings import GenerationSettings

log = logging.getLogger("aerplane.generation")


class _Terminated(Exception):
    """SIGTERM while the engine was still starting."""


class GenerationService:
    """One generation service: settings → model → engine → worker loop, with the ops server alongside. It owns what
    it starts (ops server, engine, Redis client) and releases it on exit::

        with GenerationService(settings) as service:
            return service.run()
    """

    def __init__(self, settings: GenerationSettings) -> None:
        self.settings = settings
        self.metrics = GenerationMetrics(new_registry())
        self.backend: Any = None
        self.client: Any = None
        self.worker: Any = None
        self.stopping = threading.Event()
        self.ops: OpsServer | None = None
        self.watchdog = Watchdog(self.live, exit_on_hang=settings.exit_on_hang)

    def __enter__(self) -> GenerationService:
        s = self.settings
        self.ops = OpsServer(s.host, s.http_port, self.metrics.registry, self.ready, self.live).start()
        self.watchdog.start()
        log.info("ops server on %s:%d; backend %s, model %s", s.host, self.ops.port, s.backend, s.model)
        return self

    def __exit__(self, *exc: object) -> None:
        self.watchdog.stop()
        for resource in (self.backend, self.client):
            if resource is not None:
                resource.close()
        if self.ops is not None:
            self.ops.stop()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """/readyz: the engine loaded and answering, Redis reachable, not stopping."""
        if self.backend is None or self.client is None or self.worker is None:
            return False, {"engine": "loading", "backend": self.settings.backend}
        engine_ok, details = self.backend.ready()
        redis_ok = self.client.ping()
        self.metrics.engine_ready.set(1 if engine_ok else 0)
        return engine_ok and redis_ok and not self.stopping.is_set(), {
            "backend": self.settings.backend,
            "policy_version": self.worker.version,
            "redis": "ok" if redis_ok else "unreachable",
            **details,
        }

    def live(self) -> tuple[bool, dict[str, Any]]:
        """/healthz: the rollout loop moves while it has requests in the engine (healthy while the engine starts)."""
        return self.worker.progress.check() if self.worker is not None else (True, {})

    def on_signal(self, signum: int, _frame: Any) -> None:
        """SIGTERM/SIGINT: the worker finishes its batch and returns; during start-up, stop at once."""
        log.info("signal %d: finishing the current batch, then exiting", signum)
        self.stopping.set()
        if self.worker is None:
            raise _Terminated()
        self.worker.stop()

    def run(self) -> int:
        """Load the model and the engine, then serve until stopped; the exit code (2: bad model, 1: engine)."""
        from aerplane.common.messages import ROLLOUT_REQUESTS
        from aerplane.common.stream_metrics import StreamMetrics
        from aerplane.common.streams import StreamClient
        from aerplane.data.embedded_models import ModelUnavailable, resolve_model
        from aerplane.generation.backends import BackendError, build_backend
        from aerplane.generation.worker import EngineDied, GenerationWorker

        s = self.settings
        try:
            model_path = resolve_model(s.model, s.cache_dir)
        except (ValueError, ModelUnavailable) as exc:
            log.error("generation.model: %s", exc)
            return 2
        try:
            self.backend = build_backend(s, model_path)
        except BackendError as exc:
            log.error("engine failed to start: %s", exc)
            return 1
        vllm_url = getattr(self.backend, "base_url", None)
        if vllm_url:  # vLLM's own vllm:* series, served on this service's /metrics
            self.metrics.registry.register(VLLMMetricsProxy(f"{vllm_url}/metrics"))
        tokenizer = getattr(self.backend, "tokenizer", None)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.client = StreamClient(s.redis_url, s.run_id)
        self.worker = GenerationWorker(s, self.backend, tokenizer, self.client, self.metrics)
        worker = self.worker
        StreamMetrics(
            "aerplane_generation", self.client, lambda: worker.consumer, [(ROLLOUT_REQUESTS, s.group)]
        ).register(self.metrics.registry)
        self.metrics.engine_ready.set(1)
        try:
            self.worker.run()
        except EngineDied as exc:
            log.error("%s", exc)
            return 1
        return 0


def serve(settings: GenerationSettings) -> int:
    """`aerplane generation serve`: run one `GenerationService` until SIGTERM/SIGINT."""
    with GenerationService(settings) as service:
        signal.signal(signal.SIGTERM, service.on_signal)
        signal.signal(signal.SIGINT, service.on_signal)
        try:
            return service.run()
        except _Terminated:
            log.info("terminated during start-up")
            return 0
