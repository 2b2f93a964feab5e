"""Liveness that means progress: a service is alive when its work loop moves, not merely when its HTTP thread answers.

A `Progress` tracker belongs to one work loop. The loop says when it holds work (`with progress.working(n): ...`)
and when it makes progress (`progress.beat()`: an item scored, a wave of responses published, a phase of a step
done). The loop is hung when work is pending and neither progress nor the start of that work is more recent than
`bound_s`; with nothing pending it is healthy however long it waits (for input, for another service). `/healthz`
reads `check()` (common.ops: 200 `{"status": "ok", ...}`, 503 `{"status": "hung", "loop": ..., "stalled_s": ...,
"bound_s": ...}`); it is a lock and a clock reading, so a probe answers even while Redis is slow.

A `Watchdog` thread checks the same every second and, when the loop is hung and `exit_on_hang` is set, logs one
ERROR line naming the loop, dumps every thread's stack, and ends the process with `HUNG_EXIT_CODE` through
`os._exit` (a stuck thread cannot be joined, so no clean shutdown is attempted). The supervisor (`aerplane up`,
compose's `restart:`, the kubelet) then replaces the process like any crash; `aerplane up` records that exit code as
`hung`. Stdlib only: every service imports it at start-up.

    progress = Progress("reward.stream", bound_s=300)
    watchdog = Watchdog(progress.check, exit_on_hang=True).start()
    with progress.working(len(batch)):
        for item in batch:
            score(item)
            progress.beat()
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

HUNG_EXIT_CODE = 124
"""The exit code of a process whose watchdog found its loop hung (timeout(1)'s code for "ran past its limit")."""

LiveResult = tuple[bool, dict[str, Any]]
LiveFn = Callable[[], LiveResult]

log = logging.getLogger(__name__)


class Progress:
    """Thread-safe progress of one work loop: how much work it holds, and when it last moved.

    `bound_s` is how long the loop may hold work without progress before it counts as hung (0: never)."""

    def __init__(self, name: str, bound_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if bound_s < 0:
            raise ValueError(f"bound_s: must be >= 0 (0 disables), got {bound_s}")
        self.name = name
        self.bound_s = float(bound_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = 0
        self._since = clock()  # the latest of: the last progress, the moment work became pending

    def begin(self, pending: int = 1) -> None:
        """The loop took `pending` units of work; the stall clock starts now if it held none."""
        with self._lock:
            if self._pending == 0:
                self._since = self._clock()
            self._pending += pending

    def end(self, pending: int = 1) -> None:
        """`pending` units of work are finished or handed back; with none left the loop is idle again."""
        with self._lock:
            self._pending = max(0, self._pending - pending)

    def beat(self) -> None:
        """The loop made progress (a unit of work finished, a batch published)."""
        now = self._clock()
        with self._lock:
            self._since = max(self._since, now)

    @contextmanager
    def working(self, pending: int = 1) -> Iterator[Progress]:
        """Hold `pending` units of work for the block (released however it ends)."""
        self.begin(pending)
        try:
            yield self
        finally:
            self.end(pending)

    @property
    def pending(self) -> int:
        return self._pending

    def check(self) -> LiveResult:
        """`(ok, detail)`: ok unless work is pending and the loop has not moved for more than `bound_s`."""
        with self._lock:
            pending, since = self._pending, self._since
        stalled = max(0.0, self._clock() - since) if pending else 0.0
        ok = not (pending and self.bound_s and stalled > self.bound_s)
        return ok, {"loop": self.name, "pending": pending, "stalled_s": round(stalled, 3), "bound_s": self.bound_s}


@dataclass(kw_only=True)
class Watchdog:
    """Checks `live` (e.g. `Progress.check`) every `interval_s` on a daemon thread; when it reports hung, logs it
    and, with `exit_on_hang`, exits the process with `HUNG_EXIT_CODE` (`exit_fn`, `os._exit` but in tests) once the
    stall has lasted `grace_s` past its bound. The grace lets a supervisor that polls /healthz see the 503 first
    where the exit code does not reach it (the learner: torchrun reports a worker's 124 as its own 1)."""

    live: LiveFn = field(kw_only=False)
    exit_on_hang: bool = True
    interval_s: float = 1.0
    grace_s: float = 0.0
    exit_fn: Callable[[int], Any] = os._exit
    _reported: bool = field(default=False, init=False)  # one WARNING per hang when not exiting

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval_s + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                ok, detail = self.live()
            except Exception:  # a broken check must not end the process
                log.exception("liveness check failed")
                continue
            if ok:
                if self._reported:
                    log.info("loop %s is making progress again", detail.get("loop"))
                self._reported = False
            elif self.exit_on_hang and detail.get("stalled_s", 0) >= detail.get("bound_s", 0) + self.grace_s:
                self._die(detail)
                return
            elif not self._reported:
                self._reported = True
                then = f"exiting in {self.grace_s:.0f}s unless it moves" if self.exit_on_hang else "exit_on_hang is off"
                log.warning("%s (%s)", describe(detail), then)

    def _die(self, detail: dict[str, Any]) -> None:
        log.error("%s: exiting with code %d for the supervisor to restart it", describe(detail), HUNG_EXIT_CODE)
        try:  # where the loop is stuck, for whoever reads the log
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        except (ValueError, OSError, AttributeError):
            pass  # stderr without a file descriptor (captured)
        flush_logs()
        self.exit_fn(HUNG_EXIT_CODE)


def describe(detail: dict[str, Any]) -> str:
    """One line about a hung loop, from `check()`'s detail."""
    return (
        f"loop {detail.get('loop')} hung: no progress for {detail.get('stalled_s', 0):.0f}s with "
        f"{detail.get('pending', 0)} pending (hang timeout {detail.get('bound_s', 0):.0f}s)"
    )


def flush_logs() -> None:
    """Flush the root logger's handlers and the standard streams (`os._exit` skips every flush)."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # best effort on the way out
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
