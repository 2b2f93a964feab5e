"""Prometheus metrics of the generation service (`aerplane_generation_*`), on the process's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_RELOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GenerationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "aerplane_generation_"
        self.requests = Counter(f"{p}requests_total", "Rollout requests (prompts) completed", registry=registry)
        self.samples = Counter(f"{p}samples_total", "Responses sampled and published", registry=registry)
        self.response_tokens = Counter(f"{p}response_tokens_total", "Tokens generated", registry=registry)
        self.prompt_tokens = Counter(f"{p}prompt_tokens_total", "Prompt tokens, counted per sample", registry=registry)
        self.tokens_per_second = Gauge(
            f"{p}tokens_per_second", "Generated tokens per second over the last batch", registry=registry
        )
        self.batch_seconds = Histogram(
            f"{p}batch_seconds", "Wall time of one batch on the engine", buckets=_BATCH_BUCKETS, registry=registry
        )
        self.batch_prompts = Gauge(f"{p}batch_prompts", "Prompts in the last batch", registry=registry)
        self.weight_reload_seconds = Histogram(
            f"{p}weight_reload_seconds", "Time to load announced weights into the engine", buckets=_RELOAD_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.weight_reloads = Counter(f"{p}weight_reloads_total", "Weight versions loaded", registry=registry)
        self.policy_version = Gauge(f"{p}policy_version", "Policy version the engine holds", registry=registry)
        self.queue_depth = Gauge(
            f"{p}queue_depth", "Rollout requests waiting for this group (undelivered + unacked)", registry=registry
        )
        self.errors = Counter(
            f"{p}errors_total", "Failures by kind: engine | rejected | weights", ["kind"], registry=registry
        )
        self.engine_ready = Gauge(f"{p}engine_ready", "1 when the engine is loaded and answering", registry=registry)
        for kind in ("engine", "rejected", "weights"):
            self.errors.labels(kind=kind)
