"""REST routes under /v1: people read runs, their history and audit log, and override coefficients.

Handlers are plain `def`s (FastAPI runs them on its worker threads) because the store is sync redis-py, shared
with the gRPC handlers. Errors are mapped in `api.py`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from aerplane.coefficient.runs import RUN_ID_RE, Override
from aerplane.coefficient.schemas import AuditEntry, HistoryRow, OverrideBody, RunDetailOut, RunStateOut
from aerplane.coefficient.store import RunStore

router = APIRouter(prefix="/v1", tags=["runs"])

RunId = Annotated[str, Path(pattern=RUN_ID_RE.pattern, description="Run id.")]


def get_store(request: Request) -> RunStore:
    return request.app.state.store


def get_actor(request: Request) -> str:
    """The authenticated actor (raises Unauthenticated → 401 when a token is configured and missing/wrong)."""
    return request.app.state.auth.actor(request.headers.get("authorization"))


Store = Annotated[RunStore, Depends(get_store)]
Actor = Annotated[str, Depends(get_actor)]


@router.get("/runs", response_model=list[RunStateOut])
def list_runs(store: Store) -> list[dict]:
    """Every run the service knows, by run id."""
    return [run.view() for run in store.list_runs()]


@router.get("/runs/{run_id}", response_model=RunDetailOut)
def get_run(run_id: RunId, store: Store) -> dict:
    """A run's state, parameters and active overrides."""
    run = store.get_run(run_id)
    return {**run.view(), "overrides": run.overrides(), "created_at": run.created_at}


@router.get("/runs/{run_id}/history", response_model=list[HistoryRow])
def get_history(
    run_id: RunId,
    store: Store,
    since: Annotated[int, Query(ge=0, description="First step to return.")] = 0,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most rows to return.")] = 1000,
) -> list[dict]:
    """Per step: α, mean entropy, target entropy, mean prompt weight and mean accuracy."""
    return store.history(run_id, since=since, limit=limit)


@router.patch("/runs/{run_id}/coefficients", response_model=RunStateOut)
def override_coefficients(run_id: RunId, body: OverrideBody, store: Store, actor: Actor, request: Request) -> dict:
    """Override: pin α, set the target entropy, change parameters or the strategy, freeze; audited."""
    run, _ = store.override(run_id, body.to_override(), actor=actor, transport="rest")
    request.app.state.metrics.overrides.labels("rest").inc()
    return run.view()


@router.delete("/runs/{run_id}/overrides", response_model=RunStateOut)
def release_overrides(
    run_id: RunId,
    store: Store,
    actor: Actor,
    request: Request,
    reason: Annotated[str, Query(max_length=1000, description="Why; recorded in the audit log.")] = "",
) -> dict:
    """Release the α pin, the target override and the freeze; audited."""
    run, _ = store.override(run_id, Override(release=True, reason=reason), actor=actor, transport="rest")
    request.app.state.metrics.overrides.labels("rest").inc()
    return run.view()


@router.get("/runs/{run_id}/audit", response_model=list[AuditEntry])
def get_audit(
    run_id: RunId,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Newest entries to return.")] = 1000,
) -> list[dict]:
    """Every start and override of the run, oldest first: when, who, old → new, why."""
    return store.audit(run_id, limit=limit)
