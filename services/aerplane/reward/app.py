"""The reward service's process: `build_app` wires the verification worker pool (pool.py), the stream loop
(worker.py, unless `consume` is off) and the HTTP routes (http.py) into one app, and `serve` runs it under uvicorn
until SIGTERM/SIGINT; `aerplane reward serve` (launcher/services.py) runs `serve`.

    aerplane reward serve --run-id r1 --redis-url redis://127.0.0.1:6379/0   # stream scoring + POST /v1/verify
    aerplane reward serve --no-consume                                       # POST /v1/verify only

The app owns the pool and the stream loop: both start in its lifespan and stop in it, the stream loop first, so the
batch in flight is finished and published before the workers go. With the stream loop, /healthz reports it hung
(503) when it holds a batch without progress for `hang_timeout_s`, and a watchdog (common.liveness) exits the
process with code 124 then, unless `exit_on_hang` is off; with `--no-consume` /healthz is "the HTTP server answers".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from aerplane.reward.settings import RewardSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from aerplane.reward.worker import StreamScorer

log = logging.getLogger(__name__)


def build_app(settings: RewardSettings) -> FastAPI:
    """The reward service app; the lifespan starts and stops the pool and the stream consumer."""
    from fastapi import FastAPI

    from aerplane.common.liveness import Watchdog
    from aerplane.common.ops import add_ops_routes, new_registry
    from aerplane.reward.http import build_router
    from aerplane.reward.metrics import RewardMetrics
    from aerplane.reward.pool import PoolConfig, WorkerPool
    from aerplane.reward.worker import StreamScorer

    registry = new_registry()
    metrics = RewardMetrics(registry)
    pool = WorkerPool(
        PoolConfig(
            workers=settings.workers,
            timeout_s=settings.timeout_s,
            max_response_bytes=settings.max_response_bytes,
            max_nesting=settings.max_nesting,
            extraction=settings.extraction,
            math_aliases=tuple(settings.math_tasks),
            memory_limit_mb=settings.worker_memory_mb,
        ),
        on_result=metrics.observe,
        on_restart=lambda reason: metrics.worker_restarts.labels(reason=reason).inc(),
    )
    metrics.watch_pool(pool)
    state: dict[str, StreamScorer | None] = {"scorer": None}

    def live() -> tuple[bool, dict[str, Any]]:
        scorer = state["scorer"]
        return scorer.progress.check() if scorer is not None else (True, {})

    watchdog = Watchdog(live, exit_on_hang=settings.exit_on_hang)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(pool.start)
        log.info("%d verification workers ready (timeout %.1fs)", settings.workers, settings.timeout_s)
        scorer = StreamScorer(settings, pool, metrics).start() if settings.consume else None
        state["scorer"] = scorer
        if scorer is not None:
            watchdog.start()
        try:
            yield
        finally:
            watchdog.stop()
            if scorer is not None:
                await asyncio.to_thread(scorer.stop, settings.shutdown_grace_s)
            await asyncio.to_thread(pool.close, settings.shutdown_grace_s)
            log.info("reward service stopped")

    def check() -> tuple[bool, dict[str, Any]]:
        ok = pool.alive > 0
        details: dict[str, Any] = {"workers": pool.alive, "busy": pool.busy, "queue": pool.queue_depth}
        scorer = state["scorer"]
        if scorer is not None:
            stream_ok, stream = scorer.ready()
            ok = ok and stream_ok
            details["stream"] = stream
        return ok, details

    async def ready() -> tuple[bool, dict[str, Any]]:
        return await asyncio.to_thread(check)  # pings Redis: off the event loop

    app = FastAPI(title="aerplane reward", version="1", lifespan=lifespan)
    app.state.pool = pool
    app.state.metrics = metrics
    app.include_router(build_router(pool))
    add_ops_routes(app, registry, ready, live if settings.consume else None)
    return app


def serve(settings: RewardSettings) -> int:
    """Run the service until SIGTERM/SIGINT: the HTTP API, the worker pool and the stream consumer (`build_app`)."""
    import uvicorn

    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 1,
    )
    return 0
