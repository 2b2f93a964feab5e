"""One Prometheus collector for every stream consumer (reward, generation, the learner): read at scrape time, so no
consumer loop keeps gauges up to date or counts deltas.

For a service with metric prefix `P` (e.g. `aerplane_reward`):

- `P_stream_lag{stream,group}`: entries not yet delivered to the group; `P_stream_pending{stream,group}`: delivered,
  not acked — for each (stream, group) the service watches (its input, and for reward the learner's input too);
- `P_dead_letters_total`, `P_duplicates_dropped_total`: what this process's consumer moved to the dead-letter
  stream / did not publish because another consumer already had; `P_redis_reconnects_total`: Redis calls retried.

A scrape never waits for Redis: the lag gauges are left out of that scrape when Redis does not answer at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class StreamMetrics(Collector):
    """Scrape-time stream metrics of one consumer; `client` a StreamClient, `consumer` returns the current Consumer
    (or None before there is one), `watch` the (stream, group) pairs whose lag and pending count to export."""

    def __init__(
        self,
        prefix: str,
        client: Any,
        consumer: Callable[[], Any],
        watch: Sequence[tuple[str, str]],
    ) -> None:
        self.prefix = prefix
        self.client = client
        self.consumer = consumer
        self.watch = tuple(watch)

    def register(self, registry: CollectorRegistry) -> StreamMetrics:
        registry.register(self)
        return self

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        p = self.prefix
        lag = GaugeMetricFamily(f"{p}_stream_lag", "Entries not yet delivered to the group", labels=["stream", "group"])
        pending = GaugeMetricFamily(
            f"{p}_stream_pending", "Entries delivered to the group, not acked", labels=["stream", "group"]
        )
        try:
            for stream, group in self.watch:
                info = self.client.group_info(stream, group, retry=False)
                lag.add_metric([stream, group], info.lag)
                pending.add_metric([stream, group], info.pending)
            yield lag
            yield pending
        except Exception as exc:  # Redis away: this scrape goes without the lag gauges
            log.debug("stream metrics: %s", exc)
        consumer = self.consumer()
        for name, text, value in (
            ("dead_letters", "Entries moved to the dead-letter stream", getattr(consumer, "dead_lettered", 0)),
            (
                "duplicates_dropped",
                "Results not published because another consumer had already published them",
                getattr(consumer, "duplicates_dropped", 0),
            ),
            ("redis_reconnects", "Redis calls retried after a connection error", self.client.reconnects),
        ):
            yield CounterMetricFamily(f"{p}_{name}", text, value=value)

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return iter(())  # collected at scrape time only (never at registration, which would call Redis)
