"""Redis-streams transport between the services (DESIGN §3): consumer groups, reclaim, dead letters, back-pressure.

    client = StreamClient("redis://127.0.0.1:6379/0", run_id="r1")
    client.publish(ROLLOUT_GENERATED, sample, max_lag=1000, lag_group="reward", timeout=30)
    consumer = client.consumer(ROLLOUT_GENERATED, "reward", "reward-0", GeneratedSample)
    for d in consumer.read(count=16):
        ...
    consumer.publish_and_ack(ROLLOUT_SCORED, [scored...], [d.id...], sources=[d.id...])

Stream names are the suffixes from `aerplane.common.messages` (`ROLLOUT_GENERATED`, ...); the client keys them
by run (`aerplane:{run_id}:{name}`). Each entry has one field `d`: one record's msgpack bytes, or a group of
records that belong together (`publish_group`; `publish_and_ack` groups the records of each source entry), so a
prompt's G samples cost one XADD, one entry to read and one XACK. A consumer gets one `Delivery` per record; those
of a group entry share its id and are acked together. Lag, pending and `maxlen` count entries.

Delivery guarantee — at-least-once processing, at-most-once publication per source entry:
- A message is acked only together with its results: `publish_and_ack` runs one Lua script (atomic like
  MULTI/EXEC) that XACKs the source entries and XADDs the results. A crash before it leaves the entry pending (it is
  reclaimed with XAUTOCLAIM after `claim_idle_ms` and processed again); a crash after it leaves nothing to redo.
  Nothing is ever published without its source being acked, or acked without its results being published.
- The script is conditional: a result is added only if XACK of its source entry (`sources`) removed that entry from
  the group's pending list in the same script. When a slow consumer and the one that reclaimed its entries both
  finish, or a call is retried after a lost reply, the second publication is dropped — results of one source entry
  reach the output stream once.
- Plain `publish` (a producer with no source entry) retried after a lost reply can add a record twice; so can a
  producer that crashes and re-publishes. Every record carries (run, step, prompt_id, sample_index,
  policy_version), and consumers that count things (the learner) de-duplicate on that key.

Long work: `Consumer.extend(ids)` resets the idle time of entries still being processed (a heartbeat), so
`claim_idle_ms` can stay short — it bounds how long a dead consumer's entries wait — while a batch takes longer.

Poison messages: a payload that does not decode (`MessageError`: malformed, wrong kind, oversized) goes to the
dead-letter stream at once; an entry delivered more than `max_deliveries` times (its consumer keeps dying on it) goes
there before its next processing. Dead letters (`aerplane:{run_id}:deadletter`) keep the original bytes `d`, the
source stream and id, the group, consumer, delivery count and reason; moving one is atomic with its ack.

Memory: every consumer trims its input stream by what every group on it has acknowledged (`XTRIM MINID`, at most
every `trim_every_s` seconds, after an ack): entries older than each group's oldest pending entry (or, with none
pending, its last-delivered entry) go, so a stream holds about its unfinished backlog rather than `maxlen`
entries (docs/operations.md has the arithmetic). A stream without groups is left alone. Streams are also capped with
`XADD MAXLEN ~ maxlen`, the backstop for a group that stops reading. That cap can drop entries a slow group has not
read, so producers apply back-pressure: `publish(..., max_lag=N, lag_group=G)` waits while G's backlog (entries not
yet delivered to G plus entries delivered but not acked) exceeds N; keep N well below `maxlen`.

Redis unavailable (restart, network blip): every call retries on ConnectionError/TimeoutError with exponential
backoff (0.05 s doubling to 2 s) for up to `reconnect_timeout` seconds, then raises. Acked data is as durable as
the server's persistence (AOF for `aerplane up`); a group lost with an emptied server is recreated from id 0.
Requires Redis ≥ 6.2 (XAUTOCLAIM); lag figures use Redis 7's XINFO `lag` when it is known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aerplane.common.closing import Closing
from aerplane.common.messages import (
    DEAD_LETTER,
    MessageError,
    decode_entry,
    entry_chunks,
    entry_payload,
    stream_key,
)
from aerplane.common.redis_client import connect
from aerplane.common.retry import REDIS_BACKOFF, call_with_retry

log = logging.getLogger(__name__)

PAYLOAD_FIELD = b"d"
MAX_BLOCK_MS = 20_000
_SOCKET_TIMEOUT_S = 30.0  # above MAX_BLOCK_MS so a blocking read never times out on its own

T = TypeVar("T")

# KEYS[1] = output stream, KEYS[2] = source stream.
# ARGV = group, maxlen, n_ids, id_1..id_n, then (source_index, payload) pairs. source_index i > 0: publish only if
# XACK of id_i removed it just now; 0: publish if any id was removed (or there are no ids). Returns, per pair, the
# new entry id or '' (not published).
_PUBLISH_AND_ACK = """
local group = ARGV[1]
local maxlen = ARGV[2]
local n = tonumber(ARGV[3])
local acked = {}
local any = (n == 0)
for i = 1, n do
  local r = redis.call('XACK', KEYS[2], group, ARGV[3 + i])
  acked[i] = (r == 1)
  if r == 1 then any = true end
end
local out = {}
local j = 4 + n
while j <= #ARGV do
  local src = tonumber(ARGV[j])
  if (src == 0 and any) or (src > 0 and acked[src]) then
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'd', ARGV[j + 1])
  else
    out[#out + 1] = ''
  end
  j = j + 2
end
return out
"""

# KEYS[1] = stream; ARGV = group, consumer, ids. Reset the idle time of the ids this consumer still owns (XCLAIM
# JUSTID does not count a delivery); ids another consumer has reclaimed meanwhile are left alone.
_EXTEND = """
local kept = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept[#kept + 1] = ARGV[i]
  end
end
return kept
"""

# KEYS[1] = stream; ARGV = exclusive start id, chunk size. Returns {count, last id seen}.
_COUNT_RANGE = """
local r = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
if #r == 0 then return {0, ''} end
return {#r, r[#r][1]}
"""
_COUNT_CHUNK = 10_000

# KEYS[1] = stream. Trim what every consumer group has acknowledged: entries older than the smallest, over the
# groups, of the oldest pending id (or, with nothing pending, the last-delivered id). Returns the entries removed.
_TRIM_ACKED = """
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok or #groups == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local floor, floor_ms, floor_seq = nil, nil, nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local point = info['last-delivered-id']
  if tonumber(info['pending']) > 0 then
    point = redis.call('XPENDING', KEYS[1], info['name'])[2]
  end
  local ms, seq = parse(point)
  if floor == nil or ms < floor_ms or (ms == floor_ms and seq < floor_seq) then
    floor, floor_ms, floor_seq = point, ms, seq
  end
end
if floor_ms == 0 and floor_seq == 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded record handed to a consumer: `id` is its stream entry, `deliveries` counts this delivery of the
    entry (1 = first) and `entry_records` how many records the entry holds (a group entry: the deliveries of one
    read that share an id; they are acked together)."""

    id: str
    record: object
    deliveries: int
    entry_records: int = 1


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group's position on a stream: `lag` undelivered entries, `pending` delivered but not acked."""

    lag: int
    pending: int

    @property
    def backlog(self) -> int:
        return self.lag + self.pending


def _redis_unavailable(exc: BaseException) -> bool:
    """A restart or a network blip (retry), not a refusal: a wrong password is a ConnectionError subclass too."""
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError) and not isinstance(
        exc, redis.AuthenticationError
    )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StreamClient(Closing):
    """A run's streams on one Redis: publish with back-pressure, consumer groups, lag and dead-letter queries.

    Thread-safe (redis-py's connection pool); a `Consumer` is not — give each thread its own.
    """

    def __init__(
        self,
        redis_url: str,
        run_id: str,
        *,
        maxlen: int = 20_000,
        reconnect_timeout: float = 60.0,
    ) -> None:
        _require(bool(run_id), "run_id: must not be empty")
        _require(maxlen >= 1, f"maxlen: must be positive, got {maxlen}")
        _require(reconnect_timeout >= 0, f"reconnect_timeout: must be >= 0, got {reconnect_timeout}")
        self.run_id = run_id
        self.maxlen = maxlen
        self.reconnect_timeout = reconnect_timeout
        self.reconnects = 0  # connection errors retried, for metrics
        # redis-py's own retries are off: `_call` owns the policy, so a restart of any length is handled one way.
        self.redis = connect(
            redis_url,
            socket_timeout=_SOCKET_TIMEOUT_S,
            socket_connect_timeout=5.0,
            socket_keepalive=True,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 0),
        )
        self._publish_and_ack = self.redis.register_script(_PUBLISH_AND_ACK)
        self._extend = self.redis.register_script(_EXTEND)
        self._count_range = self.redis.register_script(_COUNT_RANGE)
        self._trim_acked = self.redis.register_script(_TRIM_ACKED)

    # --- plumbing -------------------------------------------------------------------------------------------------

    def key(self, stream: str) -> str:
        """The Redis key of a stream name (a key already under this run passes through)."""
        if not stream:
            raise ValueError("stream: must not be empty")
        prefix = stream_key(self.run_id, "")
        return stream if stream.startswith(prefix) else stream_key(self.run_id, stream)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one Redis operation, retrying connection failures (common.retry's policy) for `reconnect_timeout`."""
        try:
            return call_with_retry(
                lambda: fn(*args, **kwargs),
                retryable=_redis_unavailable,
                timeout_s=self.reconnect_timeout,
                backoff=REDIS_BACKOFF,
                what="redis",
                log=log,
                on_retry=self._count_reconnect,
            )
        except redis.AuthenticationError as exc:  # a wrong or missing password: waiting will not fix it
            raise redis.AuthenticationError(
                f"{exc} (the password comes from the URL, AERPLANE_REDIS_PASSWORD_FILE or AERPLANE_REDIS_PASSWORD)"
            ) from None

    def _count_reconnect(self, _exc: BaseException) -> None:
        self.reconnects += 1

    def ping(self) -> bool:
        """One quick round trip, no retries (for /readyz)."""
        try:
            return bool(self.redis.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def close(self) -> None:
        self.redis.close()

    # --- producing ------------------------------------------------------------------------------------------------

    def publish(
        self,
        stream: str,
        record: Any,
        *,
        max_lag: int | None = None,
        lag_group: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """XADD one record (MAXLEN ~). With `max_lag`, first wait while `lag_group`'s backlog on `stream` exceeds it.

        Raises TimeoutError when the backlog stays too high for `timeout` seconds (None: wait indefinitely).
        """
        if max_lag is not None:
            self.wait_for_backlog(stream, lag_group, max_lag, timeout=timeout)
        return self._xadd_payloads(stream, [record.encode()])[0]

    def publish_group(self, stream: str, records: Sequence[Any]) -> list[str]:
        """XADD records that belong together (a prompt's samples) as one group entry (more only past
        MAX_MESSAGE_BYTES); returns the entry ids."""
        return self._xadd_payloads(stream, [entry_payload(c) for c in entry_chunks([r.encode() for r in records])])

    def publish_many(self, stream: str, records: Sequence[Any]) -> list[str]:
        """XADD several records, one entry each, in one round trip (a transaction: all or none)."""
        return self._xadd_payloads(stream, [r.encode() for r in records])  # every record validated before sending

    def _xadd_payloads(self, stream: str, payloads: list[bytes]) -> list[str]:
        """XADD each payload as an entry (MAXLEN ~) in one round trip: a lone one as a plain XADD, several in
        MULTI/EXEC (all or none)."""
        key = self.key(stream)

        def xadd(target: Any, payload: bytes) -> Any:
            return target.xadd(key, {PAYLOAD_FIELD: payload}, maxlen=self.maxlen, approximate=True)

        if len(payloads) == 1:
            return [_s(self._call(xadd, self.redis, payloads[0]))]

        def send() -> list[Any]:
            pipe = self.redis.pipeline(transaction=True)
            for payload in payloads:
                xadd(pipe, payload)
            return pipe.execute()

        return [_s(i) for i in self._call(send)] if payloads else []

    def wait_for_backlog(self, stream: str, group: str | None, max_lag: int, *, timeout: float | None = None) -> None:
        """Block while `group`'s backlog on `stream` is above `max_lag` (the producer side of back-pressure)."""
        if group is None:
            raise ValueError("lag_group: required with max_lag (the downstream consumer group to wait for)")
        if max_lag < 0:
            raise ValueError(f"max_lag: must be >= 0, got {max_lag}")
        if max_lag >= self.maxlen:
            raise ValueError(f"max_lag: {max_lag} must be below the stream cap maxlen={self.maxlen}")
        start = time.monotonic()
        delay = 0.01
        while True:
            backlog = self.group_info(stream, group).backlog
            if backlog <= max_lag:
                return
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise TimeoutError(
                    f"back-pressure: group {group!r} on {self.key(stream)} has {backlog} unfinished entries "
                    f"(max_lag {max_lag}) after waiting {waited:.1f}s"
                )
            pause = delay if timeout is None else min(delay, max(0.0, timeout - waited))
            time.sleep(pause)
            delay = min(delay * 2, 0.5)

    # --- consuming ------------------------------------------------------------------------------------------------

    def consumer(
        self,
        stream: str,
        group: str,
        consumer: str,
        record_type: type | None = None,
        *,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        trim_every_s: float = 5.0,
    ) -> Consumer:
        """A member of consumer group `group` on `stream`; the group is created (from id 0, MKSTREAM) if missing."""
        return Consumer(
            self,
            stream,
            group,
            consumer,
            record_type,
            claim_idle_ms=claim_idle_ms,
            max_deliveries=max_deliveries,
            trim_every_s=trim_every_s,
        )

    def consumer_for(self, stream: str, record_type: type, settings: Any) -> Consumer:
        """`consumer` with a service's consumer settings: its `group`, `consumer` name, `claim_idle_ms` and
        `max_deliveries` (the fields reward and generation share)."""
        return self.consumer(
            stream,
            settings.group,
            settings.consumer,
            record_type,
            claim_idle_ms=settings.claim_idle_ms,
            max_deliveries=settings.max_deliveries,
        )

    def ensure_group(self, stream: str, group: str, *, start: str = "0") -> None:
        """Create `group` on `stream` if it does not exist yet, reading from `start`: id 0 (the beginning, the
        default) or `$` (only entries added from now on)."""
        try:
            self._call(self.redis.xgroup_create, self.key(stream), group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def drop_group(self, stream: str, group: str) -> None:
        """Delete `group` from `stream` with its pending entries (e.g. a one-off reader that is done)."""
        self._call(self.redis.xgroup_destroy, self.key(stream), group)

    # --- observing ------------------------------------------------------------------------------------------------

    def length(self, stream: str) -> int:
        return int(self._call(self.redis.xlen, self.key(stream)))

    def group_info(self, stream: str, group: str, *, retry: bool = True) -> GroupInfo:
        """`group`'s lag and pending count on `stream`; a group not created yet lags by the whole stream. With
        `retry=False` a connection error is raised at once (a metrics scrape must not wait out a Redis restart)."""
        key = self.key(stream)
        try:
            groups = self._call(self.redis.xinfo_groups, key) if retry else self.redis.xinfo_groups(key)
        except redis.ResponseError as exc:  # no such key
            if "no such key" in str(exc).lower():
                return GroupInfo(lag=0, pending=0)
            raise
        for g in groups:
            if _s(g["name"]) != group:
                continue
            pending = int(g["pending"])
            lag = g.get("lag")
            if lag is None:  # Redis < 7, or not computable after trimming/deletion: count past last-delivered-id
                lag = self._count_after(key, _s(g["last-delivered-id"]))
            return GroupInfo(lag=int(lag), pending=pending)
        return GroupInfo(lag=self.length(stream), pending=0)

    def _count_after(self, key: str, last_id: str) -> int:
        """Entries after `last_id`, counted on the server in chunks (no payloads travel, Redis is never held long)."""
        total, start = 0, f"({last_id}"
        while True:
            n, last = self._call(self._count_range, keys=[key], args=[start, _COUNT_CHUNK])
            total += int(n)
            if int(n) < _COUNT_CHUNK:
                return total
            start = f"({_s(last)}"

    def trim_acknowledged(self, stream: str) -> int:
        """Remove the entries of `stream` that every consumer group has acknowledged; returns how many went.
        A stream without groups keeps everything (a group created later may still want it)."""
        return int(self._call(self._trim_acked, keys=[self.key(stream)], args=[]))

    def lag(self, stream: str, group: str) -> int:
        """Entries of `stream` not yet delivered to `group`."""
        return self.group_info(stream, group).lag

    def pending(self, stream: str, group: str) -> int:
        """Entries delivered to `group` and not acked yet."""
        return self.group_info(stream, group).pending

    def entries(self, stream: str, *, count: int, newest: bool = False) -> list[tuple[str, bytes]]:
        """Up to `count` (entry id, payload) pairs of `stream` — the oldest first, or with `newest` the newest first —
        outside any consumer group (nothing is delivered or acked). Decode payloads with `messages.decode_entry` (a
        group entry holds several records)."""
        key = self.key(stream)
        if newest:
            rows = self._call(self.redis.xrevrange, key, count=count)
        else:
            rows = self._call(self.redis.xrange, key, count=count)
        return [(_s(entry_id), fields.get(PAYLOAD_FIELD, b"")) for entry_id, fields in rows]

    def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """The oldest `count` dead letters of this run, decoded to plain dicts (`d` stays bytes)."""
        rows = self._call(self.redis.xrange, self.key(DEAD_LETTER), count=count)
        out = []
        for entry_id, fields in rows:
            item: dict[str, Any] = {"dead_letter_id": _s(entry_id)}
            for k, v in fields.items():
                name = _s(k)
                item[name] = v if name == "d" else _s(v)
            out.append(item)
        return out


class Consumer:
    """One member of a consumer group: read (reclaiming stale entries first), ack, publish results atomically."""

    def __init__(
        self,
        client: StreamClient,
        stream: str,
        group: str,
        name: str,
        record_type: type | None,
        *,
        claim_idle_ms: int,
        max_deliveries: int,
        trim_every_s: float = 5.0,
    ) -> None:
        _require(bool(group and name), "consumer group and consumer name must not be empty")
        _require(claim_idle_ms >= 1, f"claim_idle_ms: must be positive, got {claim_idle_ms}")
        _require(max_deliveries >= 1, f"max_deliveries: must be at least 1, got {max_deliveries}")
        self.client = client
        self.stream = stream
        self.key = client.key(stream)
        self.group = group
        self.name = name
        self.record_type = record_type
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.trim_every_s = trim_every_s  # how often an ack also trims what every group acknowledged (0: every ack)
        self._last_trim = time.monotonic()
        self.trimmed = 0  # entries this consumer's trims removed
        self.dead_lettered = 0  # entries this consumer moved to the dead-letter stream
        self.duplicates_dropped = 0  # results not published because their source was already acked elsewhere
        self._claim_cursor = "0-0"
        self._claim_every_s = min(max(claim_idle_ms / 2000, 0.05), 5.0)
        self._last_claim = float("-inf")
        self._own_history_checked = False
        client.ensure_group(stream, group)

    # --- reading --------------------------------------------------------------------------------------------------

    def read(self, count: int = 16, block_ms: int = 1000) -> list[Delivery]:
        """Up to `count` deliveries: this consumer's own leftovers (first call), reclaimed idle entries, then new ones.

        Blocks up to `block_ms` for new entries (0: not at all). Undecodable entries and ones delivered more than
        `max_deliveries` times are dead-lettered and acked here, never returned. Call again only after acking (or
        publishing the results of) the previous batch, or giving up on it: its entries are then reclaimed after
        `claim_idle_ms`.
        """
        if count < 1:
            raise ValueError(f"count: must be positive, got {count}")
        if not 0 <= block_ms <= MAX_BLOCK_MS:
            raise ValueError(f"block_ms: must be in [0, {MAX_BLOCK_MS}], got {block_ms}")
        if not self._own_history_checked:
            # A restarted consumer with the same name gets its unacked entries back at once.
            entries = self._xreadgroup("0", count, None)
            self._own_history_checked = len(entries) < count
            if entries:
                return self._deliver(entries, redelivered=True)
        now = time.monotonic()
        if self._claim_cursor != "0-0" or now - self._last_claim >= self._claim_every_s:
            self._last_claim = now
            claimed = self._autoclaim(count)
            if claimed:
                return self._deliver(claimed, redelivered=True)
        entries = self._xreadgroup(">", count, block_ms or None)  # BLOCK 0 would mean forever
        return self._deliver(entries, redelivered=False)

    def _xreadgroup(self, start: str, count: int, block_ms: int | None) -> list[tuple[Any, Any]]:
        def call() -> Any:
            return self.client.redis.xreadgroup(self.group, self.name, {self.key: start}, count=count, block=block_ms)

        resp = self._with_group(call)
        if not resp:
            return []
        if isinstance(resp, dict):  # RESP3
            return list(next(iter(resp.values()))[0]) if resp else []
        return list(resp[0][1])

    def _autoclaim(self, count: int) -> list[tuple[Any, Any]]:
        def call() -> Any:
            return self.client.redis.xautoclaim(
                self.key, self.group, self.name, self.claim_idle_ms, start_id=self._claim_cursor, count=count
            )

        resp = self._with_group(call)
        self._claim_cursor = _s(resp[0])
        claimed = list(resp[1])
        if claimed:
            log.info("%s/%s reclaimed %d idle entries from %s", self.group, self.name, len(claimed), self.key)
        return claimed

    def _with_group(self, fn: Callable[[], T]) -> T:
        """Run `fn`, recreating the group once if the server lost it (restarted without persistence)."""
        try:
            return self.client._call(fn)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("group %s on %s is gone (Redis restarted empty?); recreating it", self.group, self.key)
            self.client.ensure_group(self.stream, self.group)
            self._claim_cursor = "0-0"
            return self.client._call(fn)

    def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        rows = self.client._call(
            self.client.redis.xpending_range,
            self.key,
            self.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) + 1000,
            consumername=self.name,
        )
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    def _deliver(self, entries: list[tuple[Any, Any]], *, redelivered: bool) -> list[Delivery]:
        entries = [(_s(i), f) for i, f in entries]
        deleted = [i for i, f in entries if f is None]  # trimmed or XDELed while pending
        if deleted:
            self.ack(*deleted)
        entries = [(i, f) for i, f in entries if f is not None]
        if not entries:
            return []
        counts = self._delivery_counts(sorted(i for i, _ in entries)) if redelivered else {}
        out: list[Delivery] = []
        for entry_id, fields in entries:
            deliveries = counts.get(entry_id, 1)
            payload = fields.get(PAYLOAD_FIELD) if isinstance(fields, dict) else None
            if deliveries > self.max_deliveries:
                reason = f"delivered {deliveries} times (max_deliveries {self.max_deliveries})"
                self._dead_letter(entry_id, payload, reason, deliveries)
                continue
            if payload is None:
                self._dead_letter(entry_id, None, "payload: missing field 'd'", deliveries)
                continue
            try:
                records = decode_entry(payload, expect=self.record_type)
            except MessageError as exc:
                self._dead_letter(entry_id, payload, str(exc), deliveries)
                continue
            out += [Delivery(entry_id, record, deliveries, len(records)) for record in records]
        return out

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a delivery this consumer cannot process (e.g. a request too long for the model) to the dead-letter
        stream with `reason`, acking it in the same transaction. Only for a record with an entry of its own: acking
        a group entry would drop its other records (ValueError)."""
        if delivery.entry_records != 1:
            raise ValueError(f"dead_letter: entry {delivery.id} holds {delivery.entry_records} records, not one")
        self._dead_letter(delivery.id, delivery.record.encode(), reason, delivery.deliveries)  # type: ignore[attr-defined]

    def _dead_letter(self, entry_id: str, payload: bytes | None, reason: str, deliveries: int) -> None:
        log.warning("dead-lettering %s %s: %s", self.key, entry_id, reason)
        fields = {
            "d": payload if payload is not None else b"",
            "stream": self.key,
            "id": entry_id,
            "group": self.group,
            "consumer": self.name,
            "deliveries": str(deliveries),
            "reason": reason[:2000],
            "time": f"{time.time():.3f}",
        }
        dlq = self.client.key(DEAD_LETTER)

        def send() -> list[Any]:
            pipe = self.client.redis.pipeline(transaction=True)
            pipe.xack(self.key, self.group, entry_id)
            pipe.xadd(dlq, fields, maxlen=self.client.maxlen, approximate=True)
            return pipe.execute()

        acked, _ = self.client._call(send)
        if not acked:  # someone else acked it meanwhile; our dead letter is then a harmless extra record
            log.info("%s was already acked when dead-lettered", entry_id)
        self.dead_lettered += 1

    # --- finishing ------------------------------------------------------------------------------------------------

    def extend(self, *ids: str) -> list[str]:
        """Heartbeat for long work: reset the idle time of `ids` so no other consumer reclaims them yet.

        Returns the ids this consumer still owns; the others were reclaimed already (their results will still be
        published only once, see `publish_and_ack`).
        """
        ids = tuple(dict.fromkeys(ids))  # the deliveries of a group entry share its id
        if not ids:
            return []
        kept = self.client._call(self.client._extend, keys=[self.key], args=[self.group, self.name, *ids])
        return [_s(i) for i in kept]

    def ack(self, *ids: str) -> None:
        """XACK entries whose work is done and needs no result on another stream."""
        if ids:
            self.client._call(self.client.redis.xack, self.key, self.group, *ids)
            self._maybe_trim()

    def _maybe_trim(self) -> None:
        now = time.monotonic()
        if now - self._last_trim >= self.trim_every_s:
            self._last_trim = now
            self.trimmed += self.client.trim_acknowledged(self.stream)

    def publish_and_ack(
        self,
        out_stream: str,
        records: Sequence[Any],
        ack_ids: Sequence[str],
        *,
        sources: Sequence[str] | None = None,
    ) -> list[str]:
        """Atomically XACK `ack_ids` and XADD `records` to `out_stream`; returns the new entry ids.

        `sources[i]` names the entry of `ack_ids` that record i was computed from: record i is added only if that
        entry was still pending (so a result is published once even when two consumers processed its source).
        Without `sources` the records are one group, added if any of `ack_ids` was still pending.

        The records of one source travel as one group entry (`StreamClient.publish_group`). Returns the id of the
        entry that holds each published record, one per record, grouped by source (records of one source in their
        order); its length is the number of records published.
        """
        if sources is not None and len(sources) != len(records):
            raise ValueError(f"sources: {len(sources)} ids for {len(records)} records")
        ids = list(dict.fromkeys(str(i) for i in ack_ids))  # the deliveries of a group entry share its id
        position = {entry_id: n + 1 for n, entry_id in enumerate(ids)}
        by_source: dict[int, list[bytes]] = {}
        for n, record in enumerate(records):
            if sources is None:
                src = 0
            else:
                src = position.get(str(sources[n]), -1)
                if src < 0:
                    raise ValueError(f"sources[{n}]: {sources[n]!r} is not one of ack_ids")
            by_source.setdefault(src, []).append(record.encode())
        args: list[Any] = [self.group, self.client.maxlen, len(ids), *ids]
        sizes: list[int] = []  # records per entry, in the script's pair order
        for src, payloads in by_source.items():
            for chunk in entry_chunks(payloads):
                args += [src, entry_payload(chunk)]
                sizes.append(len(chunk))
        out_key = self.client.key(out_stream)
        added = self.client._call(self.client._publish_and_ack, keys=[out_key, self.key], args=args)
        self._maybe_trim()
        published = [entry_id for entry_id, size in zip(added, sizes, strict=True) if entry_id for _ in range(size)]
        dropped = len(records) - len(published)
        if dropped:
            self.duplicates_dropped += dropped
            log.info("%d results not published: their source entries were already acked", dropped)
        return [_s(i) for i in published]
