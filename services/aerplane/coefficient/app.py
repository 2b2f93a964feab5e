"""The coefficient service's process: the gRPC server (grpc.py) and the REST app (http.py) in one process, sharing
one run store. `serve` is what `aerplane coefficient serve` runs (launcher/services.py); `start` is what the
tests start in-process.

    AERPLANE_REDIS_URL=redis://127.0.0.1:6379/0 aerplane coefficient serve --grpc-port 50051 --http-port 8000

uvicorn runs on a thread (so it does not take over the process's signals); the main thread waits for SIGTERM or
SIGINT, then shuts both down gracefully: readiness and gRPC health go NOT_SERVING, watch streams end, uvicorn and
gRPC finish in-flight requests within `shutdown_grace_seconds`. All state is in Redis, so nothing needs flushing.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aerplane.coefficient.settings import CoefficientSettings

if TYPE_CHECKING:
    import grpc
    import uvicorn
    from grpc_health.v1 import health

    from aerplane.coefficient.store import RunStore

log = logging.getLogger(__name__)


@dataclass
class RunningService:
    """Both servers, started; `stop()` shuts them down gracefully."""

    settings: CoefficientSettings
    store: RunStore
    grpc_port: int
    http_port: int
    _grpc: grpc.Server
    _health: health.HealthServicer
    _uvicorn: uvicorn.Server
    _http_thread: threading.Thread
    _stopping: threading.Event

    def http_alive(self) -> bool:
        return self._http_thread.is_alive()

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        from grpc_health.v1 import health_pb2

        from aerplane.coefficient.grpc import SERVICE_NAME

        self._stopping.set()  # ends WatchState streams at their next poll
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        grace = self.settings.shutdown_grace_seconds
        stopped = self._grpc.stop(grace)
        self._uvicorn.should_exit = True
        self._http_thread.join(timeout=grace + 5)
        stopped.wait(grace + 5)
        self.store.close()
        log.info("coefficient service stopped")


def start(settings: CoefficientSettings) -> RunningService:
    """Start both servers on their ports and return once both listen."""
    import uvicorn
    from grpc_health.v1 import health_pb2

    from aerplane.coefficient.grpc import SERVICE_NAME, CoefficientServicer, build_grpc_server
    from aerplane.coefficient.http import build_app
    from aerplane.coefficient.metrics import CoefficientMetrics
    from aerplane.coefficient.store import RunStore
    from aerplane.common.ops import new_registry

    store = RunStore(settings.redis_url)
    registry = new_registry()
    metrics = CoefficientMetrics(registry)
    auth = settings.authenticator()
    stopping = threading.Event()

    servicer = CoefficientServicer(
        store,
        auth,
        metrics,
        max_prompts=settings.max_prompts,
        watch_poll_seconds=settings.watch_poll_seconds,
        stopping=stopping,
        max_watchers=settings.grpc_workers // 2,
    )
    grpc_server, grpc_port, health = build_grpc_server(
        servicer,
        settings.host,
        settings.grpc_port,
        workers=settings.grpc_workers,
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    app = build_app(settings, store=store, registry=registry, metrics=metrics, auth=auth, stopping=stopping)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.http_port,
        log_config=None,  # keep aerplane's logging set-up
        access_log=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
        lifespan="on",
    )
    http = uvicorn.Server(config)
    http_thread = threading.Thread(target=http.run, name="http", daemon=True)
    grpc_server.start()
    http_thread.start()
    while not http.started:
        if not http_thread.is_alive():
            grpc_server.stop(0)
            store.close()
            raise OSError(f"HTTP server failed to start on {settings.host}:{settings.http_port}")
        http_thread.join(0.05)
    http_port = http.servers[0].sockets[0].getsockname()[1] if settings.http_port == 0 else settings.http_port
    for name in ("", SERVICE_NAME):
        health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "coefficient service: gRPC on %s:%d, REST on http://%s:%d (docs at /docs), redis %s, auth %s",
        settings.host,
        grpc_port,
        settings.host,
        http_port,
        _redact(settings.redis_url),
        auth.describe(),
    )
    return RunningService(settings, store, grpc_port, http_port, grpc_server, health, http, http_thread, stopping)


def serve(settings: CoefficientSettings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = start(settings)
    try:
        while not stop.wait(0.5):
            if not service.http_alive():
                log.error("HTTP server exited unexpectedly")
                service.stop()
                return 1
    finally:
        service.stop()
    return 0


def _redact(url: str) -> str:
    """A Redis URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
