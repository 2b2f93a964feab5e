"""Prometheus metrics of the reward service (one registry per process).

- `aerplane_reward_verifications_total{task,reason,source}`: items scored (source `stream` or `http`);
- `aerplane_reward_verify_seconds{source}`: histogram, submit → score (queueing included);
- `aerplane_reward_worker_restarts_total{reason}`: workers killed (`timeout`) or found dead (`crash`) and replaced;
- `aerplane_reward_pool_queue_depth`, `aerplane_reward_pool_busy_workers`, `aerplane_reward_pool_workers`;
- `aerplane_reward_stream_lag{stream,group}`, `aerplane_reward_stream_pending{stream,group}`: the consumed stream
  (group `reward`) and the produced one (group `learner`), read at scrape time (`common.stream_metrics`, as every
  consumer exports them), with `aerplane_reward_dead_letters_total`, `aerplane_reward_duplicates_dropped_total` and
  `aerplane_reward_redis_reconnects_total`;
- `aerplane_reward_batches_total`.

Task labels are the registered task names; anything else is counted as `unknown`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aerplane.reward import scorers
from aerplane.reward.scorers import Score

PREFIX = "aerplane_reward"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class RewardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.verifications = Counter(
            f"{PREFIX}_verifications",
            "Items scored, by task and reason",
            ["task", "reason", "source"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_verify_seconds",
            "Seconds from submitting an item to its score (queueing included)",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.worker_restarts = Counter(
            f"{PREFIX}_worker_restarts",
            "Verification workers killed or found dead and replaced",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(f"{PREFIX}_pool_queue_depth", "Items waiting for a free worker", registry=registry)
        self.busy = Gauge(f"{PREFIX}_pool_busy_workers", "Workers scoring an item now", registry=registry)
        self.workers = Gauge(f"{PREFIX}_pool_workers", "Workers alive", registry=registry)
        self.batches = Counter(f"{PREFIX}_batches", "Stream batches scored and published", registry=registry)

    def watch_pool(self, pool: object) -> None:
        """Read the pool's gauges at scrape time."""
        self.queue_depth.set_function(lambda: pool.queue_depth)  # type: ignore[attr-defined]
        self.busy.set_function(lambda: pool.busy)  # type: ignore[attr-defined]
        self.workers.set_function(lambda: pool.alive)  # type: ignore[attr-defined]

    def observe(self, task: str, score: Score, seconds: float, source: str) -> None:
        label = task if scorers.is_known(task) else "unknown"
        self.verifications.labels(task=label, reason=score.reason, source=source).inc()
        self.latency.labels(source=source).observe(seconds)
