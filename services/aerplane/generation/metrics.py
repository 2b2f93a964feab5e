"""Prometheus metrics of the generation service (`aerplane_generation_*`), on the process's own registry, and vLLM's
own `vllm:*` series passed through the same /metrics (`VLLMMetricsProxy`). The request stream's lag, pending count,
dead letters and Redis reconnects come from the collector every consumer shares (`common.stream_metrics`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

_BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_RELOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GenerationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
            f"{p}weight_reload_seconds",
            "Time to load announced weights into the engine",
            buckets=_RELOAD_BUCKETS,
            registry=registry,
        )
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


class VLLMMetricsProxy:
    """vLLM's `vllm:*` series (KV-cache use, queue, throughput), read from the vLLM server's /metrics at each scrape.

    The vLLM server listens on 127.0.0.1 only, so that its /collective_rpc and weight-reload routes never leave the
    container or pod; Prometheus reads its metrics here, on the generation service's own /metrics. Only `vllm:*`
    families pass (vLLM's process and Python collectors would clash with this process's); when vLLM does not answer,
    the scrape simply has no vllm:* series.
    """

    def __init__(self, url: str, timeout: float = 3.0) -> None:
        self.url = url
        self.timeout = timeout

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: the families are vLLM's, read at scrape time

    def collect(self) -> Iterator[Metric]:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            resp = httpx.get(self.url, timeout=self.timeout)
            resp.raise_for_status()
            families = list(text_string_to_metric_families(resp.text))
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("vLLM metrics at %s: %s", self.url, exc)
            return
        for family in families:
            if family.name.startswith("vllm:"):
                yield family
