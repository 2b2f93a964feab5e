"""The coefficient service under a cluster's load: many runs' learners, REST readers and operators at once, on one
Redis, against 1 and then 2 replicas of the service.

    .venv/bin/python bench/coefficient_load.py                        # 64 runs, 20 s per configuration
    .venv/bin/python bench/coefficient_load.py --runs 16 --seconds 10 --prompts 128

For each configuration (1 replica, then 2; a fresh Redis database each time), for `--seconds`:

- **learners**: `--runs` runs (half with the integral rule, half with PID gains), driven by `--workers` processes.
  Each step of a run is the learner's two calls: `GetCoefficients` for `--prompts` prompts, then `ReportEntropy`
  with an entropy that is a fixed function of (run, step). Consecutive calls go to alternate replicas, and every
  fifth report is sent a second time to the other replica, as a learner that retries after a lost reply does.
- **readers**: `--readers` threads poll `GET /v1/runs` and a run's `/history`.
- **operators**: one process pins α on every 16th run and releases it, turn about, with a reason.

It reports, per call kind, p50 and p99 latency, calls per second and errors, and Redis' memory before and after.
Then it checks what the load must not break:

- every report applied exactly once across replicas: each run's history holds its steps 0…n−1 once each and the
  run counts n observations (a retried report changed nothing);
- every accepted PATCH is in the run's audit log;
- for every run without overrides, the α the service answered at each step equals a replay of the run's entropies
  through `aerplane.core.strategies` (the same code), exactly.

Headlines: GetCoefficients p99 with 2 replicas (context: `bench/coefficient.py`'s single client, target 2 ms), the
throughput of 2 replicas over 1 (same load generator, same machine), errors and check failures (target 0). On a
2-core machine the load generator shares the cores with the replicas and Redis, so the replica ratio says more
about contention than about scaling. Benchmarks report, they never assert.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TOKEN = "bench-operator-token"
PID_PARAMS = {"rho": 0.5, "eta": 0.002, "kp": 0.06, "kd": 0.05, "smoothing": 0.5, "alpha_max": 0.05}
INTEGRAL_PARAMS = {"rho": 0.5, "eta": 0.01, "alpha_max": 0.03}
OVERRIDE_EVERY = 16  # runs with index % 16 == 0 get operator pins (and are left out of the replay check)


def run_id(i: int) -> str:
    return f"load-{i:03d}"


def params_of(i: int) -> dict[str, float]:
    return PID_PARAMS if i % 2 else INTEGRAL_PARAMS


def entropy_of(i: int, step: int) -> float:
    """A run's entropy at a step: a collapse with wiggles, different per run, always positive."""
    return 0.3 + 0.8 * math.exp(-step / (6 + i % 5)) + 0.15 * math.sin(step * 0.7 + i)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 if ordered else math.nan


# --- the load generators (each its own process: spawn, so no gRPC state crosses a fork) ----------------------------
def _wait_until(start: float) -> None:
    """Every generator starts its load at the same moment (CLOCK_MONOTONIC is one clock for every process)."""
    time.sleep(max(0.0, start - time.monotonic()))


def learner_worker(targets: list[str], runs: list[int], prompts: int, start: float, deadline: float, out: Any) -> None:
    from aerplane.coefficient.client import CoefficientClient

    clients = [CoefficientClient(t, timeout=30.0) for t in targets]
    stats: dict[str, list[float]] = {"GetCoefficients": [], "ReportEntropy": []}
    errors: dict[str, int] = {"GetCoefficients": 0, "ReportEntropy": 0}
    steps = dict.fromkeys(runs, 0)
    accuracies = [(f"q{j}", (j % 9) / 8, 8) for j in range(prompts)]
    calls = 0
    _wait_until(start)
    while time.monotonic() < deadline:
        for i in runs:
            if time.monotonic() >= deadline:
                break
            step = steps[i]
            for kind in ("GetCoefficients", "ReportEntropy"):
                client = clients[calls % len(clients)]
                calls += 1
                t = time.perf_counter()
                try:
                    if kind == "GetCoefficients":
                        client.get_coefficients(run_id(i), step, accuracies)
                    else:
                        client.report_entropy(run_id(i), step, entropy_of(i, step), 1000)
                except Exception:
                    errors[kind] += 1
                    continue
                stats[kind].append(time.perf_counter() - t)
            if step % 5 == 4:  # the retry of a report whose reply was lost, on the other replica
                try:
                    clients[calls % len(clients)].report_entropy(run_id(i), step, entropy_of(i, step), 1000)
                except Exception:
                    errors["ReportEntropy"] += 1
            steps[i] = step + 1
    for c in clients:
        c.close()
    out.put({"stats": stats, "errors": errors, "steps": steps})


def operator_worker(urls: list[str], runs: list[int], start: float, deadline: float, out: Any) -> None:
    import httpx

    stats: list[float] = []
    errors = 0
    accepted = dict.fromkeys(runs, 0)
    turn = 0
    with httpx.Client(timeout=30.0, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        _wait_until(start)
        while time.monotonic() < deadline:
            for i in runs:
                body = {"alpha": 0.01, "reason": "load: pin"} if turn % 2 == 0 else {"release": True, "reason": "go"}
                t = time.perf_counter()
                try:
                    r = http.patch(f"{urls[turn % len(urls)]}/v1/runs/{run_id(i)}/coefficients", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                stats.append(time.perf_counter() - t)
                if ok:
                    accepted[i] += 1
                else:
                    errors += 1
            turn += 1
            time.sleep(0.5)
    out.put({"stats": {"PATCH coefficients": stats}, "errors": {"PATCH coefficients": errors}, "patches": accepted})


def reader_threads(urls: list[str], runs: int, readers: int, start: float, deadline: float) -> dict[str, Any]:
    import httpx

    stats: dict[str, list[float]] = {"GET runs": [], "GET history": []}
    errors = {"GET runs": 0, "GET history": 0}
    lock = threading.Lock()

    def poll(k: int) -> None:
        with httpx.Client(timeout=30.0) as http:
            _wait_until(start)
            n = k
            while time.monotonic() < deadline:
                for kind, path in (("GET runs", "/v1/runs"), ("GET history", f"/v1/runs/{run_id(n % runs)}/history")):
                    t = time.perf_counter()
                    try:
                        ok = http.get(urls[n % len(urls)] + path).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    took = time.perf_counter() - t
                    with lock:
                        if ok:
                            stats[kind].append(took)
                        else:
                            errors[kind] += 1
                n += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=poll, args=(k,), daemon=True) for k in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"stats": stats, "errors": errors}


# --- one configuration ----------------------------------------------------------------------------------------------
def scenario(replicas: int, args: argparse.Namespace, redis_url: str, tmp: Path) -> dict[str, Any]:
    import httpx
    import redis

    from aerplane.coefficient.client import CoefficientClient
    from aerplane.common.process import ManagedProcess, free_port
    from aerplane.core.strategies import build_strategy

    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AERPLANE_")}
    env.update(AERPLANE_REDIS_URL=redis_url, AERPLANE_API_TOKEN=TOKEN)
    servers, grpc_targets, urls = [], [], []
    for n in range(replicas):
        grpc_port, http_port = free_port(), free_port()
        servers.append(
            ManagedProcess(
                f"coefficient-{n}",
                [sys.executable, "-m", "aerplane.cli", "coefficient", "serve", "--host", "127.0.0.1"]
                + ["--grpc-port", str(grpc_port), "--http-port", str(http_port)],
                env=env,
                log_path=tmp / f"coefficient-{replicas}-{n}.log",
                ready_url=f"http://127.0.0.1:{http_port}/readyz",
            )
        )
        grpc_targets.append(f"127.0.0.1:{grpc_port}")
        urls.append(f"http://127.0.0.1:{http_port}")
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready(60)
        with CoefficientClient(grpc_targets[0], timeout=30.0) as c:
            for i in range(args.runs):
                c.start_run(run_id(i), "aer", params_of(i), {}, resume=False)
        memory_before = int(r.info("memory")["used_memory"])
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start = time.monotonic() + 5.0  # the spawned workers' start-up is not part of the measured load
        deadline = start + args.seconds
        shares = [list(range(w, args.runs, args.workers)) for w in range(args.workers)]
        procs = [
            ctx.Process(target=learner_worker, args=(grpc_targets, share, args.prompts, start, deadline, out))
            for share in shares
        ]
        overridden = [i for i in range(args.runs) if i % OVERRIDE_EVERY == 0]
        procs.append(ctx.Process(target=operator_worker, args=(urls, overridden, start, deadline, out)))
        for p in procs:
            p.start()
        reads = reader_threads(urls, args.runs, args.readers, start, deadline)
        results = [out.get(timeout=args.seconds + 120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        elapsed = args.seconds
        memory_after = int(r.info("memory")["used_memory"])

        stats: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        steps: dict[int, int] = {}
        patches: dict[int, int] = {}
        for res in [*results, reads]:
            for kind, samples in res["stats"].items():
                stats.setdefault(kind, []).extend(samples)
            for kind, n in res["errors"].items():
                errors[kind] = errors.get(kind, 0) + n
            steps.update(res.get("steps", {}))
            patches.update(res.get("patches", {}))

        # correctness under the load
        lost_or_twice, replay_mismatch, audit_missing = [], [], []
        with httpx.Client(base_url=urls[-1], timeout=60.0, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for i in range(args.runs):
                n = steps.get(i, 0)
                history = http.get(f"/v1/runs/{run_id(i)}/history", params={"limit": 100_000}).json()
                reported = [row["step"] for row in history if row["mean_entropy"] is not None]
                state = http.get(f"/v1/runs/{run_id(i)}").json()
                if reported != list(range(n)) or state["observations"] != n:
                    lost_or_twice.append(i)
                if i in patches:
                    audit = http.get(f"/v1/runs/{run_id(i)}/audit", params={"limit": 100_000}).json()
                    ours = [e for e in audit if e["transport"] == "rest" and e["reason"] in ("load: pin", "go")]
                    if len(ours) != patches[i]:
                        audit_missing.append(i)
                    continue
                strategy = build_strategy("aer", **params_of(i))
                st = strategy.initial_state()
                answered = {row["step"]: row["alpha"] for row in history}
                for step in range(n):
                    if answered.get(step) != strategy.coefficient(st):
                        replay_mismatch.append(i)
                        break
                    st = strategy.observe(st, entropy=entropy_of(i, step))
        calls = {
            kind: {
                "calls": len(samples),
                "per_s": len(samples) / elapsed,
                "p50_ms": _pct(samples, 0.50),
                "p99_ms": _pct(samples, 0.99),
                "errors": errors.get(kind, 0),
            }
            for kind, samples in stats.items()
        }
        return {
            "replicas": replicas,
            "seconds": elapsed,
            "calls": calls,
            "steps": sum(steps.values()),
            "redis_memory_before": memory_before,
            "redis_memory_after": memory_after,
            "lost_or_applied_twice": lost_or_twice,
            "replay_mismatch": replay_mismatch,
            "audit_missing": audit_missing,
            "patches_accepted": sum(patches.values()),
            "errors": sum(errors.values()),
        }
    finally:
        for s in servers:
            s.stop()
        r.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=64, help="runs, each with its own simulated learner")
    parser.add_argument("--prompts", type=int, default=512, help="prompts per GetCoefficients")
    parser.add_argument("--seconds", type=float, default=20.0, help="load time per configuration")
    parser.add_argument("--workers", type=int, default=4, help="learner-simulating processes")
    parser.add_argument("--readers", type=int, default=4, help="REST reader threads")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.workers < 1 or args.readers < 0 or args.prompts < 1 or args.seconds <= 0:
        parser.error("--runs, --workers and --prompts must be >= 1, --readers >= 0, --seconds > 0")
    args.workers = min(args.workers, args.runs)

    from aerplane.common.redis_server import LocalRedis

    tmp = Path(tempfile.mkdtemp(prefix="aerplane-bench-load-"))
    redis_server = LocalRedis(log_path=tmp / "redis.log").start()
    try:
        results = {n: scenario(n, args, redis_server.url, tmp) for n in (1, 2)}
    finally:
        redis_server.stop()

    print(f"coefficient service under load: {args.runs} runs × {args.prompts} prompts, {args.workers} learner "
          f"processes, {args.readers} REST readers, 1 operator; {args.seconds:g} s per configuration")  # fmt: skip
    print(f"{'replicas':<10}{'call':<22}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for n, res in results.items():
        for kind, c in res["calls"].items():
            print(f"{n:<10}{kind:<22}{c['per_s']:>10.1f}{c['p50_ms']:>10.2f}{c['p99_ms']:>10.2f}{c['errors']:>8}")
    for n, res in results.items():
        mib = (res["redis_memory_after"] - res["redis_memory_before"]) / 2**20
        print(
            f"{n} replica(s): {res['steps']} learner steps; Redis {res['redis_memory_before'] / 2**20:.1f} → "
            f"{res['redis_memory_after'] / 2**20:.1f} MiB (+{mib:.1f}); reports lost or applied twice: "
            f"{len(res['lost_or_applied_twice'])}; α replay mismatches: {len(res['replay_mismatch'])}; PATCHes "
            f"missing from the audit: {len(res['audit_missing'])} of {res['patches_accepted']} accepted"
        )
    one, two = results[1], results[2]
    get1, get2 = one["calls"]["GetCoefficients"], two["calls"]["GetCoefficients"]
    failures = sum(len(res[k]) for res in results.values() for k in ("lost_or_applied_twice", "replay_mismatch"))
    failures += sum(len(res["audit_missing"]) for res in results.values())
    lines = [
        {
            "bench": "coefficient_load",
            "metric": "get_coefficients_p99_ms_2_replicas",
            "value": round(get2["p99_ms"], 2),
            "baseline": "the same load on 1 replica (context: bench/coefficient.py's single client, target 2 ms)",
            "target": None,
            "better": "lower",
            "figures": {"1": one, "2": two},
        },
        {
            "bench": "coefficient_load",
            "metric": "steps_per_s_2_over_1_replica",
            "value": round(two["steps"] / two["seconds"] / (one["steps"] / one["seconds"]), 3),
            "baseline": "1 replica, the same load generator on the same machine",
            "target": None,
            "better": "higher",
            "figures": {"get_coefficients_per_s": [get1["per_s"], get2["per_s"]]},
        },
        {
            "bench": "coefficient_load",
            "metric": "errors_and_check_failures",
            "value": one["errors"] + two["errors"] + failures,
            "baseline": "none: every call must succeed and every check hold",
            "target": 0,
            "better": "lower",
            "figures": {"errors": [one["errors"], two["errors"]], "check_failures": failures},
        },
    ]
    for line in lines:
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
