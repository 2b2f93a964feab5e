"""The coefficient service's REST routes under /v1 (the app around them is http.py): people read runs, their
history and audit log, and override coefficients.

Handlers are plain `def`s (FastAPI runs them on its worker threads) because the store is sync redis-py, shared
with the gRPC handlers (grpc.py). Errors are mapped in http.py; every status a route can answer is declared on it,
and the responses link each run to its other routes (OpenAPI links, which schemathesis' stateful phase follows).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from aerplane.coefficient.auth import Permission
from aerplane.coefficient.runs import RUN_ID_RE, InvalidValue, Override, OverrideConflict
from aerplane.coefficient.schemas import (
    AuditEntry,
    ErrorOut,
    HistoryRow,
    InvalidRequestOut,
    OverrideBody,
    RunDetailOut,
    RunStateOut,
    RunSummaryOut,
)
from aerplane.coefficient.store import RunStore

router = APIRouter(prefix="/v1", tags=["runs"])

RunId = Annotated[str, Path(pattern=RUN_ID_RE.pattern, description="Run id.")]


class RequirePermission:
    """Dependency: the authenticated actor allowed `permission` (raises Unauthenticated → 401 or PermissionDenied →
    403 when the permission is enforced). http.py reads `permission` to declare the route's security."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    def __call__(self, request: Request) -> str:
        return request.app.state.auth.authorize(request.headers.get("authorization"), self.permission)


def get_store(request: Request) -> RunStore:
    return request.app.state.store


Store = Annotated[RunStore, Depends(get_store)]
Reader = Annotated[str, Depends(RequirePermission(Permission.READ))]
Operator = Annotated[str, Depends(RequirePermission(Permission.OPERATE))]


def _error(description: str, model: type = ErrorOut) -> dict[str, Any]:
    return {"model": model, "description": description}


_UNAUTHENTICATED = {
    **_error("Missing or unknown token (only where this route's permission needs one)."),
    "headers": {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
}
_FORBIDDEN = _error("A read-only or learner token: mutations need an operator token.")
_NOT_FOUND = _error("No such run.")
_INVALID = _error("Invalid path, query or body; the message names the field.", InvalidRequestOut)
_UNAVAILABLE = _error("The run store (Redis) is unreachable.")
_READ_ERRORS: dict[int | str, dict[str, Any]] = {401: _UNAUTHENTICATED, 422: _INVALID, 503: _UNAVAILABLE}
_RUN_READ_ERRORS = {**_READ_ERRORS, 404: _NOT_FOUND}
_MUTATION_ERRORS = {**_RUN_READ_ERRORS, 403: _FORBIDDEN}


def _links(run_id: str, *operation_ids: str) -> dict[str, Any]:
    """OpenAPI links from a response carrying a run id (`run_id`: a runtime expression) to these operations."""
    return {op: {"operationId": op, "parameters": {"run_id": run_id}} for op in operation_ids}


_RUN_ROUTES = ("getRun", "getHistory", "getAudit", "overrideCoefficients", "releaseOverrides")


def _ok(run_id: str | None, description: str) -> dict[int | str, dict[str, Any]]:
    ok: dict[str, Any] = {"description": description}
    if run_id is not None:
        ok["links"] = _links(run_id, *_RUN_ROUTES)
    return {200: ok}


@router.get(
    "/runs",
    operation_id="listRuns",
    response_model=list[RunSummaryOut],
    responses={**_ok("$response.body#/0/run_id", "Every run, by run id."), 401: _UNAUTHENTICATED, 503: _UNAVAILABLE},
)
def list_runs(store: Store, actor: Reader) -> list[dict]:
    """Every run the service knows, by run id, with the mean λ and accuracy of its latest batch."""
    runs = store.list_runs()
    batches = store.last_batches([run.run_id for run in runs])
    empty = {"mean_prompt_weight": None, "mean_accuracy": None}
    return [{**run.view(), **{k: batches.get(run.run_id, empty).get(k) for k in empty}} for run in runs]


@router.get(
    "/runs/{run_id}",
    operation_id="getRun",
    response_model=RunDetailOut,
    responses={**_ok("$response.body#/run_id", "The run."), **_RUN_READ_ERRORS},
)
def get_run(run_id: RunId, store: Store, actor: Reader) -> dict:
    """A run's state, parameters and active overrides."""
    run = store.get_run(run_id)
    return {**run.view(), "overrides": run.overrides(), "created_at": run.created_at}


@router.get(
    "/runs/{run_id}/history",
    operation_id="getHistory",
    response_model=list[HistoryRow],
    responses={**_ok(None, "One row per step, oldest first."), **_RUN_READ_ERRORS},
)
def get_history(
    run_id: RunId,
    store: Store,
    actor: Reader,
    since: Annotated[int, Query(ge=0, description="First step to return.")] = 0,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most rows to return.")] = 1000,
) -> list[dict]:
    """Per step: α, mean entropy, target entropy, mean prompt weight and mean accuracy."""
    return store.history(run_id, since=since, limit=limit)


@router.patch(
    "/runs/{run_id}/coefficients",
    operation_id="overrideCoefficients",
    response_model=RunStateOut,
    responses={
        **_ok("$response.body#/run_id", "The run after the change."),
        **_MUTATION_ERRORS,
        409: _error(
            "The change does not fit the run: a parameter its strategy does not have, α outside its "
            "[alpha_min, alpha_max], alpha_min above alpha_max, a target for a strategy without one."
        ),
    },
)
def override_coefficients(run_id: RunId, body: OverrideBody, store: Store, actor: Operator, request: Request) -> dict:
    """Override: pin α, set the target entropy, change parameters or the strategy, freeze; audited."""
    try:
        run, _ = store.override(run_id, body.to_override(), actor=actor, transport="rest")
    except InvalidValue as exc:  # the body passed its schema: what the store refuses depends on the run
        raise OverrideConflict(str(exc)) from None
    request.app.state.metrics.overrides.labels("rest").inc()
    return run.view()


@router.delete(
    "/runs/{run_id}/overrides",
    operation_id="releaseOverrides",
    response_model=RunStateOut,
    responses={**_ok("$response.body#/run_id", "The run after the release."), **_MUTATION_ERRORS},
)
def release_overrides(
    run_id: RunId,
    store: Store,
    actor: Operator,
    request: Request,
    reason: Annotated[str, Query(max_length=1000, description="Why; recorded in the audit log.")] = "",
) -> dict:
    """Release the α pin, the target override and the freeze; audited."""
    run, _ = store.override(run_id, Override(release=True, reason=reason), actor=actor, transport="rest")
    request.app.state.metrics.overrides.labels("rest").inc()
    return run.view()


@router.get(
    "/runs/{run_id}/audit",
    operation_id="getAudit",
    response_model=list[AuditEntry],
    responses={**_ok(None, "Audit entries, oldest first."), **_RUN_READ_ERRORS},
)
def get_audit(
    run_id: RunId,
    store: Store,
    actor: Reader,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Newest entries to return.")] = 1000,
) -> list[dict]:
    """Every start and override of the run, oldest first: when, who, old → new, why."""
    return store.audit(run_id, limit=limit)
