"""The Redis-backed run store: every run's record, per-step history, audit log and change notices.

All state lives in Redis, so a restarted (even kill -9'd) service continues every run exactly where it stopped, and
several replicas may serve the same runs. Keys, namespaced by run as in DESIGN §3:

    aerplane:coefficient:runs                  set of run ids
    aerplane:{run_id}:coefficient:run          the run record (JSON, `runs.Run`), with a version bumped per change
    aerplane:{run_id}:coefficient:steps        hash step → the α / H* answered for that step (first answer wins)
    aerplane:{run_id}:coefficient:batches      hash "step:digest" → prompt count, accuracy and λ sums of one
                                               GetCoefficients input (a retry with the same input counts once)
    aerplane:{run_id}:coefficient:batch_fields hash step → that step's "step:digest" fields of `batches`, space-
                                               separated (what lets a reader fetch a few steps without the rest)
    aerplane:{run_id}:coefficient:last_batch   the latest batch's means (the mean-prompt-weight gauge)
    aerplane:{run_id}:coefficient:entropy      hash step → the applied report (H, tokens, α before/after, H*)
    aerplane:{run_id}:coefficient:audit        list of audit entries (JSON), oldest first
    aerplane:{run_id}:coefficient:changes      pub/sub channel: the new record after every change

Concurrency: every change to a run record is an optimistic transaction (WATCH the record, compute the new one with
the pure transitions of `runs`, MULTI/EXEC the record plus its history/audit writes and the change notice; retry
when another writer got in first). No update is lost and each change's audit entry commits with it.

GetCoefficients takes one round trip: it computes from the run as this process last saw it and a Lua script
stores the step's answer only if the run is still exactly that (another replica's change makes it recompute). The
α and H* for a step are fixed the first time that step is asked for, so a learner that retries a step after a
crash gets the same answer even if its own ReportEntropy for that step already moved α (and a learner that asks
for step t+1 before reporting step t gets α before that report).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from aerplane.coefficient.runs import (
    InvalidValue,
    Override,
    Run,
    RunExists,
    RunNotFound,
    apply_override,
    apply_report,
    check_run_id,
    new_run,
    strategy_for,
)
from aerplane.common.redis_client import connect
from aerplane.common.retry import REDIS_BACKOFF
from aerplane.core.step_figures import NO_FIGURES, StepFigures

log = logging.getLogger(__name__)

RUNS_KEY = "aerplane:coefficient:runs"

# A batch's write (Lua, inside the scripts below): the field once, listed under its step; the latest batch's means.
# Once, like the step's answer: a retry of the same input after α moved keeps the λ sums the first answer gave.
_ADD_BATCH = """
local function add_batch(batches, last_batch, batch_fields, step, field, value, last)
  if redis.call('HSETNX', batches, field, value) == 1 then
    local listed = redis.call('HGET', batch_fields, step)
    redis.call('HSET', batch_fields, step, listed and (listed .. ' ' .. field) or field)
  end
  redis.call('SET', last_batch, last)
end
"""
# GetCoefficients' write, atomic in Redis. KEYS: run, steps, batches, last_batch, batch_fields. ARGV: step, the run
# record the answer was computed from, the step's answer, then the batch field, its value and the last-batch JSON
# ('' = none). Replies {3} stored, {0} no such run, {1, run} the run changed, {2, run, answer} the step was answered.
_ANSWER_STEP_LUA = (
    _ADD_BATCH
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return {0} end
local answer = redis.call('HGET', KEYS[2], ARGV[1])
if answer then return {2, raw, answer} end
if raw ~= ARGV[2] then return {1, raw} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[4] ~= '' then add_batch(KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[4], ARGV[5], ARGV[6]) end
return {3}
"""
)
# Another batch of a step answered before. KEYS: batches, last_batch, batch_fields. ARGV: step, field, value, last.
_ADD_BATCH_LUA = _ADD_BATCH + "add_batch(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])\n"
STEPS_PER_READ = 1000  # history_between reads at most this many steps by name; a wider range reads everything
_NO_RUN, _RUN_CHANGED, _STEP_EXISTS, _ANSWERED = 0, 1, 2, 3


def run_key(run_id: str, name: str) -> str:
    return f"aerplane:{run_id}:coefficient:{name}"


@dataclass(frozen=True)
class CoefficientsAnswer:
    run_id: str
    step: int
    alpha: float
    prompt_weights: list[float]
    target_entropy: float | None


class RunStore:
    """Run records in Redis; thread-safe (one connection pool shared by gRPC handler threads and REST workers)."""

    def __init__(self, redis_url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.redis_url = redis_url
        self._clock = clock
        self.redis = connect(
            redis_url,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=REDIS_BACKOFF.max_s, base=REDIS_BACKOFF.first_s), retries=3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self.conflicts = 0  # optimistic-transaction retries (a gauge reads it)
        self._conflicts_lock = threading.Lock()
        self._answer_step = self.redis.register_script(_ANSWER_STEP_LUA)
        self._add_batch = self.redis.register_script(_ADD_BATCH_LUA)
        # The run record (raw bytes) as this process last read or wrote it, and its parse: GetCoefficients
        # computes from it and the Lua script checks it is still current.
        self._seen: dict[str, bytes] = {}
        self._parsed: dict[str, tuple[bytes, Run]] = {}

    def close(self) -> None:
        self.redis.close()

    def ping(self) -> bool:
        return bool(self.redis.ping())

    # --- reads
    def get_run(self, run_id: str) -> Run:
        raw = self.redis.get(run_key(check_run_id(run_id), "run"))
        if raw is None:
            self._seen.pop(run_id, None)
            raise RunNotFound(f"run {run_id!r} not found")
        self._seen[run_id] = raw
        return self._parse(run_id, raw)

    def list_runs(self) -> list[Run]:
        ids = sorted(m.decode() for m in self.redis.smembers(RUNS_KEY))
        if not ids:
            return []
        raws = self.redis.mget([run_key(i, "run") for i in ids])
        return [Run.from_json(raw) for raw in raws if raw is not None]

    def last_batches(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The latest GetCoefficients means per run (for the gauges)."""
        if not run_ids:
            return {}
        raws = self.redis.mget([run_key(i, "last_batch") for i in run_ids])
        return {i: json.loads(raw) for i, raw in zip(run_ids, raws, strict=True) if raw is not None}

    def history(self, run_id: str, *, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Per step, oldest first: step, α, H, H*, mean λ, mean accuracy, the PID terms, and the figures the
        learner reported with H (accuracy by difficulty, response length)."""
        self.get_run(run_id)  # 404 for unknown runs
        pipe = self.redis.pipeline(transaction=False)
        for name in ("steps", "entropy", "batches"):
            pipe.hgetall(run_key(run_id, name))
        rows = history_rows(*pipe.execute())
        ordered = [rows[s] for s in sorted(rows) if s >= since]
        return ordered[:limit]

    def history_between(self, run_id: str, first: int, last: int) -> list[dict[str, Any]]:
        """`history`'s rows of steps `first` to `last` only, read by name: the cost of a few steps, not of the whole
        run (the console's stream reads this at every report). A wide range, or a step answered without an entry in
        `batch_fields` (by a service from before it, or with no prompts), is read in full instead."""

        def in_full() -> list[dict[str, Any]]:
            return [r for r in self.history(run_id, since=first, limit=100_000) if r["step"] <= last]

        if last - first >= STEPS_PER_READ:
            return in_full()
        names = [str(s).encode() for s in range(first, last + 1)]
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in ("steps", "entropy", "batch_fields"):
            pipe.hmget(run_key(run_id, name), names)
        steps, entropy, listed = pipe.execute()
        if any(answer is not None and index is None for answer, index in zip(steps, listed, strict=True)):
            return in_full()
        fields = [f for value in listed if value for f in value.split(b" ")]
        values = self.redis.hmget(run_key(run_id, "batches"), fields) if fields else []

        def present(keys: list[bytes], got: list[bytes | None]) -> dict[bytes, bytes]:
            return {k: v for k, v in zip(keys, got, strict=True) if v is not None}

        rows = history_rows(present(names, steps), present(names, entropy), present(fields, values))
        return [rows[s] for s in sorted(rows)]

    def audit(self, run_id: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest `limit` audit entries, oldest first."""
        self.get_run(run_id)
        raws = self.redis.lrange(run_key(run_id, "audit"), -limit, -1)
        return [json.loads(r) for r in raws]

    # --- the learner's calls
    def start_run(
        self,
        run_id: str,
        strategy: str,
        params: dict[str, float],
        options: dict[str, str],
        *,
        resume: bool,
        actor: str = "learner",
        transport: str = "grpc",
    ) -> tuple[Run, bool]:
        """Create the run, or with `resume` return the stored one (creating it when missing). Returns (run, created)."""
        check_run_id(run_id)
        key = run_key(run_id, "run")
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is not None:
                        if resume:
                            return Run.from_json(raw), False
                        raise RunExists(f"run {run_id!r} exists; pass resume=true to continue it")
                    run = new_run(run_id, strategy, params, options, self._clock())
                    started = {
                        "strategy": {"old": None, "new": run.strategy},
                        "params": {"old": None, "new": run.params},
                    }
                    entry = self._audit_entry(run, actor, "start", transport, started)
                    payload = run.to_json()
                    pipe.multi()
                    pipe.set(key, payload)
                    pipe.sadd(RUNS_KEY, run_id)
                    pipe.rpush(run_key(run_id, "audit"), entry)
                    pipe.publish(run_key(run_id, "changes"), payload)
                    pipe.execute()
                    self._seen[run_id] = payload.encode()
                    return run, True
                except redis.WatchError:
                    self._conflict()

    def get_coefficients(
        self, run_id: str, step: int, accuracies: list[float], *, digest: str | None = None
    ) -> CoefficientsAnswer:
        """α_t and λ_q for step `step`'s prompts; also records the step's mean accuracy and mean λ.

        One round trip in the steady state: α and the weights are computed from the run as this process last saw
        it, and a Lua script stores the step's answer only if the run is still exactly that (else it returns the
        current run, or the step's earlier answer, and the computation is redone with it).
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidValue(f"step: must be a non-negative integer, got {step!r}")
        accs = accuracies if isinstance(accuracies, list) else list(accuracies)
        names = ("run", "steps", "batches", "last_batch", "batch_fields")
        keys = [run_key(check_run_id(run_id), name) for name in names]
        raw_run = self._seen.get(run_id)
        raw_step = None
        if raw_run is None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(keys[0])
            pipe.hget(keys[1], step)
            raw_run, raw_step = pipe.execute()
            if raw_run is None:
                raise RunNotFound(f"run {run_id!r} not found")
            self._seen[run_id] = raw_run
        while True:
            run = self._parse(run_id, raw_run)
            if raw_step is not None:  # the step was answered before: that answer stands
                record = json.loads(raw_step)
                weights = self._weights(record, run, accs)
                batch = self._batch(step, accs, weights, digest)
                if batch:
                    self._add_batch(keys=keys[2:], args=[step, *batch])
                return CoefficientsAnswer(run_id, step, float(record["alpha"]), weights, record["target_entropy"])
            effective = run.effective()
            record = {
                "alpha": run.coefficient(),
                "target_entropy": run.state.target_entropy,
                "strategy": effective.name,
                "params": effective.params,
                "at": self._clock(),
            }
            weights = self._weights(record, run, accs)
            batch = self._batch(step, accs, weights, digest) or ("", "", "")
            reply = self._answer_step(keys=keys, args=[step, raw_run, json.dumps(record, allow_nan=False), *batch])
            if reply[0] == _ANSWERED:
                return CoefficientsAnswer(run_id, step, float(record["alpha"]), weights, record["target_entropy"])
            if reply[0] == _NO_RUN:
                self._seen.pop(run_id, None)
                raise RunNotFound(f"run {run_id!r} not found")
            self._conflict()  # the run changed since this process last saw it, or the step was answered already
            raw_run = self._seen[run_id] = reply[1]
            if reply[0] == _STEP_EXISTS:
                raw_step = reply[2]

    def _weights(self, record: dict[str, Any], run: Run, accs: list[float]) -> list[float]:
        try:  # validates every accuracy (finite, within [0, 1]) before anything is written
            return strategy_for(record["strategy"], record["params"]).prompt_weights(run.state, accs)
        except ValueError as exc:
            raise InvalidValue(f"prompts.{exc}") from None

    @staticmethod
    def _batch(step: int, accs: list[float], weights: list[float], digest: str | None) -> tuple[str, bytes, str] | None:
        """(batches field, its value, last_batch JSON) for a non-empty batch."""
        if not accs:
            return None
        if digest is None:
            digest = hashlib.blake2b(msgpack.packb(accs), digest_size=12).hexdigest()
        n, acc_sum, lam_sum = len(accs), sum(accs), sum(weights)
        last = {"step": step, "mean_accuracy": acc_sum / n, "mean_prompt_weight": lam_sum / n, "num_prompts": n}
        return f"{step}:{digest}", msgpack.packb([n, acc_sum, lam_sum]), json.dumps(last)

    def _parse(self, run_id: str, raw: bytes) -> Run:
        """`Run.from_json(raw)`, reusing the last parse of the same bytes."""
        cached = self._parsed.get(run_id)
        if cached is not None and cached[0] == raw:
            return cached[1]
        run = Run.from_json(raw)
        self._parsed[run_id] = (raw, run)
        return run

    def report_entropy(
        self, run_id: str, step: int, mean_entropy: float, num_tokens: int, figures: StepFigures = NO_FIGURES
    ) -> tuple[Run, bool]:
        """Apply step `step`'s entropy once, and keep its `figures` in the history. Returns (run, applied); applied
        is False for a step applied before (the run is then returned unchanged: the first report of a step stands)."""
        try:
            figures = figures.checked(step)
        except ValueError as exc:
            raise InvalidValue(str(exc)) from None
        applied = False
        entropy_key = run_key(run_id, "entropy")

        def change(run: Run) -> tuple[Run, Callable[[Any], None] | None]:
            nonlocal applied
            new, applied = apply_report(  # a step's record is written once, with the report: no need to WATCH it
                run,
                step,
                mean_entropy,
                num_tokens,
                self._clock(),
                applied=lambda s: self.redis.hexists(entropy_key, s),
                total_steps=figures.total_steps,
            )
            if not applied:
                return run, None
            record = json.dumps(
                {
                    "mean_entropy": float(mean_entropy),
                    "num_tokens": num_tokens,
                    "alpha_used": run.coefficient(),
                    "alpha_next": new.coefficient(),
                    "target_entropy": new.state.target_entropy,
                    "p_term": new.state.p_term,
                    "i_term": new.state.i_term,
                    "d_term": new.state.d_term,
                    "accuracy_by_difficulty": figures.accuracy_by_difficulty,
                    "response_length": figures.response_length,
                    "at": new.updated_at,
                },
                allow_nan=False,
            )
            return new, lambda p: p.hset(run_key(run_id, "entropy"), step, record)

        run = self._mutate(run_id, change)
        return run, applied

    # --- people's calls
    def override(self, run_id: str, change: Override, *, actor: str, transport: str) -> tuple[Run, dict[str, Any]]:
        """Apply an override and audit it (who, when, old → new, reason). Returns (run, audit entry)."""
        entry: dict[str, Any] = {}

        def mutate(run: Run) -> tuple[Run, Callable[[Any], None] | None]:
            new, changes = apply_override(run, change, self._clock())
            action = "release" if change.release and not _sets_anything(change) else "override"
            entry.clear()
            entry.update(json.loads(self._audit_entry(new, actor, action, transport, changes, change.reason)))
            payload = json.dumps(entry, allow_nan=False)
            return new, lambda p: p.rpush(run_key(run_id, "audit"), payload)

        run = self._mutate(run_id, mutate, always_write=True)
        return run, entry

    # --- change notices
    def watch(
        self,
        run_id: str,
        *,
        poll_seconds: float,
        keep_going: Callable[[], bool],
        idle_ticks: bool = False,
    ) -> Iterator[Run | None]:
        """The run now, then every new version, until `keep_going()` is false (checked at least every poll). With
        `idle_ticks`, also None after each poll that found no change (a stream's cue to send a keep-alive)."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(run_key(check_run_id(run_id), "changes"))
            run = self.get_run(run_id)
            last = run.version
            yield run
            while keep_going():
                try:
                    msg = pubsub.get_message(timeout=poll_seconds)
                    run = Run.from_json(msg["data"]) if msg is not None else self.get_run(run_id)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("watch %s: redis unavailable (%s); retrying", run_id, exc)
                    time.sleep(poll_seconds)
                    continue
                if run.version > last:
                    last = run.version
                    yield run
                elif idle_ticks:
                    yield None
        finally:
            pubsub.close()

    # --- internals
    def _mutate(
        self,
        run_id: str,
        change: Callable[[Run], tuple[Run, Callable[[Any], None] | None]],
        *,
        always_write: bool = False,
    ) -> Run:
        """WATCH the record, apply `change`, write record + extra writes + notice in MULTI; retry on conflict."""
        key = run_key(check_run_id(run_id), "run")
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise RunNotFound(f"run {run_id!r} not found")
                    old = Run.from_json(raw)
                    new, extra = change(old)
                    changed = new.version != old.version
                    if not changed and not (always_write and extra is not None):
                        pipe.unwatch()
                        return old
                    pipe.multi()
                    if changed:
                        payload = new.to_json()
                        pipe.set(key, payload)
                        pipe.publish(run_key(run_id, "changes"), payload)
                    if extra is not None:
                        extra(pipe)
                    pipe.execute()
                    if changed:
                        self._seen[run_id] = payload.encode()
                    return new
                except redis.WatchError:
                    self._conflict()

    def _conflict(self) -> None:
        with self._conflicts_lock:
            self.conflicts += 1

    def _audit_entry(
        self, run: Run, actor: str, action: str, transport: str, changes: dict[str, Any], reason: str = ""
    ) -> str:
        now = self._clock()
        return json.dumps(
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
                "ts": now,
                "actor": actor,
                "action": action,
                "transport": transport,
                "reason": reason,
                "changes": changes,
                "version": run.version,
            },
            allow_nan=False,
        )


def history_rows(
    steps_raw: dict[bytes, bytes], entropy_raw: dict[bytes, bytes], batches_raw: dict[bytes, bytes]
) -> dict[int, dict[str, Any]]:
    """The history rows by step from the fields of a run's `steps`, `entropy` and `batches` hashes."""
    rows: dict[int, dict[str, Any]] = {}

    def row(step: int) -> dict[str, Any]:
        return rows.setdefault(step, {"step": step, **EMPTY_ROW})

    for k, v in steps_raw.items():
        rec = json.loads(v)
        r = row(int(k))
        r["alpha"] = rec["alpha"]
        r["target_entropy"] = rec["target_entropy"]
    for k, v in entropy_raw.items():
        rec = json.loads(v)
        r = row(int(k))
        if r["alpha"] is None:
            r["alpha"] = rec["alpha_used"]
        r["mean_entropy"] = rec["mean_entropy"]
        r["num_tokens"] = rec["num_tokens"]
        r["alpha_next"] = rec["alpha_next"]
        for key in ("p_term", "i_term", "d_term", "accuracy_by_difficulty", "response_length"):
            r[key] = rec.get(key)  # records written before these fields have none
        if rec["target_entropy"] is not None:
            r["target_entropy"] = rec["target_entropy"]  # known once the step anchored H_0
    sums: dict[int, list[float]] = {}
    for k, v in batches_raw.items():
        step = int(k.split(b":", 1)[0])
        n, acc, lam = msgpack.unpackb(v)
        s = sums.setdefault(step, [0, 0.0, 0.0])
        s[0] += n
        s[1] += acc
        s[2] += lam
    for step, (n, acc, lam) in sums.items():
        r = row(step)
        r["num_prompts"] = n
        if n:
            r["mean_accuracy"] = acc / n
            r["mean_prompt_weight"] = lam / n
    return rows


EMPTY_ROW: dict[str, Any] = {
    "alpha": None,
    "mean_entropy": None,
    "target_entropy": None,
    "mean_prompt_weight": None,
    "mean_accuracy": None,
    "num_prompts": 0,
    "num_tokens": None,
    "alpha_next": None,
    "p_term": None,
    "i_term": None,
    "d_term": None,
    "accuracy_by_difficulty": None,
    "response_length": None,
}


def _sets_anything(change: Override) -> bool:
    return change.is_empty() is False and any(
        (
            change.alpha is not None,
            change.target_entropy is not None,
            bool(change.params),
            bool(change.options),
            change.strategy is not None,
            change.frozen is not None,
        )
    )
