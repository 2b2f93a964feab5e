"""The ops surface every long-running service exposes: `GET /healthz`, `GET /readyz`, `GET /metrics`.

Two ways to serve it, same behaviour:
- `add_ops_routes(app, registry, ready)` for services that already run a FastAPI app (coefficient, reward);
- `OpsServer(...)`, a small threaded HTTP server for processes without one (learner, generation worker).

`ready` returns `(ok, details)`; `/readyz` answers 200 with the details when ok, else 503. `live` (optional, the
same shape: a `common.liveness.Progress.check`) makes `/healthz` mean "the work loop moves": 200 `{"status": "ok",
...}`, or 503 `{"status": "hung", "loop": ..., "stalled_s": ..., "bound_s": ...}` while the loop holds work without
progress past its bound; without it `/healthz` answers 200 `{"status": "ok"}` whenever the HTTP server does. `live`
must be cheap (no Redis call): a liveness probe has to answer even while Redis is slow. Each process owns one
`CollectorRegistry` (never the global default), so tests can run several services in one interpreter.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aerplane.common.liveness import LiveFn

ReadyResult = tuple[bool, dict[str, Any]]
ReadyFn = Callable[[], ReadyResult | Awaitable[ReadyResult]]

log = logging.getLogger(__name__)


def new_registry() -> CollectorRegistry:
    """A fresh per-process registry (never the global default)."""
    return CollectorRegistry(auto_describe=True)


def health(live: LiveFn | None) -> tuple[int, dict[str, Any]]:
    """/healthz's status code and body: 200 "ok", or 503 "hung" naming the loop (common.liveness)."""
    if live is None:
        return 200, {"status": "ok"}
    ok, detail = live()
    return (200, {"status": "ok", **detail}) if ok else (503, {"status": "hung", **detail})


def add_ops_routes(app: Any, registry: CollectorRegistry, ready: ReadyFn, live: LiveFn | None = None) -> None:
    """Mount /healthz, /readyz and /metrics on a FastAPI app."""
    from fastapi import Response
    from fastapi.responses import JSONResponse

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        code, body = health(live)
        return JSONResponse(body, status_code=code)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        result = ready()
        if inspect.isawaitable(result):
            result = await result
        ok, details = result
        return JSONResponse({"ready": ok, **details}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class OpsServer:
    """/healthz, /readyz and /metrics on a background thread, for processes without an HTTP app of their own."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, ready: ReadyFn, live: LiveFn | None = None
    ) -> None:
        self.registry = registry
        self._ready = ready
        self._live = live
        ops = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    code, body = health(ops._live)
                    self._send(code, "application/json", json.dumps(body, default=str).encode())
                elif path == "/readyz":
                    ok, details = ops.check_ready()
                    body = json.dumps({"ready": ok, **details}, default=str).encode()
                    self._send(200 if ok else 503, "application/json", body)
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(ops.registry))
                else:
                    self._send(404, "application/json", b'{"detail": "not found"}')

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def check_ready(self) -> ReadyResult:
        try:
            result = self._ready()
            if inspect.isawaitable(result):
                result = asyncio.run(result)  # type: ignore[arg-type]
            return result  # type: ignore[return-value]
        except Exception as exc:  # a failing check means "not ready", never a crashed server
            return False, {"error": f"{type(exc).__name__}: {exc}"}

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OpsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
