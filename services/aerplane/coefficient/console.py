"""The web console, served by the coefficient service on its REST port (docs/console-design.md): the runs page at `/`,
a run's page at `/runs/{run_id}` (charts that update live), and the live stream they read,
`GET /v1/runs/{run_id}/stream` (Server-Sent Events).

The pages are one static HTML file and its script and style (`console/`, package data), the charts plotly.js from
the installed `plotly` package: no CDN, no build step. The pages hold no data; every call they make carries the
token from the page's token field (`Authorization: Bearer`, never a cookie) and goes through the same REST routes
and permissions as curl.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Generator
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import iterate_in_threadpool

from aerplane.coefficient.auth import ANONYMOUS, Permission, PermissionDenied, Unauthenticated
from aerplane.coefficient.http_routes import Reader, RunId, Store
from aerplane.coefficient.store import RunStore

CONSOLE_DIR = files("aerplane.coefficient") / "console"
KEEP_ALIVE = ": keep-alive\n\n"
router = APIRouter()


def add_console(app: FastAPI, *, stream_seconds: float, poll_seconds: float, stopping: threading.Event) -> None:
    """The console's pages, assets and live stream on `app`; a stream ends after `stream_seconds` or at `stopping`."""
    app.state.console = {"stream_seconds": stream_seconds, "poll_seconds": poll_seconds, "stopping": stopping}
    app.mount("/console/assets", StaticFiles(directory=str(CONSOLE_DIR)), name="console-assets")
    app.include_router(router)


@router.get("/", include_in_schema=False)
@router.get("/runs/{run_id}", include_in_schema=False)
def page() -> FileResponse:
    """The console (the runs list or a run's page: its script reads the path)."""
    return FileResponse(str(CONSOLE_DIR / "index.html"), media_type="text/html")


@router.get("/console/plotly.min.js", include_in_schema=False)
def plotly_js() -> FileResponse:
    """plotly.js as the installed `plotly` package ships it (cached by the browser for a day)."""
    path = files("plotly") / "package_data" / "plotly.min.js"
    return FileResponse(str(path), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


@router.get("/v1/runs/{run_id}/stream", include_in_schema=False)
def stream(
    run_id: RunId,
    store: Store,
    actor: Reader,
    request: Request,
    since: Annotated[int, Query(ge=0, description="First history step to send.")] = 0,
) -> StreamingResponse:
    """Server-Sent Events of the run: `state` (its view) and `history` (its rows from step `since`) now and at each
    change. Each event's id is the next step to ask for. Out of the OpenAPI document: a stream that runs for
    `stream_seconds` is not a response a contract fuzzer can check."""
    store.get_run(run_id)  # 404 before the stream starts
    options = request.app.state.console
    body = closing(run_events(store, run_id, since, **options))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.get("/console/whoami", include_in_schema=False)
def whoami(request: Request) -> dict[str, Any]:
    """What the request's token may do (the console greys out the override form for a read-only token): its actor
    and permissions. An unknown token is 401, like on every route."""
    auth = request.app.state.auth
    header = request.headers.get("authorization")
    actor, allowed, refused = ANONYMOUS, [], None
    for permission in Permission:
        try:
            actor = auth.authorize(header, permission)
            allowed.append(permission.value)
        except (Unauthenticated, PermissionDenied) as exc:
            refused = exc
    if not allowed and header and isinstance(refused, Unauthenticated):
        raise refused
    return {"actor": actor, "permissions": allowed}


def run_events(
    store: RunStore,
    run_id: str,
    since: int,
    *,
    stream_seconds: float,
    poll_seconds: float,
    stopping: threading.Event,
) -> Generator[str, None, None]:
    """The stream's text: at each new version of the run (every report and override), its state, then the history
    rows from `since` on; after each poll with no change, a keep-alive comment. The next event starts at the last
    row still open (`next_since`: it will be sent again, complete), else after the last: each event carries what is
    new, and the open rows again. The first event reads the whole history; the later ones read only the
    steps from `since` to the one after the last report (`RunStore.history_between`), so a report costs the stream
    the same on the run's 10th step as on its 10 000th."""
    deadline = time.monotonic() + stream_seconds

    def keep_going() -> bool:
        return time.monotonic() < deadline and not stopping.is_set()

    first = True
    for run in store.watch(run_id, poll_seconds=poll_seconds, keep_going=keep_going, idle_ticks=True):
        if run is None:  # each quiet poll: keeps proxies open, and a closed tab's cancel waits a poll at most
            yield KEEP_ALIVE
            continue
        if first or run.last_step is None:
            rows = store.history(run_id, since=since, limit=100_000)
        else:
            rows = store.history_between(run_id, since, run.last_step + 1)
        first = False
        events = sse("state", {**run.view(), "overrides": run.overrides()}, since)
        if rows:
            since = next_since(rows, run.last_step)
            events += sse("history", rows, since)
        yield events  # one write for both: one hop from the worker thread to the event loop per change


def next_since(rows: list[dict[str, Any]], last_step: int | None) -> int:
    """Where the next event starts: the first row still open (no entropy yet, and past the last applied step, so its
    report may still come: a learner may ask for a step's α before it reports the one before), else after the last
    row. A row at or before the last applied step without entropy never gets one (an older report is refused)."""
    open_steps = [r["step"] for r in rows if r["mean_entropy"] is None and (last_step is None or r["step"] > last_step)]
    return open_steps[0] if open_steps else rows[-1]["step"] + 1


async def closing(events: Generator[str, None, None]) -> AsyncIterator[str]:
    """`events`, each drawn in the thread pool, and closed (its Redis subscription with it) as soon as the response
    ends. A closed tab cancels the response at once, but the cancel waits for the worker thread's current draw, which
    returns within a poll since quiet polls yield a keep-alive; the generator is then closed here, not whenever the
    garbage collector gets to it (a test saw the subscription outlive the tab without this)."""
    try:
        async for chunk in iterate_in_threadpool(events):
            yield chunk
    finally:
        events.close()  # the thread that drew the last chunk is done: anyio waits for it before it cancels


def sse(event: str, data: Any, event_id: int) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n"
