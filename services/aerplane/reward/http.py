"""The reward service's HTTP routes: `POST /v1/verify` (`build_router`); the app around them, with /healthz,
/readyz and /metrics, is built in app.py.

    POST /v1/verify {"task": "math", "response": "... \\boxed{1/2}", "ground_truth": "0.5"}
      → {"reward": 1.0, "reason": "match", "answer": "1/2", "method": "boxed"}
    POST /v1/verify {"items": [{...}, {...}]}  → {"results": [{...}, {...}]}   (scored concurrently)

`answer` is what was read from the response and `method` how it was found (`boxed`, `latex` or `expr` by
math-verify; `last_number`, `answer_tag`, `string`; null when nothing was read), so a user can see why a response
scored what it did. Unknown task or malformed body → 422 with a message. Item text is scored as sent: a response
over the size or nesting cap scores 0 with `too_long`, invalid UTF-8 bytes and lone surrogates are replaced with
U+FFFD first. Items are scored in the verification worker pool (pool.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aerplane.reward import scorers
from aerplane.reward.pool import WorkerPool

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
