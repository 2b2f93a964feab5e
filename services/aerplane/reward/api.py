"""HTTP side of the reward service: `POST /v1/verify` plus /healthz, /readyz, /metrics.

    POST /v1/verify {"task": "math", "response": "... \\boxed{1/2}", "ground_truth": "0.5"}
      → {"reward": 1.0, "reason": "match", "answer": "1/2", "method": "boxed"}
    POST /v1/verify {"items": [{...}, {...}]}  → {"results": [{...}, {...}]}   (scored concurrently)

`answer` is what was read from the response and `method` how it was found (`boxed`, `latex` or `expr` by
math-verify; `last_number`, `answer_tag`, `string`; null when nothing was read), so a user can see why a response
scored what it did. Unknown task or malformed body → 422 with a message. Item text is scored as sent: a response
over the size or nesting cap scores 0 with `too_long`, invalid UTF-8 bytes and lone surrogates are replaced with
U+FFFD first. `build_app` owns the worker pool and (unless `consume` is off) the stream consumer: both start in the
lifespan and stop in it, the consumer first, so the batch in flight is finished and published before the workers
go.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aerplane.common.ops import add_ops_routes, new_registry
from aerplane.reward import scorers
from aerplane.reward.metrics import RewardMetrics
from aerplane.reward.pool import PoolConfig, WorkerPool
from aerplane.reward.service import StreamScorer
from aerplane.reward.settings import RewardSettings

log = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 1024
MAX_BODY_BYTES = 64 * 1024 * 1024  # bodies may carry over-long responses on purpose; they score `too_long`
_INLINE_PARSE_BYTES = 256 * 1024


class VerifyItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200)
    response: str
    ground_truth: str

    @field_validator("task")
    @classmethod
    def _known(cls, value: str) -> str:
        if not scorers.is_known(value):
            raise ValueError(f"unknown task {value!r}; known: math and {len(scorers.known_tasks()) - 1} others")
        return value


class VerifyBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[VerifyItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


def _result(score: scorers.Score) -> dict[str, Any]:
    return {"reward": score.reward, "reason": score.reason, "answer": score.answer, "method": score.method}


def _parse(body: bytes) -> Any:
    return json.loads(body.decode("utf-8", "replace"))


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e["loc"]), "msg": e["msg"].removeprefix("Value error, "), "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def build_router(pool: WorkerPool) -> APIRouter:
    router = APIRouter(prefix="/v1")

    async def score(item: VerifyItem) -> dict[str, Any]:
        try:
            future = pool.submit(item.task, item.response, item.ground_truth, source="http")
        except RuntimeError as exc:  # shutting down
            raise HTTPException(503, str(exc)) from None
        return _result(await asyncio.wrap_future(future))

    @router.post("/verify")
    async def verify(request: Request) -> dict[str, Any]:
        """Score one item, or a batch under `items`."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise HTTPException(422, f"body: {declared} bytes exceed {MAX_BODY_BYTES}")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(422, f"body: {len(body)} bytes exceed {MAX_BODY_BYTES}")
        try:
            # Big bodies (over-long responses are legitimate input here) are parsed off the event loop.
            data = _parse(body) if len(body) < _INLINE_PARSE_BYTES else await asyncio.to_thread(_parse, body)
        except ValueError as exc:
            raise HTTPException(422, f"body: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "body: expected an object with task/response/ground_truth, or items")
        try:
            if "items" in data:
                batch = VerifyBatch.model_validate(data)
                return {"results": await asyncio.gather(*(score(i) for i in batch.items))}
            return await score(VerifyItem.model_validate(data))
        except ValidationError as exc:
            raise HTTPException(422, _errors(exc)) from None

    return router


def build_app(settings: RewardSettings) -> FastAPI:
    """The reward service app; the lifespan starts and stops the pool and the stream consumer."""
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(pool.start)
        log.info("%d verification workers ready (timeout %.1fs)", settings.workers, settings.timeout_s)
        scorer = StreamScorer(settings, pool, metrics).start() if settings.consume else None
        state["scorer"] = scorer
        try:
            yield
        finally:
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
    add_ops_routes(app, registry, ready)
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
