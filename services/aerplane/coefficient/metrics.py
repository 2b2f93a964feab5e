"""Prometheus metrics of the coefficient service (one registry per process).

Per run (label `run_id`), read from Redis at scrape time so they are right after a restart and agree across
replicas: `aerplane_coefficient_alpha`, `_target_entropy`, `_initial_entropy`, `_last_entropy`,
`_mean_prompt_weight`, `_mean_accuracy`, `_step`, `_observations`, `_alpha_pinned`, `_frozen`. Entropies are in
nats. A run without a value yet (H_0 before anchoring) has no sample for that gauge.

Requests: `aerplane_coefficient_grpc_requests_total{method,code}`,
`aerplane_coefficient_grpc_request_duration_seconds{method}`,
`aerplane_coefficient_http_requests_total{method,route,status}`,
`aerplane_coefficient_http_request_duration_seconds{method,route}`; plus
`aerplane_coefficient_overrides_total{transport}`, `aerplane_coefficient_auth_failures_total{transport}`,
`aerplane_coefficient_store_conflicts_total` and `aerplane_coefficient_store_up`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from aerplane.coefficient.store import RunStore

log = logging.getLogger(__name__)

PREFIX = "aerplane_coefficient"
# Sub-millisecond resolution: GetCoefficients is on the learner's critical path.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

_RUN_GAUGES = {
    "alpha": "α the learner gets for its next step (pin applied)",
    "target_entropy": "Target entropy H* (nats)",
    "initial_entropy": "Anchored initial entropy H_0 (nats)",
    "last_entropy": "Last reported token-mean entropy H_t (nats)",
    "mean_prompt_weight": "Mean λ_q of the latest GetCoefficients batch",
    "mean_accuracy": "Mean prompt accuracy of the latest GetCoefficients batch",
    "step": "Last applied learner step",
    "observations": "Entropy observations applied",
    "alpha_pinned": "1 while α is pinned by an override",
    "frozen": "1 while the controller is frozen",
    "p_term": "aer: proportional term kp·e of the last update",
    "i_term": "aer: integral term I after the last update",
    "d_term": "aer: derivative term D of the last update",
}


class CoefficientMetrics:
    """Request counters and histograms; the per-run gauges come from `RunCollector`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.grpc_requests = Counter(
            f"{PREFIX}_grpc_requests", "gRPC requests by method and status code", ["method", "code"], registry=registry
        )
        self.grpc_latency = Histogram(
            f"{PREFIX}_grpc_request_duration_seconds",
            "gRPC request handling time by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_requests = Counter(
            f"{PREFIX}_http_requests",
            "REST requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "REST request handling time by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.overrides = Counter(f"{PREFIX}_overrides", "Overrides applied", ["transport"], registry=registry)
        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures",
            "Requests refused for missing or wrong credentials",
            ["transport"],
            registry=registry,
        )


class RunCollector:
    """Per-run gauges, read from the store at each scrape (`get_store` returns None before the app started)."""

    def __init__(self, get_store: Callable[[], RunStore | None]) -> None:
        self.get_store = get_store

    def describe(self) -> Iterable[Metric]:
        # Without this, registering would call collect() (and Redis) once at start-up.
        for name, doc in _RUN_GAUGES.items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["run_id"])
        yield GaugeMetricFamily(f"{PREFIX}_store_up", "1 when the last scrape could read Redis")
        yield CounterMetricFamily(f"{PREFIX}_store_conflicts", "Optimistic-transaction retries (concurrent writers)")

    def collect(self) -> Iterable[Metric]:
        families = {
            name: GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["run_id"]) for name, doc in _RUN_GAUGES.items()
        }
        up = GaugeMetricFamily(f"{PREFIX}_store_up", "1 when the last scrape could read Redis")
        conflicts = CounterMetricFamily(
            f"{PREFIX}_store_conflicts", "Optimistic-transaction retries (concurrent writers)"
        )
        store = self.get_store()
        conflicts.add_metric([], store.conflicts if store is not None else 0)
        try:
            if store is None:
                raise RuntimeError("store not open yet")
            runs = store.list_runs()
            batches = store.last_batches([r.run_id for r in runs])
        except Exception as exc:  # a scrape must not fail because Redis is down; store_up says so
            log.warning("metrics: cannot read runs: %s", exc)
            up.add_metric([], 0)
            yield up
            yield conflicts
            return
        up.add_metric([], 1)
        for run in runs:
            view = run.view()
            values = {
                "alpha": view["alpha"],
                "target_entropy": view["target_entropy"],
                "initial_entropy": view["initial_entropy"],
                "last_entropy": view["last_entropy"],
                "step": view["step"] if view["has_step"] else None,
                "observations": view["observations"],
                "alpha_pinned": float(view["alpha_pinned"]),
                "frozen": float(view["frozen"]),
                "p_term": view["p_term"],
                "i_term": view["i_term"],
                "d_term": view["d_term"],
            }
            batch = batches.get(run.run_id)
            if batch is not None:
                values["mean_prompt_weight"] = batch["mean_prompt_weight"]
                values["mean_accuracy"] = batch["mean_accuracy"]
            for name, value in values.items():
                if value is not None:
                    families[name].add_metric([run.run_id], float(value))
        yield from families.values()
        yield up
        yield conflicts
