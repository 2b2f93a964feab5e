"""A pool of killable verification worker processes with a hard per-item timeout; POST /v1/verify (http.py) and
the stream loop (worker.py) submit to it.

Why processes: math-verify (via sympy) can hang in C code on adversarial input (`9^{9^{9^9}}` asks sympy for an
integer with hundreds of millions of digits), and its own timeouts use SIGALRM, which only works on a process's main
thread. So each worker runs items on its main thread, and the parent enforces time:

- the worker arms its own SIGALRM timer for `timeout_s` around each item (a Python-level hang ends there, the worker
  survives and answers `timeout`);
- the parent waits `timeout_s + HARD_KILL_GRACE_S`; if no answer came (a hang inside C code), it SIGKILLs the
  worker, answers `timeout`, and starts a replacement in the background;
- a worker that dies (segfault, OOM kill) is replaced the same way, its item answers `error`;
- each worker's address space is capped (`memory_limit_mb`, RLIMIT_AS), so input that makes sympy allocate without
  bound fails with MemoryError (`error`) instead of swapping the host.

Responses (or ground truths) over `max_response_bytes` (UTF-8), or whose brackets nest deeper than `max_nesting`,
answer `too_long` without reaching a worker, so nothing is parsed; lone surrogates (invalid unicode from a JSON
body) are replaced before sending. Each worker serves one item at a time; callers submit from any thread (`submit`
→ Future, `score` blocks) and the pool runs up to `workers` items at once, so one hanging item never stops the
others. Workers come from a `forkserver` that preloads sympy, math-verify and reasoning-gym, so a replacement is
ready in milliseconds, not seconds. Workers ignore SIGTERM/SIGINT (the service drains them on shutdown) and exit
when the parent's end of their pipe closes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import resource
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from aerplane.reward import scorers
from aerplane.reward.scorers import DEFAULT_EXTRACTION, Score
from aerplane.reward.scorers.extract import nests_deeper_than

log = logging.getLogger(__name__)

HARD_KILL_GRACE_S = 0.5
WORKER_START_TIMEOUT_S = 120.0
_PRELOAD = ["aerplane.reward.scorers", "sympy", "math_verify", "reasoning_gym"]
_DETAIL_CHARS = 500


@dataclass(frozen=True, slots=True)
class PoolConfig:
    workers: int = 2
    timeout_s: float = 5.0
    max_response_bytes: int = 64 * 1024
    max_nesting: int = 32  # `{`, `(`, `[` nested deeper than this anywhere: too_long, unparsed
    extraction: str = DEFAULT_EXTRACTION
    math_aliases: tuple[str, ...] = ()
    memory_limit_mb: int = 1024  # address-space cap per worker (RLIMIT_AS); 0: none
    start_method: str = "forkserver"  # or "spawn"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers: must be at least 1, got {self.workers}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s: must be positive, got {self.timeout_s}")
        if self.max_response_bytes < 1:
            raise ValueError(f"max_response_bytes: must be positive, got {self.max_response_bytes}")
        if self.max_nesting < 1:
            raise ValueError(f"max_nesting: must be positive, got {self.max_nesting}")
        if self.extraction not in scorers.EXTRACTION_MODES:
            raise ValueError(f"extraction: must be one of {scorers.EXTRACTION_MODES}, got {self.extraction!r}")
        if self.memory_limit_mb < 0:
            raise ValueError(f"memory_limit_mb: must be >= 0, got {self.memory_limit_mb}")
        if self.start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method: must be forkserver or spawn, got {self.start_method!r}")


# --- worker side ------------------------------------------------------------------------------------------------


class _SoftTimeout(BaseException):
    """Raised by SIGALRM inside a worker. BaseException so that libraries' `except Exception` cannot swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _SoftTimeout()


def score_item(task: str, response: str, ground_truth: str, extraction: str = DEFAULT_EXTRACTION) -> Score:
    """Score one item in this process (no timeout, no size cap): what a worker runs, and the 1-process baseline."""
    try:
        fn = scorers.get_scorer(task)
    except scorers.UnknownTask as exc:
        return Score(0.0, "error", detail=str(exc))
    try:
        score = fn(response, ground_truth, extraction=extraction)
    except Exception as exc:  # a scorer bug or a library error on odd input: score 0, keep serving
        return Score(0.0, "error", detail=f"{type(exc).__name__}: {exc}"[:_DETAIL_CHARS])
    if score.reason not in scorers.REASONS or not 0.0 <= score.reward <= 1.0:  # also catches NaN
        detail = f"scorer returned reward {score.reward!r}, reason {score.reason!r}"
        return Score(0.0, "error", score.answer, detail, score.method)
    return score


def _warm_up(extraction: str) -> None:
    """Import and exercise the scorers once so the first real item does not pay for it."""
    score_item("math", "\\boxed{\\frac{1}{2}}", "0.5", extraction)
    for task in ("basic_arithmetic", "chain_sum", "gsm_symbolic"):
        score_item(task, "\\boxed{1}", "1", extraction)


def _worker_main(conn: Connection, config: PoolConfig) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent drains us; a group SIGTERM must not cut items off
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    if config.memory_limit_mb:
        limit = config.memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a runaway sympy allocation → MemoryError → `error`
    scorers.configure(config.math_aliases)
    _warm_up(config.extraction)
    conn.send(("ready", multiprocessing.current_process().pid))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # parent gone
        if msg is None:
            return
        seq, task, response, ground_truth = msg
        try:
            signal.setitimer(signal.ITIMER_REAL, config.timeout_s)
            try:
                score = score_item(task, response, ground_truth, config.extraction)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoftTimeout:
            score = Score(0.0, "timeout", detail=f"exceeded {config.timeout_s}s")
        try:
            conn.send((seq, score.reward, score.reason, score.answer, score.detail, score.method))
        except (EOFError, OSError):
            return


# --- parent side ------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection
    name: str
    items: int = field(default=0)

    def kill(self) -> None:
        try:
            self.process.kill()
        except Exception:  # already gone
            pass
        self.process.join(timeout=5)
        self.conn.close()


class WorkerPool:
    """`workers` verification processes; `submit`/`score`/`score_many` from any thread. Use as a context manager."""

    def __init__(
        self,
        config: PoolConfig,
        *,
        on_result: Callable[[str, Score, float, str], None] | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._on_result = on_result
        self._on_restart = on_restart
        self._ctx = multiprocessing.get_context(config.start_method)
        if config.start_method == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="verify")
        self._lock = threading.Lock()
        self._queued = 0
        self._busy = 0
        self._alive = 0
        self._seq = 0
        self._spawned = 0
        self._closing = False
        self.restarts = 0
        scorers.configure(config.math_aliases)

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def start(self, timeout: float = WORKER_START_TIMEOUT_S) -> WorkerPool:
        """Start every worker (in parallel) and wait until each has warmed up."""
        # Workers (and the forkserver they fork from) inherit this environment. One BLAS thread each: scoring needs
        # none, and per-thread stacks and arenas would eat into the address-space cap on many-core hosts.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        starting = [self._launch() for _ in range(self.config.workers)]
        for worker in starting:
            self._await_ready(worker, timeout)
        return self

    def _launch(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        with self._lock:
            self._spawned += 1
            name = f"verify-worker-{self._spawned}"
        process = self._ctx.Process(target=_worker_main, args=(child_end, self.config), name=name, daemon=True)
        process.start()
        child_end.close()
        return _Worker(process=process, conn=parent_end, name=name)

    def _await_ready(self, worker: _Worker, timeout: float) -> None:
        try:
            if not worker.conn.poll(timeout):
                raise TimeoutError(f"{worker.name} did not start within {timeout:.0f}s")
            tag, _pid = worker.conn.recv()
            if tag != "ready":
                raise RuntimeError(f"{worker.name} sent {tag!r} instead of ready")
        except (EOFError, OSError) as exc:
            worker.kill()
            raise RuntimeError(f"{worker.name} died while starting (exit code {worker.process.exitcode})") from exc
        except BaseException:
            worker.kill()
            raise
        with self._lock:
            self._alive += 1
        self._idle.put(worker)

    def _replace(self, reason: str) -> None:
        """Start a worker in place of a killed or dead one, in the background; retry with backoff on failure."""
        self.restarts += 1
        if self._on_restart is not None:
            self._on_restart(reason)

        def run() -> None:
            delay = 0.5
            while not self._closing:
                try:
                    worker = self._launch()
                    self._await_ready(worker, WORKER_START_TIMEOUT_S)
                except Exception:
                    log.exception("could not start a replacement verification worker; retrying in %.1fs", delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                if self._closing:  # lost the race with close(): do not leave it running
                    self._retire_idle(block=False)
                return

        threading.Thread(target=run, name="verify-respawn", daemon=True).start()

    def close(self, timeout: float = 30.0) -> None:
        """Let in-flight items finish (up to `timeout`), then stop every worker."""
        self._closing = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                alive = self._alive
            if alive == 0:
                break
            remaining = deadline - time.monotonic()
            if not self._retire_idle(block=True, timeout=max(0.0, min(remaining, 0.5))) and remaining <= 0:
                break
        while not self._idle.empty():
            self._retire_idle(block=False)

    def _retire_idle(self, *, block: bool, timeout: float | None = None) -> bool:
        try:
            worker = self._idle.get(block=block, timeout=timeout)
        except queue.Empty:
            return False
        try:
            worker.conn.send(None)
            worker.process.join(timeout=2)
        except (OSError, EOFError):
            pass
        worker.kill()
        with self._lock:
            self._alive -= 1
        return True

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- scoring ------------------------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Items submitted and not yet on a worker."""
        return self._queued

    @property
    def busy(self) -> int:
        return self._busy

    def worker_pids(self) -> list[int]:
        """PIDs of the idle workers (for tests that hang or kill one)."""
        with self._idle.mutex:
            return [w.process.pid for w in self._idle.queue]

    @property
    def alive(self) -> int:
        """Workers started and not retired (a replacement being started is not counted yet)."""
        return self._alive

    def precheck(self, task: str, response: str, ground_truth: str) -> Score | None:
        """The answer for items that never reach a worker (unknown task, too long, nested too deep), else None."""
        if not scorers.is_known(task):
            return Score(0.0, "error", detail=f"unknown task {task!r}")
        cap = self.config.max_response_bytes
        if len(response) > cap or len(response.encode("utf-8", "surrogatepass")) > cap:
            return Score(0.0, "too_long", detail=f"response over {cap} bytes")
        if len(ground_truth) > cap or len(ground_truth.encode("utf-8", "surrogatepass")) > cap:
            return Score(0.0, "too_long", detail=f"ground truth over {cap} bytes")
        depth = self.config.max_nesting
        for name, text in (("response", response), ("ground truth", ground_truth)):
            if nests_deeper_than(text, depth):
                return Score(0.0, "too_long", detail=f"{name} nests brackets deeper than {depth}")
        return None

    def submit(self, task: str, response: str, ground_truth: str, *, source: str = "") -> Future[Score]:
        """Queue one item; the Future resolves to its Score (never raises for bad input: it scores 0 with a reason).

        `source` is passed to `on_result` with the score and its latency (metrics label it).
        """
        started = time.perf_counter()
        early = self.precheck(task, response, ground_truth)
        if early is not None:
            fut: Future[Score] = Future()
            fut.set_result(early)
            self._report(task, early, started, source)
            return fut
        if self._closing:
            raise RuntimeError("the verification pool is closing")
        with self._lock:
            self._queued += 1
        try:
            return self._executor.submit(self._run, task, _clean(response), _clean(ground_truth), started, source)
        except BaseException:
            with self._lock:
                self._queued -= 1
            raise

    def score(self, task: str, response: str, ground_truth: str, *, source: str = "") -> Score:
        return self.submit(task, response, ground_truth, source=source).result()

    def score_many(self, items: Sequence[tuple[str, str, str]], *, source: str = "") -> list[Score]:
        """Score (task, response, ground_truth) items concurrently; results in input order."""
        futures = [self.submit(*item, source=source) for item in items]
        return [f.result() for f in futures]

    def _report(self, task: str, score: Score, started: float, source: str) -> None:
        if self._on_result is not None:
            self._on_result(task, score, time.perf_counter() - started, source)

    def _run(self, task: str, response: str, ground_truth: str, started: float, source: str) -> Score:
        worker = self._idle.get()
        with self._lock:
            self._queued -= 1
            self._busy += 1
            self._seq += 1
            seq = self._seq
        try:
            score = self._on_worker(worker, seq, task, response, ground_truth)
        finally:
            with self._lock:
                self._busy -= 1
        self._report(task, score, started, source)
        return score

    def _on_worker(self, worker: _Worker, seq: int, task: str, response: str, ground_truth: str) -> Score:
        limit = self.config.timeout_s + HARD_KILL_GRACE_S
        try:
            worker.conn.send((seq, task, response, ground_truth))
            deadline = time.monotonic() + limit
            while True:
                if not worker.conn.poll(max(0.0, deadline - time.monotonic())):
                    self._discard(worker, "timeout")
                    return Score(0.0, "timeout", detail=f"no answer within {limit:.1f}s; worker killed")
                reply = worker.conn.recv()
                if reply[0] == seq:
                    break
        except (EOFError, OSError) as exc:
            code = worker.process.exitcode
            self._discard(worker, "crash")
            return Score(0.0, "error", detail=f"worker died ({type(exc).__name__}, exit code {code})")
        worker.items += 1
        self._idle.put(worker)
        _, reward, reason, answer, detail, method = reply
        return Score(float(reward), reason, answer, detail, method)

    def _discard(self, worker: _Worker, reason: str) -> None:
        log.warning("%s %s on an item; killing and replacing it", worker.name, reason)
        worker.kill()
        with self._lock:
            self._alive -= 1
        if not self._closing:
            self._replace(reason)


def _clean(text: str) -> str:
    """Replace lone surrogates (invalid unicode from a JSON body) so every later step sees valid text."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
