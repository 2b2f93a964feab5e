"""Supervision of `aerplane up`'s children: a service that dies is restarted with backoff, the run goes on.

    supervisor = Supervisor(RestartPolicy(), on_event=view.event, events_path=run_dir / "events.jsonl")
    supervisor.add(Supervised("reward", process, ready=lambda: http_ok(url), ready_timeout=120))
    while training:
        supervisor.tick()          # raises GaveUp when a service failed too often

A child that exits is logged with its exit status (the view, `RUN_DIR/events.jsonl`), whatever it left behind in
its process group is stopped (vLLM's engine core, the verifier pool), and after a delay — `backoff_s`, doubling per
consecutive failure up to `backoff_max_s` — it is started again with the same command on the same ports, except the
learner, which restarts with `--resume` (`restart_argv`) and so continues from its last checkpoint with its record of
consumed rollouts (learner/ledger.py). A restarted service counts as recovered once it answers its readiness check;
the time from the exit being seen to that moment is its time to recover (`Recovery`). `max_failures` failures of
one service within `window_s` end the run with `GaveUp`, which names the service and its log. A child that exits
with `fatal_codes` (the learner's 2: invalid configuration) is not restarted: the same command would fail again.

One `tick()` never blocks for a restart: a service in backoff or still starting is checked again on the next tick,
so the live view keeps updating while vLLM takes its half minute to come back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aerplane.common.process import ManagedProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    max_failures: int = 5  # failures of one service within `window_s` that end the run
    window_s: float = 600.0
    backoff_s: float = 1.0  # the first restart's delay; doubles with each consecutive failure
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError(f"max_failures: must be at least 1, got {self.max_failures}")
        if self.window_s <= 0 or self.backoff_s < 0 or self.backoff_max_s < self.backoff_s:
            raise ValueError(
                f"restart policy: need window_s > 0 and 0 <= backoff_s <= backoff_max_s, got {self.window_s}, "
                f"{self.backoff_s}, {self.backoff_max_s}"
            )

    def delay(self, consecutive: int) -> float:
        """The wait before restart number `consecutive` (1, 2, ...) since the service was last ready."""
        return min(self.backoff_max_s, self.backoff_s * 2 ** max(0, consecutive - 1))


class GaveUp(RuntimeError):
    """A service failed `max_failures` times within the window (or with a fatal exit code): the run stops."""

    def __init__(self, name: str, code: int | None, log_path: Path | None, tail: str, why: str) -> None:
        where = f"; its log: {log_path}" if log_path else ""
        super().__init__(f"service {name!r} {why} (last exit code {code}){where}")
        self.name, self.code, self.log_path, self.tail = name, code, log_path, tail


@dataclass
class Recovery:
    """One restart of one service, as the report and the fault tests see it."""

    service: str
    exit_code: int | None
    failed_at: float  # wall-clock time the exit (or the failed start) was seen
    restarted_at: float | None = None
    ready_at: float | None = None

    @property
    def seconds(self) -> float | None:
        """Time to recover: from the exit being seen to the restarted service answering its readiness check."""
        return None if self.ready_at is None else self.ready_at - self.failed_at


@dataclass
class Supervised:
    """One child under supervision: its process, how to tell it is ready, and how to start it again."""

    name: str
    process: ManagedProcess
    ready: Callable[[], bool]
    ready_timeout: float
    restart_argv: Callable[[list[str]], list[str]] | None = None  # e.g. add --resume; default: the same command
    finishes: bool = False  # exit code 0 means done (the learner), not a failure
    fatal_codes: tuple[int, ...] = ()
    state: str = "running"  # running | backoff | starting | done
    failures: list[float] = field(default_factory=list)  # monotonic times of failures within the window
    consecutive: int = 0  # failures since the service was last ready
    due: float = 0.0  # backoff: when to restart; starting: when the readiness wait gives up
    restarts: int = 0


class Supervisor:
    """Watches a set of `Supervised` children; `tick()` restarts the ones that died."""

    def __init__(
        self,
        policy: RestartPolicy | None = None,
        *,
        on_event: Callable[[str], None] | None = None,
        events_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self.children: list[Supervised] = []
        self.recoveries: list[Recovery] = []
        self._open: dict[str, Recovery] = {}  # service -> the recovery in progress
        self._on_event = on_event
        self._events_path = events_path
        self._clock = clock

    def add(self, child: Supervised) -> Supervised:
        self.children.append(child)
        return child

    def get(self, name: str) -> Supervised | None:
        return next((c for c in self.children if c.name == name), None)

    @property
    def recovering(self) -> list[str]:
        """Services down or not yet ready again."""
        return [c.name for c in self.children if c.state in ("backoff", "starting")]

    def tick(self) -> None:
        """Check every child once: record exits, restart the ones whose backoff is over, mark recoveries."""
        now = self._clock()
        for child in self.children:
            if child.state == "running":
                code = child.process.poll()
                if code is None:
                    continue
                if code == 0 and child.finishes:
                    child.state = "done"
                    continue
                self._failed(child, code, now, "exited")
            elif child.state == "backoff" and now >= child.due:
                self._restart(child, now)
            elif child.state == "starting":
                code = child.process.poll()
                if code is not None:
                    if code == 0 and child.finishes:
                        self._ready(child, "done")
                    else:
                        self._failed(child, code, now, "exited while starting")
                elif child.ready():
                    self._ready(child, "running")
                elif now > child.due:
                    self._failed(child, None, now, f"not ready after {child.ready_timeout:.0f}s")

    # --- transitions ------------------------------------------------------------------------------------------

    def _failed(self, child: Supervised, code: int | None, now: float, what: str) -> None:
        child.process.stop(timeout=10)  # the rest of its process group, and the log file
        window = self.policy.window_s
        child.failures = [t for t in child.failures if now - t <= window] + [now]
        child.consecutive += 1
        self._open.setdefault(child.name, Recovery(child.name, code, time.time()))
        n = len(child.failures)
        why = None
        if code in child.fatal_codes:
            why = f"exited with code {code}, which a restart cannot fix"
        elif n >= self.policy.max_failures:
            why = f"failed {n} time{'s' if n != 1 else ''} within {window:.0f}s"
        if why is not None:
            self._record("gave_up", child, code=code, why=why)
            raise GaveUp(child.name, code, child.process.log_path, child.process.log_tail(30), why)
        delay = self.policy.delay(child.consecutive)
        child.state, child.due = "backoff", now + delay
        self._record(
            "failed", child, code=code, what=what, restart_in_s=round(delay, 2), failures_in_window=len(child.failures)
        )
        self._emit(
            f"{child.name} {what} (code {code}); restarting in {delay:.1f}s "
            f"(failure {len(child.failures)}/{self.policy.max_failures} within {window:.0f}s)"
        )

    def _restart(self, child: Supervised, now: float) -> None:
        if child.restart_argv is not None:
            child.process.argv = child.restart_argv(child.process.argv)
        child.process.start()
        child.restarts += 1
        child.state, child.due = "starting", now + child.ready_timeout
        self._open[child.name].restarted_at = time.time()
        self._record("restarted", child, pid=child.process.pid, argv_tail=child.process.argv[-3:])
        self._emit(f"{child.name} restarted (pid {child.process.pid}, restart {child.restarts})")

    def _ready(self, child: Supervised, state: str) -> None:
        child.state, child.consecutive = state, 0
        recovery = self._open.pop(child.name, None)
        if recovery is None:
            return
        recovery.ready_at = time.time()
        self.recoveries.append(recovery)
        self._record("recovered", child, seconds=round(recovery.seconds or 0.0, 3))
        self._emit(f"{child.name} is back after {recovery.seconds:.1f}s")

    # --- reporting --------------------------------------------------------------------------------------------

    def _record(self, event: str, child: Supervised, **data: Any) -> None:
        rec = {"time": time.time(), "event": event, "service": child.name, **data}
        log.info("supervisor: %s", rec)
        if self._events_path is not None:
            with open(self._events_path, "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")

    def _emit(self, text: str) -> None:
        if self._on_event is not None:
            self._on_event(text)

    def summary(self) -> list[dict[str, Any]]:
        """Every finished recovery (service, exit code, seconds), for run.json and the report."""
        return [{**asdict(r), "seconds": r.seconds} for r in self.recoveries]


def with_flag(flag: str) -> Callable[[Sequence[str]], list[str]]:
    """A `restart_argv` that adds `flag` once (the learner's `--resume`)."""

    def add(argv: Sequence[str]) -> list[str]:
        return list(argv) if flag in argv else [*argv, flag]

    return add
