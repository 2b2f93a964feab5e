"""`CoefficientClient`: the sync gRPC client the learner (and people's scripts) use.

    c = CoefficientClient("127.0.0.1:50051", timeout=5.0, token=None)
    st = c.start_run("run-1", "aer", {"rho": 0.5, "tau": 0.4}, {"weighting": "threshold"}, resume=False)
    alpha, weights, target = c.get_coefficients("run-1", step, [("q1", 0.25, 8), ("q2", 1.0, 8)])
    st = c.report_entropy("run-1", step, mean_entropy=1.83, num_tokens=40960)
    st = c.get_state("run-1")                         # RunState fields as a dict (unset optionals are None)
    st = c.override("run-1", alpha=0.002, reason="…")  # needs token= when the server has one
    for st in c.watch("run-1"): ...                    # the state now, then every change
    c.close()

Every call carries `token` (when given) as `authorization: Bearer <token>` metadata: the learner token for the
learner's calls, an operator token for Override (see `aerplane.coefficient.auth`). Calls wait for the server to
come up (up to `timeout`), and retry UNAVAILABLE a few times with backoff — safe because GetCoefficients and
ReportEntropy are idempotent by step. Server errors raise `CoefficientError`
subclasses: `RunNotFoundError`, `InvalidArgumentError` (also a ValueError), `StaleStepError`, `RunExistsError`,
`AuthError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grpc

from aerplane.common.closing import Closing
from aerplane.rpc.v1 import coefficient_pb2 as pb
from aerplane.rpc.v1 import coefficient_pb2_grpc as pb_grpc

_OPTIONAL = (
    "initial_entropy",
    "target_entropy",
    "last_entropy",
    "p_term",
    "i_term",
    "d_term",
    "total_steps",
    "reported_at",
)
_RETRY_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "aerplane.v1.CoefficientService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class CoefficientError(RuntimeError):
    """An error answer from the coefficient service; `code` is the grpc.StatusCode."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class RunNotFoundError(CoefficientError):
    pass


class InvalidArgumentError(CoefficientError, ValueError):
    pass


class StaleStepError(CoefficientError):
    pass


class RunExistsError(CoefficientError):
    pass


class AuthError(CoefficientError):
    """No valid token (UNAUTHENTICATED), or a token without the permission (PERMISSION_DENIED)."""


_ERRORS = {
    grpc.StatusCode.NOT_FOUND: RunNotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: StaleStepError,
    grpc.StatusCode.ALREADY_EXISTS: RunExistsError,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: AuthError,
}


def _error(exc: grpc.RpcError) -> CoefficientError:
    code = exc.code()  # type: ignore[attr-defined]
    return _ERRORS.get(code, CoefficientError)(code, exc.details() or "")  # type: ignore[attr-defined]


def state_dict(msg: pb.RunState) -> dict[str, Any]:
    """A RunState message as a plain dict with the proto's field names; unset optional fields are None."""
    return {
        "run_id": msg.run_id,
        "strategy": msg.strategy,
        "step": msg.step,
        "alpha": msg.alpha,
        **{k: (getattr(msg, k) if msg.HasField(k) else None) for k in _OPTIONAL},
        "params": dict(msg.params),
        "alpha_pinned": msg.alpha_pinned,
        "frozen": msg.frozen,
        "options": dict(msg.options),
        "has_step": msg.has_step,
        "observations": msg.observations,
        "version": msg.version,
        "target_overridden": msg.target_overridden,
        "updated_at": msg.updated_at,
        "finished": msg.finished,
    }


class CoefficientClient(Closing):
    """Sync client of aerplane.v1.CoefficientService. Thread-safe (one channel)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 5.0,
        token: str | None = None,
        wait_for_ready: bool = True,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.wait_for_ready = wait_for_ready
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.service_config", _RETRY_CONFIG),
                ("grpc.enable_retries", 1),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._stub = pb_grpc.CoefficientServiceStub(self._channel)

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
                wait_for_ready=self.wait_for_ready,
            )
        except grpc.RpcError as exc:
            raise _error(exc) from None

    # --- the learner's calls
    def start_run(
        self,
        run_id: str,
        strategy: str,
        params: Mapping[str, float] | None = None,
        options: Mapping[str, str] | None = None,
        resume: bool = False,
    ) -> dict[str, Any]:
        """Create the run (resume=False; an existing run is an error) or continue the stored one (resume=True)."""
        request = pb.StartRunRequest(
            run_id=run_id,
            strategy=strategy,
            params={k: float(v) for k, v in (params or {}).items()},
            options=dict(options or {}),
            resume=resume,
        )
        return state_dict(self._call(self._stub.StartRun, request))

    def get_coefficients(
        self, run_id: str, step: int, prompts: Iterable[tuple[str, float, int]]
    ) -> tuple[float, list[float], float | None]:
        """(α_t, [λ_q per prompt, same order], H* or None) for the prompts' (prompt_id, accuracy, num_samples)."""
        prompts = list(prompts)
        request = pb.GetCoefficientsRequest(
            run_id=run_id,
            step=step,
            prompt_ids=[p[0] for p in prompts],
            accuracies=[p[1] for p in prompts],
            sample_counts=[p[2] for p in prompts],
        )  # the columnar form: several times cheaper to build than one PromptStats message per prompt
        reply = self._call(self._stub.GetCoefficients, request)
        target = reply.target_entropy if reply.HasField("target_entropy") else None
        return reply.alpha, list(reply.prompt_weights), target

    def report_entropy(
        self,
        run_id: str,
        step: int,
        mean_entropy: float,
        num_tokens: int,
        *,
        accuracy_by_difficulty: Mapping[str, float] | None = None,
        response_length: float | None = None,
        total_steps: int | None = None,
    ) -> dict[str, Any]:
        """Apply step `step`'s token-mean entropy; a step applied before changes nothing (the state is returned).
        The keyword figures go in the run's history for people to watch (the console); they do not move α."""
        request = pb.ReportEntropyRequest(
            run_id=run_id,
            step=step,
            mean_entropy=mean_entropy,
            num_tokens=num_tokens,
            accuracy_by_difficulty=accuracy_by_difficulty or {},
            response_length=response_length,
            total_steps=total_steps,
        )
        return state_dict(self._call(self._stub.ReportEntropy, request))

    def get_state(self, run_id: str) -> dict[str, Any]:
        return state_dict(self._call(self._stub.GetState, pb.GetStateRequest(run_id=run_id)))

    def list_runs(self) -> list[dict[str, Any]]:
        return [state_dict(r) for r in self._call(self._stub.ListRuns, pb.ListRunsRequest()).runs]

    # --- people's calls
    def override(
        self,
        run_id: str,
        *,
        alpha: float | None = None,
        target_entropy: float | None = None,
        params: Mapping[str, float] | None = None,
        options: Mapping[str, str] | None = None,
        strategy: str | None = None,
        frozen: bool | None = None,
        release: bool = False,
        reason: str = "",
    ) -> dict[str, Any]:
        """Pin α / set the target / change parameters or strategy / freeze, or `release=True`. Audited."""
        request = pb.OverrideRequest(
            run_id=run_id,
            alpha=alpha,
            target_entropy=target_entropy,
            params={k: float(v) for k, v in (params or {}).items()},
            options=dict(options or {}),
            strategy=strategy,
            frozen=frozen,
            release=release,
            reason=reason,
        )
        return state_dict(self._call(self._stub.Override, request))

    def watch(self, run_id: str, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The run's state now, then after every change, until `timeout` (None: until the caller stops iterating)."""
        stream = self._stub.WatchState(
            pb.GetStateRequest(run_id=run_id),
            timeout=timeout,
            metadata=self._metadata,
            wait_for_ready=self.wait_for_ready,
        )
        try:
            for msg in stream:
                yield state_dict(msg)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                return
            raise _error(exc) from None
        finally:
            stream.cancel()

    def close(self) -> None:
        self._channel.close()
