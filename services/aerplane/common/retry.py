"""One retry policy for calls to the services' shared dependencies (Redis, the coefficient service): exponential
backoff — `first_s`, doubling, at most `max_s` between tries — for as long as `timeout_s` allows, retrying only the
errors a restart or a network blip causes. Callers differ only in what is retryable and how long an outage may last:

- `StreamClient` (every stream call): Redis connection errors and timeouts, up to its `reconnect_timeout` (60 s);
- the learner's coefficient calls: gRPC UNAVAILABLE and DEADLINE_EXCEEDED, up to `coefficient.outage_s` (300 s);
- the coefficient service's Redis store: redis-py's own retry built from `REDIS_BACKOFF` (a few quick tries inside
  one request; the learner's retry above covers a longer outage).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float
    max_s: float

    def delays(self) -> Iterator[float]:
        """The successive pauses: first_s, 2·first_s, ... capped at max_s."""
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


REDIS_BACKOFF = Backoff(first_s=0.05, max_s=2.0)
SERVICE_BACKOFF = Backoff(first_s=0.5, max_s=5.0)


def call_with_retry(
    fn: Callable[[], T],
    *,
    retryable: Callable[[BaseException], bool],
    timeout_s: float,
    backoff: Backoff,
    what: str,
    log: logging.Logger,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """`fn()`, retried while it raises a `retryable` error and the next pause still fits in `timeout_s`; the last
    error is raised as it is. Every retry is logged (with `what` and the pause)."""
    deadline = time.monotonic() + timeout_s
    pauses = backoff.delays()
    while True:
        try:
            return fn()
        except Exception as exc:
            if not retryable(exc):
                raise
            if on_retry is not None:
                on_retry(exc)
            delay = next(pauses)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            log.warning("%s unavailable (%s); retrying in %.2fs", what, exc, min(delay, remaining))
            time.sleep(min(delay, remaining))
