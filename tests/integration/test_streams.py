"""The Redis-streams transport against a real redis-server: groups, atomic publish+ack, reclaim, dead letters,
caps, back-pressure and surviving a Redis restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from service_support import generated_sample

from aerplane.common import messages as m
from aerplane.common import streams
from aerplane.common.redis_client import CommandPacker
from aerplane.common.redis_server import LocalRedis
from aerplane.common.streams import Delivery, StreamClient

RUN = "t1"


def sample(i: int, *, step: int = 0, text: str | None = None) -> m.GeneratedSample:
    return generated_sample(i, run=RUN, step=step, text=text, response=(3, 4), logprobs=(-0.5, -0.25))


def scored(g: m.GeneratedSample) -> m.ScoredSample:
    return m.ScoredSample.from_generated(g, 1.0, "match")


@pytest.fixture
def client(redis_url: str) -> Iterator[StreamClient]:
    c = StreamClient(redis_url, RUN, maxlen=10_000)
    yield c
    c.close()


def read_all(consumer, want: int, *, timeout: float = 10.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += consumer.read(count=100, block_ms=100)
    return got


def test_a_group_started_at_dollar_sees_only_new_entries_and_can_be_dropped(
    client: StreamClient, redis_url: str
) -> None:
    client.publish_many(m.ROLLOUT_SCORED, [scored(sample(i)) for i in range(3)])
    client.ensure_group(m.ROLLOUT_SCORED, "eval", start="$")
    fresh = client.publish(m.ROLLOUT_SCORED, scored(sample(9)))
    c = client.consumer(m.ROLLOUT_SCORED, "eval", "launcher", m.ScoredSample)
    got = read_all(c, 1, timeout=1.0)
    assert [d.id for d in got] == [fresh] and got[0].record.prompt_id == "p9"
    client.drop_group(m.ROLLOUT_SCORED, "eval")
    groups = redis.Redis.from_url(redis_url).xinfo_groups(client.key(m.ROLLOUT_SCORED))
    assert [g["name"] for g in groups] == []


def test_round_trip_group_sees_entries_published_before_it_existed(client: StreamClient) -> None:
    ids = [client.publish(m.ROLLOUT_GENERATED, sample(i)) for i in range(3)]
    ids += client.publish_many(m.ROLLOUT_GENERATED, [sample(i) for i in range(3, 6)])
    assert client.key(m.ROLLOUT_GENERATED) == f"aerplane:{RUN}:rollout:generated"
    assert client.lag(m.ROLLOUT_GENERATED, "reward") == 6  # no group yet: the whole stream

    c = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
    got = read_all(c, 6)
    assert [d.id for d in got] == ids
    assert [d.record.prompt_id for d in got] == [f"p{i}" for i in range(6)]
    assert all(d.deliveries == 1 for d in got)
    assert client.group_info(m.ROLLOUT_GENERATED, "reward").pending == 6
    assert client.lag(m.ROLLOUT_GENERATED, "reward") == 0
    c.ack(*ids[:2])
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 4
    assert c.read(count=10, block_ms=0) == []


def test_publish_and_ack_is_atomic_and_publishes_each_result_once(client: StreamClient) -> None:
    client.publish_many(m.ROLLOUT_GENERATED, [sample(i) for i in range(4)])
    a = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample, claim_idle_ms=100)
    got = read_all(a, 4)
    ids = [d.id for d in got]
    # Consumer `a` stalls; `b` reclaims its entries after the idle timeout and finishes half of them first.
    time.sleep(0.2)
    b = client.consumer(m.ROLLOUT_GENERATED, "reward", "b", m.GeneratedSample, claim_idle_ms=100)
    again = b.read(count=10, block_ms=0)
    assert sorted(d.id for d in again) == sorted(ids)
    assert all(d.deliveries == 2 for d in again)
    first = b.publish_and_ack(m.ROLLOUT_SCORED, [scored(d.record) for d in again[:2]], ids[:2], sources=ids[:2])
    assert len(first) == 2
    # The stalled consumer wakes up and publishes all four: only the two nobody published yet go out.
    late = a.publish_and_ack(m.ROLLOUT_SCORED, [scored(d.record) for d in got], ids, sources=ids)
    assert len(late) == 2 and a.duplicates_dropped == 2
    # `b` finishing the rest publishes nothing more; a retried call after a lost reply is a no-op too.
    assert b.publish_and_ack(m.ROLLOUT_SCORED, [scored(d.record) for d in again[2:]], ids[2:], sources=ids[2:]) == []
    out = client.consumer(m.ROLLOUT_SCORED, "learner", "l", m.ScoredSample)
    keys = [d.record.key for d in read_all(out, 4)]
    assert sorted(keys) == sorted(sample(i).key for i in range(4))
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 0


def test_publish_and_ack_groups_and_validation(client: StreamClient) -> None:
    client.publish(m.ROLLOUT_GENERATED, sample(0))
    c = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
    (d,) = read_all(c, 1)
    # One source, several results (a generation worker's G samples): published together if the source was pending.
    results = [scored(sample(0, step=s)) for s in range(3)]
    with pytest.raises(ValueError, match="sources"):
        c.publish_and_ack(m.ROLLOUT_SCORED, results, [d.id], sources=["1-1", "1-1", "1-1"])
    with pytest.raises(m.MessageError):  # an invalid record is refused before anything is sent
        c.publish_and_ack(m.ROLLOUT_SCORED, [m.ScoredSample.from_generated(sample(0), float("nan"), "x")], [d.id])
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 1
    published = c.publish_and_ack(m.ROLLOUT_SCORED, results, [d.id])
    assert len(published) == 3 and len(set(published)) == 1  # one group entry holds the three
    assert len(c.publish_and_ack(m.ROLLOUT_SCORED, results, [d.id])) == 0
    assert client.length(m.ROLLOUT_SCORED) == 1
    learner = client.consumer(m.ROLLOUT_SCORED, "learner", "l", m.ScoredSample)
    got = read_all(learner, 3)
    assert [g.record for g in got] == results
    assert {(g.id, g.entry_records, g.deliveries) for g in got} == {(published[0], 3, 1)}
    with pytest.raises(ValueError, match="holds 3 records"):  # dead-lettering one would drop the other two
        learner.dead_letter(got[0], "no")
    learner.ack(*[g.id for g in got])
    assert client.pending(m.ROLLOUT_SCORED, "learner") == 0


def test_each_source_entry_results_are_one_group_entry_and_a_reread_group_is_whole(client: StreamClient) -> None:
    gen = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
    client.publish_group(m.ROLLOUT_GENERATED, [sample(0, step=s) for s in range(4)])
    client.publish_group(m.ROLLOUT_GENERATED, [sample(1, step=s) for s in range(4)])
    assert client.length(m.ROLLOUT_GENERATED) == 2
    got = read_all(gen, 8)
    assert [(d.record.prompt_id, d.record.step) for d in got] == [(f"p{i}", s) for i in (0, 1) for s in range(4)]
    ids = [d.id for d in got]
    # Scored in a different order: the results are grouped back by source entry, one output entry each.
    order = [7, 0, 5, 2, 6, 1, 4, 3]
    published = gen.publish_and_ack(
        m.ROLLOUT_SCORED,
        [scored(got[k].record) for k in order],
        [ids[k] for k in order],
        sources=[ids[k] for k in order],
    )
    assert len(published) == 8 and len(set(published)) == 2
    assert client.length(m.ROLLOUT_SCORED) == 2 and client.pending(m.ROLLOUT_GENERATED, "reward") == 0
    out = read_all(client.consumer(m.ROLLOUT_SCORED, "learner", "l", m.ScoredSample), 8)
    assert sorted((d.record.prompt_id, d.record.step) for d in out) == [(f"p{i}", s) for i in (0, 1) for s in range(4)]
    by_entry: dict[str, set[str]] = {}
    for d in out:
        by_entry.setdefault(d.id, set()).add(d.record.prompt_id)
    assert sorted(by_entry.values(), key=sorted) == [{"p0"}, {"p1"}]


def test_large_arguments_are_sent_as_they_are_and_arrive_intact(client: StreamClient) -> None:
    packer = CommandPacker()
    small = packer.pack("XADD", "k", "*", "d", b"x" * 100)
    assert len(small) == 1 and isinstance(small[0], bytes)  # hiredis: one buffer
    big = b"\x00\r\n$*" * 2000  # 12 000 bytes, with the protocol's own markers inside
    chunks = packer.pack("XADD", "k", "*", "d", big, "n", 3)
    assert any(chunk is big for chunk in chunks)  # handed over, not copied
    assert b"".join(bytes(c) for c in chunks) == b"".join(
        bytes(c) for c in reference_pack("XADD", "k", "*", "d", big, "n", 3)
    )
    # Through a real server: a group entry far above the cutoff, an EVALSHA carrying it, and small commands.
    records = [sample(i, text="é" * 3000) for i in range(8)]
    (entry,) = client.publish_group(m.ROLLOUT_GENERATED, records)
    gen = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
    got = read_all(gen, 8)
    assert [d.record for d in got] == records and {d.id for d in got} == {entry}
    gen.publish_and_ack(m.ROLLOUT_SCORED, [scored(d.record) for d in got], [entry], sources=[entry] * 8)
    out = read_all(client.consumer(m.ROLLOUT_SCORED, "learner", "l", m.ScoredSample), 8)
    assert [d.record.response_text for d in out] == [r.response_text for r in records]
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 0


def reference_pack(*args: object) -> list[bytes]:
    """The same command from redis-py's own Python packer with no cutoff: the reference encoding."""
    from redis.connection import Encoder, PythonRespSerializer

    return PythonRespSerializer(10**9, Encoder("utf-8", "strict", False).encode).pack(*args)


def test_a_group_past_the_message_limit_is_split_and_a_bad_item_dead_letters_its_entry(
    client: StreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = len(sample(0).encode())
    monkeypatch.setattr(m, "MAX_MESSAGE_BYTES", 3 * one + 64 + 3 * 5)  # room for three records a group
    assert [len(c) for c in m.entry_chunks([sample(i).encode() for i in range(7)])] == [3, 3, 1]
    ids = client.publish_group(m.ROLLOUT_GENERATED, [sample(i) for i in range(7)])
    assert len(ids) == 3 and client.length(m.ROLLOUT_GENERATED) == 3
    monkeypatch.undo()
    bad = m.encode_group([sample(0).encode(), b"not msgpack"])
    client.redis.xadd(client.key(m.ROLLOUT_GENERATED), {b"d": bad})
    c = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
    got = read_all(c, 7)
    assert [d.record.prompt_id for d in got] == [f"p{i}" for i in range(7)]
    assert c.read(count=10, block_ms=0) == []  # the corrupt group went to the dead letters, whole
    (letter,) = client.dead_letters()
    assert letter["reason"].startswith("group: items[1]: payload: not msgpack") and letter["d"] == bad


def test_extend_keeps_long_work_from_being_reclaimed_but_never_steals_back(client: StreamClient) -> None:
    client.publish_many(m.ROLLOUT_GENERATED, [sample(i) for i in range(2)])
    a = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample, claim_idle_ms=300)
    b = client.consumer(m.ROLLOUT_GENERATED, "reward", "b", m.GeneratedSample, claim_idle_ms=300)
    ids = [d.id for d in read_all(a, 2)]
    for _ in range(4):  # `a` works for 4 × 0.15 s > claim_idle_ms, renewing its claim as it goes
        time.sleep(0.15)
        assert a.extend(*ids) == ids
        assert b.read(count=10, block_ms=0) == []
    time.sleep(0.35)  # `a` stalls: `b` reclaims one entry...
    stolen = b.read(count=1, block_ms=0)
    assert [d.id for d in stolen] == ids[:1] and stolen[0].deliveries == 2
    assert a.extend(*ids) == ids[1:]  # ...and `a`'s heartbeat takes back only what it still owns
    rows = client.redis.xpending_range(client.key(m.ROLLOUT_GENERATED), "reward", "-", "+", 10)
    assert {r["message_id"].decode(): r["consumer"].decode() for r in rows} == {ids[0]: "b", ids[1]: "a"}
    assert [r["times_delivered"] for r in rows] == [2, 1]  # heartbeats are not deliveries


def test_consumer_restarted_under_the_same_name_gets_its_pending_entries_back(client: StreamClient) -> None:
    client.publish_many(m.ROLLOUT_GENERATED, [sample(i) for i in range(3)])
    first = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
    assert len(read_all(first, 3)) == 3
    again = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)  # a restarted process
    got = again.read(count=10, block_ms=0)
    assert [d.record.prompt_id for d in got] == ["p0", "p1", "p2"]
    assert all(d.deliveries == 2 for d in got)


def test_malformed_wrong_kind_and_oversized_payloads_are_dead_lettered(client: StreamClient) -> None:
    key = client.key(m.ROLLOUT_GENERATED)
    client.publish(m.ROLLOUT_GENERATED, sample(0))
    bad_ids = [
        client.redis.xadd(key, {"d": b"\xc1 not msgpack"}).decode(),
        client.redis.xadd(key, {"other": b"x"}).decode(),
        client.publish(m.ROLLOUT_GENERATED, m.Event(run_id=RUN, kind="hello")),
        client.redis.xadd(key, {"d": b"\x00" * (m.MAX_MESSAGE_BYTES + 1)}).decode(),
    ]
    client.publish(m.ROLLOUT_GENERATED, sample(1))
    c = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
    got = read_all(c, 2)
    assert [d.record.prompt_id for d in got] == ["p0", "p1"]
    assert c.dead_lettered == 4
    letters = client.dead_letters()
    assert [x["id"] for x in letters] == bad_ids
    assert all(x["stream"] == key and x["group"] == "reward" for x in letters)
    assert "not msgpack" in letters[0]["reason"] and letters[0]["d"] == b"\xc1 not msgpack"
    assert "missing field" in letters[1]["reason"]
    assert "expected 'generated_sample'" in letters[2]["reason"]
    assert "exceed" in letters[3]["reason"]
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 2  # the poison ones are acked


def test_entry_delivered_too_often_is_dead_lettered_with_its_payload(client: StreamClient) -> None:
    entry = client.publish(m.ROLLOUT_GENERATED, sample(7))
    c = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample, claim_idle_ms=50, max_deliveries=3)
    seen = []
    for _ in range(3):  # the consumer "crashes" on it every time: it never acks
        deadline = time.monotonic() + 5
        got: list[Delivery] = []
        while not got and time.monotonic() < deadline:
            got = c.read(count=1, block_ms=50)
        seen += [d.deliveries for d in got]
        time.sleep(0.06)
    assert seen == [1, 2, 3]
    deadline = time.monotonic() + 5
    while c.dead_lettered == 0 and time.monotonic() < deadline:
        assert c.read(count=1, block_ms=50) == []
    (letter,) = client.dead_letters()
    assert letter["id"] == entry and letter["deliveries"] == "4"
    assert "max_deliveries 3" in letter["reason"]
    assert m.decode(letter["d"]) == sample(7)
    assert client.pending(m.ROLLOUT_GENERATED, "reward") == 0


def test_streams_are_capped(redis_url: str) -> None:
    c = StreamClient(redis_url, RUN, maxlen=100)
    for _ in range(10):
        c.publish_many(m.EVENTS, [m.Event(run_id=RUN, kind="tick") for _ in range(100)])
    assert 100 <= c.length(m.EVENTS) < 1000  # approximate trimming: whole macro-nodes go
    c.close()


def test_trimming_keeps_what_any_group_has_not_acknowledged(client: StreamClient) -> None:
    client.publish_many(m.ROLLOUT_GENERATED, [sample(i) for i in range(10)])
    fast = client.consumer(m.ROLLOUT_GENERATED, "fast", "f", m.GeneratedSample, trim_every_s=3600)
    slow = client.consumer(m.ROLLOUT_GENERATED, "slow", "s", m.GeneratedSample, trim_every_s=3600)
    got = read_all(fast, 10)
    fast.ack(*[d.id for d in got])
    first = slow.read(count=4, block_ms=100)  # delivered to slow: 4; acked: the first 2
    slow.ack(first[0].id, first[1].id)
    assert client.trim_acknowledged(m.ROLLOUT_GENERATED) == 2  # slow's oldest pending entry (the 3rd) stays
    left = client.redis.xrange(client.key(m.ROLLOUT_GENERATED))
    assert [e[0].decode() for e in left] == [d.id for d in got[2:]]
    slow.ack(first[2].id, first[3].id)
    # Nothing pending: up to slow's last-delivered entry (the 4th), which stays.
    assert client.trim_acknowledged(m.ROLLOUT_GENERATED) == 1
    assert client.length(m.ROLLOUT_GENERATED) == 7
    # A stream nobody reads in a group is left alone.
    client.publish_many(m.EVENTS, [m.Event(run_id=RUN, kind="tick") for _ in range(5)])
    assert client.trim_acknowledged(m.EVENTS) == 0 and client.length(m.EVENTS) == 5


def test_a_long_run_keeps_stream_memory_bounded(client: StreamClient) -> None:
    """20 000 samples of a realistic size through generate → score → learn, as the services send them (a prompt's 8
    samples one group entry), with a cap (maxlen 10 000 entries) the run never reaches: acknowledged entries are
    trimmed as they go, so memory follows the backlog, not the run."""
    consumer = client.consumer(m.ROLLOUT_GENERATED, "reward", "r", m.GeneratedSample, trim_every_s=0)
    learner = client.consumer(m.ROLLOUT_SCORED, "learner", "l", m.ScoredSample, trim_every_s=0)
    big = m.GeneratedSample(
        run_id=RUN,
        step=0,
        prompt_id="p",
        sample_index=0,
        num_samples=1,
        policy_version=0,
        task="math",
        difficulty="easy",
        ground_truth="1",
        prompt_token_ids=list(range(128)),
        response_token_ids=list(range(256)),
        logprobs=[-0.5] * 256,
        response_text="x" * 1024,
    )
    peak_bytes = peak_len = 0
    for _ in range(100):
        for _ in range(25):  # 25 prompts × G = 8
            client.publish_group(m.ROLLOUT_GENERATED, [big] * 8)
        batch = read_all(consumer, 200)
        ids = [d.id for d in batch]
        consumer.publish_and_ack(m.ROLLOUT_SCORED, [scored(d.record) for d in batch], ids, sources=ids)
        learned = read_all(learner, 200)
        assert len(learned) == 200
        learner.ack(*[d.id for d in learned])
        for name in (m.ROLLOUT_GENERATED, m.ROLLOUT_SCORED):
            key = client.key(name)
            peak_len = max(peak_len, client.length(name))
            peak_bytes = max(peak_bytes, int(client.redis.memory_usage(key, samples=0) or 0))
    assert consumer.trimmed + learner.trimmed >= 2 * (2_500 - 25)  # entries: 2 500 a stream
    assert peak_len <= 50  # one round's backlog (25 entries) plus at most one more, never the 10 000 of the cap
    assert peak_bytes < 400 * 6 * 1024, peak_bytes  # ~4.6 KB a sample: the backlog's worth, not the run's 90 MB


def test_back_pressure_waits_for_the_downstream_group_then_times_out(client: StreamClient) -> None:
    consumer = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
    for i in range(5):
        client.publish(m.ROLLOUT_GENERATED, sample(i), max_lag=5, lag_group="reward", timeout=1)
    with pytest.raises(TimeoutError, match="group 'reward'.*5 unfinished entries"):
        client.publish(m.ROLLOUT_GENERATED, sample(5), max_lag=4, lag_group="reward", timeout=0.3)
    with pytest.raises(ValueError, match="lag_group"):
        client.publish(m.ROLLOUT_GENERATED, sample(5), max_lag=4)
    with pytest.raises(ValueError, match="below the stream cap"):
        client.publish(m.ROLLOUT_GENERATED, sample(5), max_lag=10_000, lag_group="reward")

    # Reading alone does not relieve the pressure (pending entries are unfinished); acking does.
    got = consumer.read(count=10, block_ms=0)
    assert client.group_info(m.ROLLOUT_GENERATED, "reward").backlog == 5

    def drain() -> None:
        time.sleep(0.3)
        consumer.ack(*(d.id for d in got))

    t = threading.Thread(target=drain)
    t.start()
    client.publish(m.ROLLOUT_GENERATED, sample(5), max_lag=4, lag_group="reward", timeout=10)
    t.join()
    assert client.group_info(m.ROLLOUT_GENERATED, "reward").backlog == 1


def test_group_lost_with_an_emptied_server_is_recreated(client: StreamClient) -> None:
    c = client.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
    client.redis.flushall()  # what a restart without persistence looks like
    client.publish(m.ROLLOUT_GENERATED, sample(1))
    got = read_all(c, 1)
    assert [d.record.prompt_id for d in got] == ["p1"]


def _persistent_redis(tmp_path: Path) -> LocalRedis:
    server = LocalRedis(data_dir=tmp_path / "data", log_path=tmp_path / "redis.log").start()
    r = redis.Redis.from_url(server.url)
    r.config_set("appendfsync", "always")  # a SIGKILL loses nothing that was acknowledged
    r.close()
    return server


def test_redis_restart_mid_stream_is_survived(tmp_path: Path) -> None:
    server = _persistent_redis(tmp_path)
    try:
        producer = StreamClient(server.url, RUN, reconnect_timeout=30)
        worker = StreamClient(server.url, RUN, reconnect_timeout=30)
        consumer = worker.consumer(m.ROLLOUT_GENERATED, "reward", "a", m.GeneratedSample)
        out = producer.consumer(m.ROLLOUT_SCORED, "learner", "l", m.ScoredSample)
        producer.publish_many(m.ROLLOUT_GENERATED, [sample(i) for i in range(10)])
        first = consumer.read(count=5, block_ms=100)
        assert len(first) == 5
        consumer.publish_and_ack(
            m.ROLLOUT_SCORED, [scored(d.record) for d in first], [d.id for d in first], sources=[d.id for d in first]
        )

        server.kill()  # SIGKILL, mid-stream
        restarter = threading.Timer(1.0, server.start)
        restarter.start()
        # Both calls start while Redis is down and complete once it is back.
        producer.publish_many(m.ROLLOUT_GENERATED, [sample(i) for i in range(10, 15)])
        restarter.join()
        assert producer.reconnects > 0

        rest = read_all(consumer, 10)
        assert len(rest) == 10
        ids = [d.id for d in rest]
        consumer.publish_and_ack(m.ROLLOUT_SCORED, [scored(d.record) for d in rest], ids, sources=ids)
        keys = [d.record.key for d in read_all(out, 15)]
        assert sorted(keys) == sorted(sample(i).key for i in range(15))
        assert worker.pending(m.ROLLOUT_GENERATED, "reward") == 0
        producer.close()
        worker.close()
    finally:
        server.stop()


def test_redis_down_for_longer_than_reconnect_timeout_raises(tmp_path: Path) -> None:
    server = LocalRedis(log_path=tmp_path / "redis.log").start()
    client = StreamClient(server.url, RUN, reconnect_timeout=0.5)
    server.stop()
    with pytest.raises(redis.ConnectionError):
        client.publish(m.EVENTS, m.Event(run_id=RUN, kind="x"))
    assert client.reconnects >= 2
    assert client.ping() is False
    client.close()


def test_lag_is_counted_when_redis_cannot_say(client: StreamClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "_COUNT_CHUNK", 7)  # several chunks
    client.publish_many(m.EVENTS, [m.Event(run_id=RUN, kind="e") for _ in range(25)])
    c = client.consumer(m.EVENTS, "g", "a", m.Event)
    c.read(count=5, block_ms=0)
    key = client.key(m.EVENTS)
    last = client.redis.xinfo_groups(key)[0]["last-delivered-id"].decode()
    assert client._count_after(key, last) == 20
    assert client._count_after(key, "0-0") == 25
    # A deletion after the group's position makes Redis 7 report lag as unknown: the count takes over.
    victim = client.redis.xrange(key, count=10)[-1][0]
    client.redis.xdel(key, victim)
    assert client.redis.xinfo_groups(key)[0]["lag"] is None
    assert client.lag(m.EVENTS, "g") == 19


def test_a_password_protected_redis_is_reached_with_the_password_from_a_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aerplane.coefficient.store import RunStore

    secret = tmp_path / "redis_password"
    secret.write_text("s3cret-hex-0123\n")  # as `docker compose` mounts a secret: one trailing newline
    with LocalRedis(password="s3cret-hex-0123") as server:
        monkeypatch.delenv("AERPLANE_REDIS_PASSWORD", raising=False)
        monkeypatch.delenv("AERPLANE_REDIS_PASSWORD_FILE", raising=False)
        refused = StreamClient(server.url, RUN)  # refused at once, not retried for reconnect_timeout
        with pytest.raises(redis.AuthenticationError, match="AERPLANE_REDIS_PASSWORD_FILE"):
            refused.publish(m.EVENTS, m.Event(run_id=RUN, kind="tick"))
        refused.close()

        monkeypatch.setenv("AERPLANE_REDIS_PASSWORD_FILE", str(secret))
        c = StreamClient(server.url, RUN)
        c.publish(m.EVENTS, m.Event(run_id=RUN, kind="tick"))
        assert c.length(m.EVENTS) == 1 and c.ping()
        assert RunStore(server.url).redis.ping()  # the coefficient service's store reads the same secret
        c.close()

        monkeypatch.delenv("AERPLANE_REDIS_PASSWORD_FILE")
        monkeypatch.setenv("AERPLANE_REDIS_PASSWORD", "wrong")
        with pytest.raises(redis.AuthenticationError):
            StreamClient(server.url, RUN).length(m.EVENTS)
        monkeypatch.setenv("AERPLANE_REDIS_PASSWORD_FILE", str(tmp_path / "missing"))
        with pytest.raises(RuntimeError, match="AERPLANE_REDIS_PASSWORD_FILE=.*cannot read the Redis password"):
            StreamClient(server.url, RUN)


def test_the_stream_metrics_collector_reads_lag_pending_and_counters_at_scrape_time(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from aerplane.common.stream_metrics import StreamMetrics

    with LocalRedis(data_dir=tmp_path / "redis") as server:
        client = StreamClient(server.url, RUN, reconnect_timeout=0.5)
        consumer = client.consumer(m.ROLLOUT_GENERATED, "reward", "reward-0", m.GeneratedSample)
        registry = CollectorRegistry()
        StreamMetrics("aerplane_test", client, lambda: consumer, [(m.ROLLOUT_GENERATED, "reward")]).register(registry)
        client.publish_many(m.ROLLOUT_GENERATED, [sample(i) for i in range(3)])
        redis.Redis.from_url(server.url).xadd(client.key(m.ROLLOUT_GENERATED), {b"d": b"not msgpack"})
        got = consumer.read(count=2, block_ms=100)  # two samples; none acked
        assert len(got) == 2

        def values() -> dict[str, float]:
            text = generate_latest(registry).decode()
            return {
                line.split(" ")[0]: float(line.split(" ")[1])
                for line in text.splitlines()
                if line.startswith("aerplane_test")
            }

        labels = '{group="reward",stream="rollout:generated"}'
        v = values()
        assert v[f"aerplane_test_stream_lag{labels}"] == 2 and v[f"aerplane_test_stream_pending{labels}"] == 2
        assert v["aerplane_test_dead_letters_total"] == 0
        more = consumer.read(count=10, block_ms=100)  # the third sample; the poison entry is dead-lettered
        consumer.ack(*[d.id for d in got + more])
        v = values()
        assert v[f"aerplane_test_stream_lag{labels}"] == 0 and v[f"aerplane_test_stream_pending{labels}"] == 0
        assert v["aerplane_test_dead_letters_total"] == 1
        server.stop()  # Redis away: a scrape answers at once with the counters and without the lag gauges
        v = values()
        assert "aerplane_test_redis_reconnects_total" in v and not any("stream_lag" in k for k in v)
        client.close()
