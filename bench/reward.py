"""Reward verification throughput (pool vs one process; math-verify's extraction vs our old cut-out) and stream round
trip (vs the same traffic in bare redis-py).

    .venv/bin/python bench/reward.py                          # 120 items × 3 rounds; 5000 stream messages × 3
    .venv/bin/python bench/reward.py --items 60 --messages 2000 --rounds 2 --workers 4

1. Verification. Candidate: `WorkerPool.score_many` (N worker processes, each item with its hard timeout, sent over
   a pipe). Baseline: the same items scored one after another in this process by the same scorer functions
   (`pool.score_item`: no timeout, no isolation — what you would get without the pool). Items are a fixed mix of
   math answers after a short worked solution (fractions boxed and not, powers, sets, intervals, units, `1 000`)
   and reasoning-gym (chain_sum, basic_arithmetic, gsm_symbolic) answers, right and wrong, with numbers that change
   per item so parse caches do not flatter either side; each path gets fresh items of the same mix every round.
   Both use the default extraction, `math_verify`. Headline: pool / (N × one process), target ≥ 0.8. For context,
   the machine's own ceiling: N independent processes scoring an equal share each at once, without the pool.
2. Extraction. Candidate: a pool with the default `math_verify` extraction (math-verify reads the whole response).
   Baseline: the same pool with `boxed_or_last_number` (the old default: the last box, else the last number, cut
   out and handed to math-verify), scoring the same items, the two alternating first. Also counts how many items
   each gets right (every item of the mix has a known right reward).
3. Stream round trip. Candidate: generation's and the reward service's transport paths, minus the engine and the
   scoring. Rollout requests (G = 8 samples each) wait on their stream before the clock starts. A producer process
   does what the generation worker does with a wave of requests that finished together: it reads 8 requests, builds
   each one's 8 GeneratedSample records (128 prompt + 256 response tokens with logprobs, ~2.9 KB each) and
   `publish_and_ack`s them in one call, a group entry per request, acking the requests. Meanwhile a consumer in
   this process `read`s 16 entries at a time (the reward service's default batch), decodes them and
   `publish_and_ack`s a ScoredSample per message, grouped by source entry, until every message is acked. The rate
   is messages (samples) over the time from the go to the last ack. It comes with the CPU each party spent per
   sample: producer, consumer and redis-server (INFO cpu). Baseline: the same traffic in bare redis-py calls
   (pre-encoded group payloads, 8 per pipelined call, no requests, no validation, a MULTI/EXEC instead of the
   script) against the same private redis-server in the same run. Headlines: round trip / bare ≥ 0.25, and
   ≥ 10 000 samples/s (the transport must not bound training). For context, not the baseline:
   - the same round trip with every request published alone (a wave of 1);
   - `redis-benchmark -n 20000 -q XADD` (50 clients, no pipelining, a 1-byte field): Redis' raw XADD rate, the
     old baseline (0.5 × it was the target until issue 23 replaced it: it compared 2.9 KB records with 1 byte);
     also with one client, and with a field as large as one record.

Rounds alternate candidate and baseline; figures are medians over rounds. Benchmarks report, they never assert.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


KINDS = 15
RIGHT = (1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1)  # whether each kind of item is a right answer


def item(i: int) -> tuple[str, str, str]:
    """Item `i` of a fixed mix; numbers vary with `i` so no two items hit math-verify's parse caches alike."""
    k, j = i % KINDS, i // KINDS + 2
    work = rf"We have $a = {j}$ and $b = {j + 1}$, so $a + b = {2 * j + 1}$; checking, $2a - b = {j - 1}$." + "\n\n"
    return [
        ("math", rf"{work}so the answer is \boxed{{\frac{{1}}{{{j}}}}}", str(1 / j)),
        ("math", rf"{work}\boxed{{\dfrac{{{j}}}{{4}}}}", str(j / 4)),
        ("math", rf"{work}\boxed{{{j}^{{n-1}}}}", f"{j}^(n-1)"),
        ("math", rf"{work}\boxed{{\{{1, {j}, {j + 1}\}}}}", rf"\{{{j + 1},{j},1\}}"),
        ("math", rf"{work}\boxed{{(0, {j}]}}", rf"\left(0,{j}\right]"),
        ("math", rf"{work}\boxed{{{j}\text{{ cm}}}}", str(j)),
        ("math", f"{work}After simplifying we get {j} apples.", str(j + 1)),
        ("math", rf"{work}\boxed{{\sqrt{{{4 * j}}}}}", rf"2\sqrt{{{j}}}"),
        ("chain_sum", rf"\boxed{{-{j}4282}}", f"-{j}4282"),
        ("basic_arithmetic", f"the total is {j}06475279601", f"{j}06475279601"),
        ("gsm_symbolic", rf"\boxed{{{j},080}}", f"{j}080"),
        ("gsm_symbolic", rf"\boxed{{{j}}}", f"{j}080"),
        ("math", rf"{work}so $x = \frac{{{j}}}{{9}}$", f"{j}/9"),  # unboxed LaTeX: the old cut-out reads 9
        ("math", f"{work}The total is {j} 000 apples.", f"{j}000"),  # a space as thousands separator
        ("math", rf"{work}Answer: $[0,{j})$", rf"$[0,{j})$"),  # an interval
    ][k]


def items(n: int, offset: int = 0) -> list[tuple[str, str, str]]:
    return [item(offset + i) for i in range(n)]


def right(scores: list, offset: int) -> int:
    """How many of the items `offset`, `offset + 1`, ... got full reward exactly when they are right."""
    return sum((s.reward >= 1.0) == RIGHT[(offset + i) % KINDS] for i, s in enumerate(scores))


# --- 1. verification ----------------------------------------------------------------------------------------------


def _score_slice(work: list[tuple[str, str, str]], start: Any) -> float:
    """One of `workers` independent processes of the hardware ceiling: warm up, wait for the go, score in-line."""
    from aerplane.reward.pool import score_item

    for it in items(24, offset=3 * 10**6):
        score_item(*it)
    start.wait()
    t = time.perf_counter()
    for it in work:
        score_item(*it)
    return time.perf_counter() - t


def ceiling_rate(work: list[tuple[str, str, str]], workers: int) -> float:
    """Items/s of `workers` independent processes scoring an equal share each, started together, no pool: what
    this machine's cores give when all of them verify at once (shared caches, memory bandwidth, clocks)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as ex:
        start = manager.Event()
        futures = [ex.submit(_score_slice, work[i::workers], start) for i in range(workers)]
        time.sleep(5.0)  # imports and warm-up in every process before the go
        start.set()
        slowest = max(f.result() for f in futures)
    return len(work) / slowest


def bench_verification(n_items: int, rounds: int, workers: int) -> dict:
    from aerplane.reward.pool import PoolConfig, WorkerPool, score_item

    for it in items(24, offset=10**6):  # import and warm the in-process baseline like the workers warm themselves
        score_item(*it)
    single, pooled, ceiling, same = [], [], [], True
    with WorkerPool(PoolConfig(workers=workers, timeout_s=10.0)) as pool:
        pool.score_many(items(24, offset=2 * 10**6))  # warm-up
        for r in range(rounds):
            work = items(n_items, offset=r * n_items)  # fresh items every round, same for both paths
            t = time.perf_counter()
            base = [score_item(*it) for it in work]
            single.append(n_items / (time.perf_counter() - t))
            work = items(n_items, offset=(rounds + r) * n_items)
            t = time.perf_counter()
            cand = pool.score_many(work)
            pooled.append(n_items / (time.perf_counter() - t))
            same = same and [s.reason for s in base] == [s.reason for s in cand]
    for r in range(rounds):  # after the pool is gone, so the cores are free
        ceiling.append(ceiling_rate(items(n_items, offset=(2 * rounds + r) * n_items), workers))
    return {
        "items": n_items,
        "workers": workers,
        "single_per_s": statistics.median(single),
        "pool_per_s": statistics.median(pooled),
        "ceiling_per_s": statistics.median(ceiling),
        "single_rounds": single,
        "pool_rounds": pooled,
        "ceiling_rounds": ceiling,
        "same_scores": same,
    }


def bench_extraction(n_items: int, rounds: int, workers: int) -> dict:
    from aerplane.reward.pool import PoolConfig, WorkerPool

    rates: dict[str, list[float]] = {"math_verify": [], "boxed_or_last_number": []}
    right_counts = {mode: 0 for mode in rates}
    changed = 0
    pools = {mode: WorkerPool(PoolConfig(workers=workers, timeout_s=10.0, extraction=mode)) for mode in rates}
    try:
        for pool in pools.values():
            pool.start()
            pool.score_many(items(24, offset=3 * 10**6))  # warm-up
        for r in range(rounds):
            offset = (2 * rounds + r) * n_items
            work = items(n_items, offset=offset)  # the same items for both modes
            order = list(rates) if r % 2 == 0 else list(reversed(rates))
            scored = {}
            for mode in order:
                t = time.perf_counter()
                scored[mode] = pools[mode].score_many(work)
                rates[mode].append(n_items / (time.perf_counter() - t))
                right_counts[mode] += right(scored[mode], offset)
            changed += sum(a.reward != b.reward for a, b in zip(*scored.values(), strict=True))
    finally:
        for pool in pools.values():
            pool.close()
    return {
        "items": n_items * rounds,
        "workers": workers,
        "math_verify_per_s": statistics.median(rates["math_verify"]),
        "cut_out_per_s": statistics.median(rates["boxed_or_last_number"]),
        "math_verify_rounds": rates["math_verify"],
        "cut_out_rounds": rates["boxed_or_last_number"],
        "math_verify_right": right_counts["math_verify"],
        "cut_out_right": right_counts["boxed_or_last_number"],
        "rewards_changed": changed,
    }


# --- 3. stream round trip -----------------------------------------------------------------------------------------


G = 8  # samples per prompt: one group entry
WAVE = 8  # prompts whose samples generation publishes in one call (a wave that finished together)
# The stream round trip's targets (issue 23's decision, replacing 0.5 × a 1-byte raw XADD, which compared 2.9 KB
# records with a 1-byte field): it must not bound training.
BARE_TARGET = 0.25  # of bare redis-py moving the same bytes
RATE_TARGET = 10_000  # samples/s on this project's 2-core machine
READ_ENTRIES = 16  # the reward service's default batch_size
PROMPT_IDS = list(range(128))
RESPONSE_IDS = list(range(256))
LOGPROBS = [-0.5] * 256
TEXT = r"the answer is \boxed{1}" * 4


def sample(i: int, run_id: str):
    """Message i: sample i % G of prompt i // G."""
    from aerplane.common.messages import GeneratedSample

    return GeneratedSample(
        run_id=run_id,
        step=0,
        prompt_id=f"p{i // G}",
        sample_index=i % G,
        num_samples=G,
        policy_version=0,
        task="math",
        difficulty="easy",
        ground_truth="1",
        prompt_token_ids=PROMPT_IDS,
        response_token_ids=RESPONSE_IDS,
        logprobs=LOGPROBS,
        response_text=TEXT,
    )


def publish_requests(client: Any, prompts: int) -> None:
    """The learner's part, before the clock: `prompts` rollout requests of G samples each."""
    from aerplane.common.messages import ROLLOUT_REQUESTS, RolloutRequest

    requests = [
        RolloutRequest(
            run_id=client.run_id,
            step=0,
            prompt_id=f"p{p}",
            task="math",
            difficulty="easy",
            ground_truth="1",
            num_samples=G,
            policy_version=0,
            prompt="What is 1?",
        )
        for p in range(prompts)
    ]
    for first in range(0, prompts, 1000):
        client.publish_many(ROLLOUT_REQUESTS, requests[first : first + 1000])


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process so far."""
    t = os.times()
    return t.user + t.system


def _redis_cpu_s(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _produce(url: str, run_id: str, wave: int, start: Any, cpu: Any) -> None:
    """The producer process, generation's transport path without the engine: wait for the go, then read `wave`
    requests at a time and, as the worker does for a wave of requests that finished together, build each one's G
    samples and `publish_and_ack` them (a group entry per request, the requests acked in the same call)."""
    from aerplane.common.messages import ROLLOUT_GENERATED, ROLLOUT_REQUESTS, GeneratedSample, RolloutRequest
    from aerplane.common.streams import StreamClient

    client = StreamClient(url, run_id, maxlen=1_000_000)
    requests = client.consumer(ROLLOUT_REQUESTS, "generation", "bench", RolloutRequest)
    start.wait()
    began = _cpu_s()
    while batch := requests.read(count=wave, block_ms=0):
        records, sources = [], []
        for d in batch:
            prompt = d.record.prompt_fields()
            for k in range(G):
                records.append(
                    GeneratedSample(
                        **prompt,
                        sample_index=k,
                        prompt_token_ids=PROMPT_IDS,
                        response_token_ids=RESPONSE_IDS,
                        logprobs=LOGPROBS,
                        response_text=TEXT,
                    )
                )
                sources.append(d.id)
        requests.publish_and_ack(ROLLOUT_GENERATED, records, [d.id for d in batch], sources=sources)
    cpu.value = _cpu_s() - began
    client.close()


def _measure(redis_client: Any, produce: Any, args: tuple, consume: Any, n: int) -> dict[str, float]:
    """Start `produce(*args, start, cpu)` in a process; at the go, call `consume()` (it returns the samples it
    finished) until `n` are done. Returns samples/s from the go to the last one, and the CPU each party spent per
    sample (µs): the producer, this process and redis-server (its INFO cpu), which is where the time goes on a
    machine with few cores."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    producer_cpu = ctx.Value("d", float("nan"))
    producer = ctx.Process(target=produce, args=(*args, start, producer_cpu))
    producer.start()
    time.sleep(1.0)  # let the producer import; the clock starts at the go
    redis_before, consumer_before = _redis_cpu_s(redis_client), _cpu_s()
    t = time.perf_counter()
    start.set()
    done = 0
    while done < n:
        done += consume()
    elapsed = time.perf_counter() - t
    consumer_cpu, redis_cpu = _cpu_s() - consumer_before, _redis_cpu_s(redis_client) - redis_before
    producer.join(60)
    per_sample = 1e6 / n
    return {
        "per_s": n / elapsed,
        "producer_cpu_us": producer_cpu.value * per_sample,
        "consumer_cpu_us": consumer_cpu * per_sample,
        "redis_cpu_us": redis_cpu * per_sample,
    }


def round_trip(url: str, run_id: str, n: int, wave: int = WAVE) -> dict[str, float]:
    """The candidate: generation's path in a producer process (`_produce`), the reward service's here."""
    from aerplane.common.messages import ROLLOUT_GENERATED, ROLLOUT_SCORED, GeneratedSample, ScoredSample
    from aerplane.common.streams import StreamClient

    worker = StreamClient(url, run_id, maxlen=1_000_000)
    publish_requests(worker, n // G)
    consumer = worker.consumer(ROLLOUT_GENERATED, "reward", "bench", GeneratedSample)

    def consume() -> int:
        batch = consumer.read(count=READ_ENTRIES, block_ms=1000)
        ids = [d.id for d in batch]
        out = [ScoredSample.from_generated(d.record, 1.0, "match") for d in batch]
        consumer.publish_and_ack(ROLLOUT_SCORED, out, ids, sources=ids)
        return len(batch)

    figures = _measure(worker.redis, _produce, (url, run_id, wave), consume, n)
    assert worker.pending(ROLLOUT_GENERATED, "reward") == 0
    worker.close()
    return figures


def bare_round_trip(url: str, n: int) -> dict[str, float]:
    """The same traffic with bare redis-py calls: pre-encoded group payloads, WAVE of them per pipelined call, no
    requests, no validation, a MULTI/EXEC instead of the script (context)."""
    import redis

    client = redis.Redis.from_url(url)
    client.xgroup_create("bare:gen", "g", id="0", mkstream=True)

    def consume() -> int:
        resp = client.xreadgroup("g", "c", {"bare:gen": ">"}, count=READ_ENTRIES, block=1000)
        if not resp:
            return 0
        entries = resp[0][1] if isinstance(resp, list) else next(iter(resp.values()))[0]
        pipe = client.pipeline(transaction=True)
        for _, fields in entries:
            pipe.xadd("bare:scored", {b"d": fields[b"d"]})
        pipe.xack("bare:gen", "g", *[entry_id for entry_id, _ in entries])
        pipe.execute()
        return G * len(entries)

    figures = _measure(client, _bare_produce, (url, n), consume, n)
    client.close()
    return figures


def _bare_produce(url: str, n: int, start: Any, cpu: Any) -> None:
    import redis

    from aerplane.common.messages import encode_group

    client = redis.Redis.from_url(url)
    payload = encode_group([sample(i, "bare").encode() for i in range(G)])
    start.wait()
    began = _cpu_s()
    for _ in range(0, n, G * WAVE):
        pipe = client.pipeline(transaction=False)
        for _ in range(WAVE):
            pipe.xadd("bare:gen", {b"d": payload})
        pipe.execute()
    cpu.value = _cpu_s() - began
    client.close()


def redis_benchmark_xadd(port: int, n: int = 20_000, clients: int = 50, value_bytes: int = 1) -> float:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise SystemExit("redis-benchmark not found (it ships with redis-server / redis-tools)")
    out = subprocess.run(
        [
            exe,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            str(clients),
            "-n",
            str(n),
            "-q",
            "XADD",
            "benchxadd",
            "*",
            "f",
            "v" * value_bytes,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    match = re.search(r"([\d.]+) requests per second", out.replace("\r", "\n"))
    if match is None:
        raise RuntimeError(f"could not read redis-benchmark's output: {out!r}")
    return float(match.group(1))


def bench_streams(n: int, rounds: int) -> dict:
    import redis

    from aerplane.common.redis_server import LocalRedis

    rt, rt_alone, raw, raw1, raw_big, bare = [], [], [], [], [], []
    payload = len(sample(0, "bench0").encode())
    with LocalRedis() as server:
        client = redis.Redis.from_url(server.url)
        for r in range(rounds):
            client.flushall()
            raw.append(redis_benchmark_xadd(server.port))
            raw1.append(redis_benchmark_xadd(server.port, n=5000, clients=1))
            client.flushall()
            raw_big.append(redis_benchmark_xadd(server.port, value_bytes=payload))
            client.flushall()
            rt.append(round_trip(server.url, f"bench{r}", n))
            client.flushall()
            rt_alone.append(round_trip(server.url, f"alone{r}", n, wave=1)["per_s"])
            client.flushall()
            bare.append(bare_round_trip(server.url, n))
        client.close()
    return {
        "messages": n,
        "payload_bytes": payload,
        "wave_prompts": WAVE,
        "roundtrip_msgs_per_s": statistics.median(r["per_s"] for r in rt),
        "raw_xadd_per_s": statistics.median(raw),
        "roundtrip_rounds": [r["per_s"] for r in rt],
        **{f"{k}_per_sample": statistics.median(r[k] for r in rt) for k in rt[0] if k != "per_s"},
        "roundtrip_wave_1_msgs_per_s": statistics.median(rt_alone),
        "raw_rounds": raw,
        "raw_xadd_1_client_per_s": statistics.median(raw1),
        "raw_xadd_record_size_per_s": statistics.median(raw_big),
        "bare_redis_py_roundtrip_per_s": statistics.median(r["per_s"] for r in bare),
        **{f"bare_{k}_per_sample": statistics.median(r[k] for r in bare) for k in bare[0] if k != "per_s"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.messages < G or args.messages % G:
        parser.error(f"--messages: a positive multiple of {G} (whole prompt groups), got {args.messages}")

    v = bench_verification(args.items, args.rounds, args.workers)
    e = bench_extraction(args.items, args.rounds, args.workers)
    s = bench_streams(args.messages, args.rounds)
    speedup = v["pool_per_s"] / v["single_per_s"]
    scaling = v["pool_per_s"] / (v["workers"] * v["single_per_s"])
    of_ceiling = v["pool_per_s"] / v["ceiling_per_s"]
    extraction_ratio = e["math_verify_per_s"] / e["cut_out_per_s"]
    ratio = s["roundtrip_msgs_per_s"] / s["raw_xadd_per_s"]
    of_bare = s["roundtrip_msgs_per_s"] / s["bare_redis_py_roundtrip_per_s"]

    print(f"reward verification, {v['items']} items × {args.rounds} rounds (medians)")
    print(f"{'path':<66}{'items/s':>12}")
    print(f"{'one process, in-line (baseline)':<66}{v['single_per_s']:>12.1f}")
    pool_label = f"pool, {v['workers']} workers (timeout + isolation)"
    print(f"{pool_label:<66}{v['pool_per_s']:>12.1f}")
    ceiling = f"{v['workers']} independent processes, no pool (this machine's ceiling, context)"
    print(f"{ceiling:<66}{v['ceiling_per_s']:>12.1f}")
    print(
        f"pool / one process: {speedup:.2f}x; pool / ({v['workers']} × one process): {scaling:.2f}; "
        f"pool / ceiling: {of_ceiling:.2f}; scores identical: {v['same_scores']}"
    )
    print()
    print(f"math extraction, the same {args.items} items × {args.rounds} rounds through the pool (medians)")
    print(f"{'extraction':<66}{'items/s':>12}{'right':>10}")
    n = e["items"]
    old = "boxed_or_last_number: last box, else last number (old, baseline)"
    print(f"{old:<66}{e['cut_out_per_s']:>12.1f}{e['cut_out_right']:>5}/{n:<4}")
    new = "math_verify: math-verify reads the whole response (the default)"
    print(f"{new:<66}{e['math_verify_per_s']:>12.1f}{e['math_verify_right']:>5}/{n:<4}")
    print(f"math_verify / cut-out: {extraction_ratio:.2f}x items/s; rewards changed on {e['rewards_changed']} of {n}")
    print()
    print(f"stream round trip, {s['messages']} messages of {s['payload_bytes']} B × {args.rounds} rounds (medians)")
    print(f"{'path':<66}{'msgs/s':>12}")
    print(f"{'redis-benchmark XADD, 50 clients, 1-byte field (baseline)':<66}{s['raw_xadd_per_s']:>12.0f}")
    wave = f"generation → reward → scored, {s['wave_prompts']} prompts a publish (the candidate)"
    print(f"{wave:<66}{s['roundtrip_msgs_per_s']:>12.0f}")
    alone = "the same, every prompt published alone (context)"
    print(f"{alone:<66}{s['roundtrip_wave_1_msgs_per_s']:>12.0f}")
    print(f"{'redis-benchmark XADD, 1 client (context, not the baseline)':<66}{s['raw_xadd_1_client_per_s']:>12.0f}")
    big = f"redis-benchmark XADD, 50 clients, {s['payload_bytes']}-byte field (context)"
    print(f"{big:<66}{s['raw_xadd_record_size_per_s']:>12.0f}")
    bare = "the round trip in bare redis-py, no records (context)"
    print(f"{bare:<66}{s['bare_redis_py_roundtrip_per_s']:>12.0f}")
    print(
        f"round trip / bare redis-py moving the same bytes: {of_bare:.2f} (target ≥ {BARE_TARGET}); "
        f"{s['roundtrip_msgs_per_s']:.0f} samples/s (target ≥ {RATE_TARGET}); round trip / raw XADD: {ratio:.2f} "
        "(context: a 1-byte XADD)"
    )
    print(
        "CPU per sample (µs), aerplane / bare redis-py: "
        + ", ".join(
            f"{party} {s[f'{party}_cpu_us_per_sample']:.1f} / {s[f'bare_{party}_cpu_us_per_sample']:.1f}"
            for party in ("producer", "consumer", "redis")
        )
    )
    print()
    lines = [
        {
            "bench": "reward",
            "metric": "pool_scaling",
            "value": round(scaling, 3),
            "baseline": "workers × the same scorers in one process, in-line",
            "target": 0.8,
            "better": "higher",
            "figures": {**v, "speedup": speedup, "of_ceiling": of_ceiling},
        },
        {
            "bench": "reward",
            "metric": "math_verify_throughput_ratio",
            "value": round(extraction_ratio, 3),
            "baseline": "boxed_or_last_number cut-out extraction (the old default), same pool and items",
            "target": None,
            "better": "higher",
            "figures": e,
        },
        {
            "bench": "reward",
            "metric": "stream_roundtrip_vs_bare_redis_py",
            "value": round(of_bare, 3),
            "baseline": "the same traffic in bare redis-py (pre-encoded group payloads, no records), same redis-server",
            "target": BARE_TARGET,
            "better": "higher",
            "figures": {**s, "raw_xadd_ratio": ratio},
        },
        {
            "bench": "reward",
            "metric": "stream_roundtrip_samples_per_s",
            "value": round(s["roundtrip_msgs_per_s"]),
            "baseline": "none: an absolute floor, so that the transport never bounds training",
            "target": RATE_TARGET,
            "better": "higher",
            "figures": {"raw_xadd_per_s": s["raw_xadd_per_s"], "raw_xadd_ratio": ratio},
        },
    ]
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
