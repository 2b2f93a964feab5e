"""The coefficient service's REST app factory: `build_app(settings, *, store=None, ...) -> FastAPI`.

The app serves the /v1 routes (http_routes.py), the web console at / (console.py), the API reference at /docs
(Swagger UI from an installed package, no CDN), and /healthz, /readyz, /metrics. When no store is passed it opens its
own from `settings.redis_url` in the lifespan and closes it on shutdown; the process (app.py) passes the store it
shares with the gRPC server (grpc.py).

Error mapping (nothing a client sends can produce a 500): validation → 422 with the messages (never echoing the
input, which may be NaN and is not JSON), unknown run → 404, missing/unknown token → 401, a token without the
permission → 403, a change the run refuses → 409, Redis down → 503. Bodies over `max_body_bytes` get 422 before
they are parsed. The OpenAPI document declares each route's statuses (http_routes.py) and, from the configured
tokens, which routes need a bearer token — exactly the ones that check it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

import aerplane
from aerplane.coefficient.auth import Authenticator
from aerplane.coefficient.console import add_console
from aerplane.coefficient.errors import ERRORS, status_of
from aerplane.coefficient.http_routes import RequirePermission, router
from aerplane.coefficient.metrics import CoefficientMetrics, RunCollector
from aerplane.coefficient.settings import CoefficientSettings
from aerplane.coefficient.store import RunStore
from aerplane.common.ops import add_ops_routes, new_registry

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def build_app(
    settings: CoefficientSettings,
    *,
    store: RunStore | None = None,
    registry: CollectorRegistry | None = None,
    metrics: CoefficientMetrics | None = None,
    auth: Authenticator | None = None,
    stopping: threading.Event | None = None,
) -> FastAPI:
    """The coefficient service's REST app and the web console (console.py). Pass `store`/`registry`/`metrics` to
    share them with the gRPC server, `stopping` to end the console's streams when the service stops."""
    owns_store = store is None
    if registry is None:
        registry = new_registry()
    if metrics is None:
        metrics = CoefficientMetrics(registry)
    auth = auth or settings.authenticator()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owns_store:
            app.state.store = RunStore(settings.redis_url)
        try:
            yield
        finally:
            if owns_store:
                app.state.store.close()

    app = FastAPI(
        title="aerplane coefficient service",
        version=aerplane.__version__,
        description="Adaptive entropy-regularisation state per run: read it, watch its history, override it.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own /docs loads from a CDN: `_add_docs` serves it from a package
        redoc_url=None,
    )
    app.state.store = store
    app.state.auth = auth
    app.state.metrics = metrics
    app.include_router(router)
    _declare_security(app, auth)
    _add_docs(app)
    add_console(
        app,
        stream_seconds=settings.stream_seconds,
        poll_seconds=settings.watch_poll_seconds,
        stopping=stopping or threading.Event(),
    )
    registry.register(RunCollector(lambda: app.state.store))

    def ready() -> tuple[bool, dict[str, Any]]:
        try:
            app.state.store.ping()
            return True, {"redis": "ok"}
        except Exception as exc:
            return False, {"redis": f"unreachable: {type(exc).__name__}"}

    add_ops_routes(app, registry, ready)
    _add_error_handlers(app, metrics)
    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(_RequestMetrics, metrics=metrics)
    return app


DOCS_ASSETS = "/docs/assets"


def _add_docs(app: FastAPI) -> None:
    """The API reference: Swagger UI at /docs, its script, style and icon served from the installed fastapi-offline
    package under /docs/assets, so the page loads nothing from another host (FastAPI's own page comes from a CDN,
    and GPU clusters seldom reach the internet). No ReDoc: its bundle fetches its logo from its vendor's CDN."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        assets = f"{root}{DOCS_ASSETS}"
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API reference",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
        )


def _declare_security(app: FastAPI, auth: Authenticator) -> None:
    """OpenAPI: a bearer scheme, and `security` on exactly the operations whose permission is enforced."""
    enforced: dict[tuple[str, str], bool] = {}
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        needs = [d.call.permission for d in route.dependant.dependencies if isinstance(d.call, RequirePermission)]
        for method in route.methods:
            enforced[(route.path_format, method.lower())] = any(auth.enforced(p) for p in needs)

    generate = app.openapi  # FastAPI's own generator; it caches its document in app.openapi_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # also app.openapi_schema: the changes below stay in the cached document
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An aerplane API token."}
            }
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    if enforced.get((path, method)):
                        operation["security"] = [{"bearer": []}]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_error_handlers(app: FastAPI, metrics: CoefficientMetrics) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", "invalid"), "type": err.get("type", "invalid")}
            for err in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. bytes that are not UTF-8): bad input
            return JSONResponse({"detail": f"invalid request body: {exc.detail}"}, status_code=422)
        return await http_exception_handler(request, exc)

    async def table_error(request: Request, exc: Exception) -> JSONResponse:
        known = status_of(exc)
        assert known is not None  # registered for the table's rows only
        row, message = known
        headers = None
        if row.http_status in (401, 403):
            metrics.auth_failures.labels("rest").inc()
            headers = {"WWW-Authenticate": "Bearer"} if row.http_status == 401 else None
        if not row.public:
            log.warning("%s", message)
            message = "run store unavailable"
        return JSONResponse({"detail": message}, status_code=row.http_status, headers=headers)

    for row in ERRORS:  # the statuses of `errors.ERRORS`, shared with the gRPC servicer
        app.add_exception_handler(row.error, table_error)


class _BodyLimit:
    """Refuse request bodies over `max_bytes` with 422, by Content-Length or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False  # the server rejects a malformed length itself
                if too_big:
                    await self._refuse(scope, receive, send)
                    return
        # No (or a small) declared length: read the body up to the limit, then replay it.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"},
            status_code=422,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class _RequestMetrics:
    """Count and time every request by its route template (`/v1/runs/{run_id}`), not its raw path."""

    def __init__(self, app: ASGIApp, metrics: CoefficientMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.http_requests.labels(method, template, str(status)).inc()
            self.metrics.http_latency.labels(method, template).observe(time.perf_counter() - start)
