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

A child that is alive but hung is found by its `/healthz` (`health`, probed every `health_interval_s` on a thread,
with `health_timeout_s`): an answer 503 `{"status": "hung"}` (its work loop had work and made no progress within
its own bound: `common.liveness`), or `health_failures` probes in a row without an answer (a process stopped or
stuck as a whole: SIGSTOP, a deadlock that holds its HTTP thread too). The supervisor records `hung` with how long,
SIGKILLs the process group and restarts it like a crash, counting towards `max_failures`. A child that exits with
`HUNG_EXIT_CODE` (its own watchdog found its loop stuck, the way it restarts under compose and Helm) is recorded as
`hung` too.

One `tick()` never blocks for a restart or a probe: a service in backoff or still starting is checked again on the
next tick, and a probe's answer is read on the tick after it came, so the live view keeps updating while vLLM takes
its half minute to come back.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aerplane.common.liveness import HUNG_EXIT_CODE
from aerplane.common.process import ManagedProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    max_failures: int = 5  # failures of one service within `window_s` that end the run
    window_s: float = 600.0
    backoff_s: float = 1.0  # the first restart's delay; doubles with each consecutive failure
    backoff_max_s: float = 30.0
    health_interval_s: float = 5.0  # between the end of one /healthz probe and the start of the next
    health_timeout_s: float = 10.0  # a probe without an answer by then is unanswered
    health_failures: int = 3  # unanswered probes in a row that make a service hung

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError(f"max_failures: must be at least 1, got {self.max_failures}")
        if self.health_interval_s < 0 or self.health_timeout_s <= 0 or self.health_failures < 1:
            raise ValueError(
                "health checks: need health_interval_s >= 0, health_timeout_s > 0 and health_failures >= 1, got "
                f"{self.health_interval_s}, {self.health_timeout_s}, {self.health_failures}"
            )
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


@dataclass(frozen=True)
class Health:
    """One /healthz probe: `ok`, `hung` (503 with status hung: its loop stalled past its bound) or `unanswered`
    (no answer in time, refused, or another error status), with what the service or the error said."""

    status: str
    detail: dict[str, Any]


def probe_healthz(url: str, timeout: float) -> Health:
    """GET `url` (a service's /healthz) once."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return Health("ok", _json(resp.read()))
    except urllib.error.HTTPError as exc:
        body = _json(exc.read())
        return Health("hung" if body.get("status") == "hung" else "unanswered", {"http_status": exc.code, **body})
    except (urllib.error.URLError, OSError) as exc:  # timeouts are OSErrors too
        return Health("unanswered", {"error": str(getattr(exc, "reason", exc))})


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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
    health: Callable[[float], Health] | None = None  # a /healthz probe taking its timeout (probe_healthz)
    probe: Future[Health] | None = None  # the probe in flight
    probe_started: float = 0.0
    probe_due: float = 0.0
    unanswered: int = 0  # probes in a row without an answer
    unanswered_since: float | None = None  # when the first of them started


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
        self._probes: ThreadPoolExecutor | None = None  # started with the first probe

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
                    self._check_health(child, now)
                    continue
                if code == 0 and child.finishes:
                    child.state = "done"
                    continue
                if code == HUNG_EXIT_CODE:
                    self._record("hung", child, code=code, why="exited by itself: its loop stalled past its bound")
                    self._emit(f"{child.name} exited hung (code {code}): its loop stalled past its bound")
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

    def close(self) -> None:
        """Stop probing (a probe in flight ends by its timeout)."""
        if self._probes is not None:
            self._probes.shutdown(wait=False, cancel_futures=True)
            self._probes = None

    # --- liveness -----------------------------------------------------------------------------------------------

    def _check_health(self, child: Supervised, now: float) -> None:
        """Start a probe when one is due; read one that has answered (never waits for it)."""
        if child.health is None:
            return
        if child.probe is None:
            if now >= child.probe_due:
                if self._probes is None:
                    self._probes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="healthz")
                child.probe = self._probes.submit(child.health, self.policy.health_timeout_s)
                child.probe_started = now
            return
        if not child.probe.done():
            return
        result = child.probe.result()
        child.probe, child.probe_due = None, now + self.policy.health_interval_s
        if result.status == "ok":
            child.unanswered, child.unanswered_since = 0, None
        elif result.status == "hung":
            d = result.detail
            stalled = float(d.get("stalled_s") or 0.0)
            why = f"its {d.get('loop', 'work')} loop made no progress for {stalled:.0f}s (bound {d.get('bound_s')}s)"
            self._hung(child, now, stalled, why)
        else:
            child.unanswered += 1
            if child.unanswered_since is None:
                child.unanswered_since = child.probe_started
            if child.unanswered >= self.policy.health_failures:
                error = result.detail.get("error") or f"HTTP {result.detail.get('http_status')}"
                why = f"/healthz unanswered {child.unanswered} times in a row ({error})"
                self._hung(child, now, now - child.unanswered_since, why)

    def _hung(self, child: Supervised, now: float, seconds: float, why: str) -> None:
        """Record `hung`, SIGKILL the child's process group, and restart it as if it had crashed."""
        self._record("hung", child, seconds=round(seconds, 1), why=why)
        self._emit(f"{child.name} is hung: {why}; killing it")
        child.process.kill()
        child.unanswered, child.unanswered_since = 0, None
        self._failed(child, child.process.poll(), now, f"hung for {seconds:.0f}s")

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
        child.probe, child.probe_due = None, 0.0
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
