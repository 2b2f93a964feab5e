"""The reward service's stream loop (`StreamScorer`): `rollout:generated` → verification pool → `rollout:scored`.

Not to be confused with the pool's worker processes (pool.py), which score one item each: this is the one loop
that feeds them from the stream, as generation/worker.py is the generation service's. The app (app.py) starts it
in its lifespan unless `consume` is off. One loop on a background thread, top to bottom:

1. back-pressure: while the learner's group has more than `downstream_max_lag` unfinished scored entries, wait;
2. read up to `batch_size` generated samples (reclaimed idle ones first; poison ones are dead-lettered by the
   consumer);
3. score them concurrently in the pool (every item gets a score: a hang is `timeout`, a crash `error`), renewing
   the claim on the batch every `claim_idle_ms / 3` so that a long batch is not reclaimed by another replica;
4. publish the `ScoredSample`s and ack their sources in one atomic step (`Consumer.publish_and_ack` with one source
   per result, so a result reclaimed and scored twice is still published once).

Liveness (`self.progress`, read by /healthz and the watchdog in app.py): from reading a batch until it is published
the loop holds work; each item the pool finishes, each publish retry and the publish itself is progress. No
progress for `hang_timeout_s` while holding a batch is a hang; waiting for entries or for the learner is not.

Redis outages: each call retries with backoff (`StreamClient`); a batch that was scored but could not be published
is retried until it is, or until shutdown, when it is left pending for another replica to reclaim. On stop (SIGTERM)
the batch in flight is finished and published; nothing unfinished is acked.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import wait
from typing import Any

import redis

from aerplane.common.liveness import Progress
from aerplane.common.messages import ROLLOUT_GENERATED, ROLLOUT_SCORED, GeneratedSample, ScoredSample
from aerplane.common.stream_metrics import StreamMetrics
from aerplane.common.streams import Consumer, Delivery, StreamClient
from aerplane.reward.metrics import RewardMetrics
from aerplane.reward.pool import WorkerPool
from aerplane.reward.settings import RewardSettings

log = logging.getLogger(__name__)

_RETRY_S = 1.0
_RECONNECT_TIMEOUT_S = 10.0  # per call; the loop itself retries forever, checking for shutdown in between
LOOP = "reward.stream"  # the loop's name in /healthz and the watchdog's log line


class StreamScorer:
    """Consumes a run's generated rollouts and publishes scored ones until `stop()`."""

    def __init__(self, settings: RewardSettings, pool: WorkerPool, metrics: RewardMetrics) -> None:
        if settings.run_id is None:
            raise ValueError("run_id: required to consume streams")
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.client = StreamClient(
            settings.redis_url, settings.run_id, maxlen=settings.stream_maxlen, reconnect_timeout=_RECONNECT_TIMEOUT_S
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reward-consumer", daemon=True)
        self._consumer: Consumer | None = None
        self.progress = Progress(LOOP, settings.hang_timeout_s)
        watch = [(ROLLOUT_GENERATED, settings.group), (ROLLOUT_SCORED, settings.downstream_group)]
        StreamMetrics("aerplane_reward", self.client, lambda: self._consumer, watch).register(metrics.registry)
        self.scored = 0  # samples published by this replica
        self.last_error: str | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> StreamScorer:
        self._thread.start()
        return self

    def stop(self, timeout: float) -> bool:
        """Finish the batch in flight (up to `timeout` seconds) and stop; True if the loop ended in time."""
        self._stop.set()
        self._thread.join(timeout)
        finished = not self._thread.is_alive()
        if not finished:
            log.warning("the batch in flight did not finish within %.0fs; its entries stay pending", timeout)
        self.client.close()
        return finished

    def ready(self) -> tuple[bool, dict[str, Any]]:
        redis_ok = self.client.ping()
        running = self._thread.is_alive()
        details = {"redis": redis_ok, "consumer": running, "scored": self.scored}
        if self.last_error:
            details["last_error"] = self.last_error
        return redis_ok and running, details

    # --- the loop -----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        s = self.settings
        log.info("consuming %s as %s/%s", self.client.key(ROLLOUT_GENERATED), s.group, s.consumer)
        while not self._stop.is_set():
            try:
                if self._consumer is None:
                    self._consumer = self.client.consumer_for(ROLLOUT_GENERATED, GeneratedSample, s)
                if self._downstream_full():
                    self._stop.wait(0.2)
                    continue
                deliveries = self._consumer.read(count=s.batch_size, block_ms=s.block_ms)
                if deliveries:
                    with self.progress.working(len(deliveries)):
                        self._score_and_publish(self._consumer, deliveries)
                self.last_error = None
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._note_error(f"redis unavailable: {exc}")
            except Exception as exc:  # keep consuming; the entries involved stay pending and are retried
                log.exception("consumer loop error")
                self._note_error(f"{type(exc).__name__}: {exc}")
        log.info("consumer stopped after publishing %d scored samples", self.scored)

    def _note_error(self, message: str) -> None:
        self.last_error = message
        log.warning("%s; retrying in %.0fs", message, _RETRY_S)
        self._stop.wait(_RETRY_S)

    def _downstream_full(self) -> bool:
        limit = self.settings.downstream_max_lag
        if not limit:
            return False
        backlog = self.client.group_info(ROLLOUT_SCORED, self.settings.downstream_group).backlog
        return backlog > limit

    def _score_and_publish(self, consumer: Consumer, deliveries: list[Delivery]) -> None:
        samples: list[GeneratedSample] = [d.record for d in deliveries]  # type: ignore[misc]
        ids = [d.id for d in deliveries]
        futures = [self.pool.submit(g.task, g.response_text, g.ground_truth, source="stream") for g in samples]
        for future in futures:
            future.add_done_callback(lambda _: self.progress.beat())
        # A batch may take longer than claim_idle_ms (many items at their timeout): keep our claim on it fresh.
        heartbeat = self.settings.claim_idle_ms / 3000
        while wait(futures, timeout=heartbeat).not_done:
            try:
                consumer.extend(*ids)
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # not fatal: at worst another replica scores these too, and only one result is published
        scores = [f.result() for f in futures]
        results = [ScoredSample.from_generated(g, s.reward, s.reason) for g, s in zip(samples, scores, strict=True)]
        # Publishing must not be abandoned on a Redis outage: the scores are done. Retry until shutdown.
        while True:
            try:
                published = consumer.publish_and_ack(ROLLOUT_SCORED, results, ids, sources=ids)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.progress.beat()  # waiting on Redis, not stuck: a restart would not bring Redis back
                if self._stop.is_set():
                    log.warning("shutting down with %d scored samples unpublished (left pending)", len(results))
                    return
                self._note_error(f"redis unavailable while publishing: {exc}")
        self.progress.beat()
        self.scored += len(published)
        self.metrics.batches.inc()
