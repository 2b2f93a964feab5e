"""The coefficient service's gRPC side: `aerplane.v1.CoefficientService` over the run store, plus the health service
and reflection. The process that runs it next to the REST app (http.py) is app.py.

Thin on purpose: each method converts the request, calls `RunStore`, converts the answer back, and maps the
store's errors onto status codes (unknown run → NOT_FOUND, bad values → INVALID_ARGUMENT, stale step →
FAILED_PRECONDITION, existing run → ALREADY_EXISTS, missing/unknown token → UNAUTHENTICATED, a token without the
permission → PERMISSION_DENIED, Redis down → UNAVAILABLE). Every method declares the permission it needs (the
`authorization: Bearer <token>` metadata is checked before the method runs); which tokens grant which permission
is explained in `aerplane.coefficient.auth`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aerplane.coefficient.auth import ANONYMOUS, Authenticator, Permission, PermissionDenied, Unauthenticated
from aerplane.coefficient.errors import status_of
from aerplane.coefficient.metrics import CoefficientMetrics
from aerplane.coefficient.runs import InvalidValue, Override, Run
from aerplane.coefficient.store import RunStore
from aerplane.core.step_figures import StepFigures
from aerplane.rpc.v1 import coefficient_pb2 as pb
from aerplane.rpc.v1 import coefficient_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CoefficientService"].full_name


def run_state_message(view: dict[str, Any]) -> pb.RunState:
    """A `Run.view()` dict as a RunState message (None → unset optional field)."""
    return pb.RunState(**{k: v for k, v in view.items() if v is not None})


def prompt_accuracies(request: pb.GetCoefficientsRequest) -> list[float]:
    """The per-prompt accuracies of either request form (`prompts`, or the columns `accuracies` & co.)."""
    n = len(request.accuracies)
    if not n:
        if request.prompt_ids or request.sample_counts:
            raise InvalidValue("accuracies: prompt_ids/sample_counts given without accuracies")
        return [p.accuracy for p in request.prompts]
    if request.prompts:
        raise InvalidValue("prompts: give either prompts or the columns (accuracies, prompt_ids, sample_counts)")
    for name in ("prompt_ids", "sample_counts"):
        got = len(getattr(request, name))
        if got and got != n:
            raise InvalidValue(f"{name}: {got} values for {n} accuracies")
    return list(request.accuracies)


def _rpc(permission: Permission) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One unary RPC that needs `permission`: check the caller's token, count, time, map errors to status codes.
    The method gets the authenticated actor as its third argument."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        name = method.__name__

        @functools.wraps(method)
        def wrapper(self: CoefficientServicer, request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return method(self, request, context, self.authorize(context, permission))
            except Exception as exc:
                code, message = _status_for(exc)
                if code == grpc.StatusCode.INTERNAL:
                    log.exception("%s failed", name)
                elif code in _AUTH_CODES:
                    self.metrics.auth_failures.labels("grpc").inc()
                context.abort(code, message)
            finally:
                self.metrics.grpc_requests.labels(name, code.name).inc()
                self.metrics.grpc_latency.labels(name).observe(time.perf_counter() - start)

        return wrapper

    return decorate


_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    known = status_of(exc)
    if known is None:
        return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
    row, message = known
    return row.grpc_code, message


class CoefficientServicer(pb_grpc.CoefficientServiceServicer):
    def __init__(
        self,
        store: RunStore,
        auth: Authenticator,
        metrics: CoefficientMetrics,
        *,
        max_prompts: int,
        watch_poll_seconds: float,
        stopping: threading.Event,
        max_watchers: int = 8,
    ) -> None:
        self.store = store
        self.auth = auth
        self.metrics = metrics
        self.max_prompts = max_prompts
        self.watch_poll_seconds = watch_poll_seconds
        self.stopping = stopping
        # Each open WatchState holds a handler thread; keep half of them for the learner's unary calls.
        self._watch_slots = threading.BoundedSemaphore(max(1, max_watchers))

    def authorize(self, context: grpc.ServicerContext, permission: Permission) -> str:
        """The actor of the call's `authorization` metadata, allowed `permission` (raises otherwise)."""
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value
        return self.auth.authorize(authorization, permission)

    @_rpc(Permission.LEARN)
    def StartRun(self, request: pb.StartRunRequest, context: grpc.ServicerContext, actor: str) -> pb.RunState:
        run, created = self.store.start_run(
            request.run_id,
            request.strategy,
            dict(request.params),
            dict(request.options),
            resume=request.resume,
            actor=actor if actor != ANONYMOUS else "learner",
        )
        log.info("%s run %s (%s)", "started" if created else "resumed", run.run_id, run.strategy)
        if not created and request.strategy and request.strategy != run.strategy:
            log.warning(
                "run %s resumed with its stored strategy %r, not the requested %r (change it with Override)",
                run.run_id,
                run.strategy,
                request.strategy,
            )
        return run_state_message(run.view())

    @_rpc(Permission.LEARN)
    def GetCoefficients(
        self, request: pb.GetCoefficientsRequest, context: grpc.ServicerContext, actor: str
    ) -> pb.Coefficients:
        accuracies = prompt_accuracies(request)
        if len(accuracies) > self.max_prompts:
            raise InvalidValue(f"prompts: at most {self.max_prompts} per request, got {len(accuracies)}")
        digest = hashlib.blake2b(request.SerializeToString(deterministic=True), digest_size=12).hexdigest()
        answer = self.store.get_coefficients(request.run_id, request.step, accuracies, digest=digest)
        return pb.Coefficients(
            run_id=answer.run_id,
            step=answer.step,
            alpha=answer.alpha,
            prompt_weights=answer.prompt_weights,
            target_entropy=answer.target_entropy,
        )

    @_rpc(Permission.LEARN)
    def ReportEntropy(self, request: pb.ReportEntropyRequest, context: grpc.ServicerContext, actor: str) -> pb.RunState:
        figures = StepFigures(
            accuracy_by_difficulty=dict(request.accuracy_by_difficulty) or None,
            response_length=request.response_length if request.HasField("response_length") else None,
            total_steps=request.total_steps if request.HasField("total_steps") else None,
        )
        run, applied = self.store.report_entropy(
            request.run_id, request.step, request.mean_entropy, request.num_tokens, figures
        )
        if not applied:
            log.info("run %s: step %d was applied before; state unchanged", run.run_id, request.step)
        return run_state_message(run.view())

    @_rpc(Permission.READ)
    def GetState(self, request: pb.GetStateRequest, context: grpc.ServicerContext, actor: str) -> pb.RunState:
        return run_state_message(self.store.get_run(request.run_id).view())

    @_rpc(Permission.READ)
    def ListRuns(self, request: pb.ListRunsRequest, context: grpc.ServicerContext, actor: str) -> pb.ListRunsResponse:
        return pb.ListRunsResponse(runs=[run_state_message(r.view()) for r in self.store.list_runs()])

    @_rpc(Permission.OPERATE)
    def Override(self, request: pb.OverrideRequest, context: grpc.ServicerContext, actor: str) -> pb.RunState:
        change = Override(
            alpha=request.alpha if request.HasField("alpha") else None,
            target_entropy=request.target_entropy if request.HasField("target_entropy") else None,
            params=dict(request.params),
            options=dict(request.options),
            strategy=request.strategy if request.HasField("strategy") else None,
            frozen=request.frozen if request.HasField("frozen") else None,
            release=request.release,
            reason=request.reason,
        )
        run, entry = self.store.override(request.run_id, change, actor=actor, transport="grpc")
        self.metrics.overrides.labels("grpc").inc()
        log.info("run %s: override by %s: %s", run.run_id, actor, sorted(entry.get("changes", {})))
        return run_state_message(run.view())

    def WatchState(self, request: pb.GetStateRequest, context: grpc.ServicerContext) -> Iterator[pb.RunState]:
        try:
            self.authorize(context, Permission.READ)
        except (Unauthenticated, PermissionDenied) as exc:
            code, message = _status_for(exc)
            self.metrics.auth_failures.labels("grpc").inc()
            self.metrics.grpc_requests.labels("WatchState", code.name).inc()
            context.abort(code, message)
        if not self._watch_slots.acquire(blocking=False):
            self.metrics.grpc_requests.labels("WatchState", "RESOURCE_EXHAUSTED").inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many open WatchState streams; try again later")
        self.metrics.grpc_requests.labels("WatchState", "OK").inc()
        try:
            yield from self._watch(request, context)
        finally:
            self._watch_slots.release()

    def _watch(self, request: pb.GetStateRequest, context: grpc.ServicerContext) -> Iterator[pb.RunState]:
        ended = threading.Event()
        context.add_callback(ended.set)

        def keep_going() -> bool:
            return not ended.is_set() and not self.stopping.is_set() and context.is_active()

        try:
            runs: Iterator[Run] = self.store.watch(
                request.run_id, poll_seconds=self.watch_poll_seconds, keep_going=keep_going
            )
            for run in runs:
                yield run_state_message(run.view())
        except Exception as exc:
            code, message = _status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("WatchState failed")
            context.abort(code, message)


def build_grpc_server(
    servicer: CoefficientServicer, host: str, port: int, *, workers: int, max_message_bytes: int
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """An unstarted gRPC server with the coefficient service, health and reflection: (server, port, health)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"), options=options)
    pb_grpc.add_CoefficientServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{_grpc_host(host)}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, bound, health_servicer


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
