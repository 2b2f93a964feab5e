"""One table of the coefficient service's errors: the status each transport answers for each of them.

`status_of(exc)` gives the gRPC code and the HTTP status of an exception (the first row it is an instance of), and
the message to send, or None for an exception that is not in the table (an internal error: gRPC INTERNAL, REST
500, never with the exception's own text). REST is http.py's handlers, gRPC is grpc.py's servicer.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import redis

from aerplane.coefficient.auth import PermissionDenied, Unauthenticated
from aerplane.coefficient.runs import InvalidValue, OverrideConflict, RunExists, RunNotFound, StaleStep


@dataclass(frozen=True)
class ErrorStatus:
    error: type[BaseException]
    grpc_code: grpc.StatusCode
    http_status: int
    public: bool = True  # the exception's message is sent; else a fixed one naming only its type


ERRORS: tuple[ErrorStatus, ...] = (
    ErrorStatus(RunNotFound, grpc.StatusCode.NOT_FOUND, 404),
    ErrorStatus(InvalidValue, grpc.StatusCode.INVALID_ARGUMENT, 422),
    ErrorStatus(StaleStep, grpc.StatusCode.FAILED_PRECONDITION, 409),
    # a REST change the run refuses as it is configured; over gRPC the same Override is a bad argument
    ErrorStatus(OverrideConflict, grpc.StatusCode.INVALID_ARGUMENT, 409),
    ErrorStatus(RunExists, grpc.StatusCode.ALREADY_EXISTS, 409),
    ErrorStatus(Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
    ErrorStatus(PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
    ErrorStatus(redis.ConnectionError, grpc.StatusCode.UNAVAILABLE, 503, public=False),
    ErrorStatus(redis.TimeoutError, grpc.StatusCode.UNAVAILABLE, 503, public=False),
)


def status_of(exc: BaseException) -> tuple[ErrorStatus, str] | None:
    """The table row of `exc` and the message to answer with; None for an error outside the table."""
    for row in ERRORS:
        if isinstance(exc, row.error):
            return row, (str(exc) if row.public else f"run store unavailable: {type(exc).__name__}")
    return None
