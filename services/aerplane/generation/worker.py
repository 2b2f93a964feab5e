"""The rollout loop: rollout requests in, one `GeneratedSample` per sampled response out, new weights between batches.

    read up to `max_batch_prompts` requests (group `generation`; a short wait fills the batch)
    → if a request wants a newer policy than is loaded, wait for its weights announcement and load it
    → tokenize each chat prompt, sample G responses per prompt on the backend (all prompts concurrently)
    → for each prompt as it finishes: publish its G samples and ack the request in one atomic step

Every sample carries the policy version of the weights that produced it (0 = the initial model); weights only
change between batches, so a batch never mixes versions. The weights stream is read by this instance on its own
(`XREVRANGE ... COUNT 1`: the latest announcement wins, older ones are skipped), not through a consumer group, because
every generation instance must see every announcement.

Failures: a request the engine rejects for good (prompt longer than the model allows) goes to the dead-letter
stream; one that fails for another reason stays pending and is retried (reclaimed after `claim_idle_ms`, then
dead-lettered after `max_deliveries`). If the engine itself dies the loop raises `EngineDied` and the process exits
non-zero for its supervisor to restart it. `stop()` (SIGTERM) lets the current batch finish and publish; a batch
still waiting for weights is handed back un-acked.

Liveness (`self.progress`, read by /healthz and the service's watchdog): a batch handed to the engine, and a weights
reload, is work in flight; each wave that comes back is progress. In flight with nothing back for
`hang_timeout_s` is a hang; waiting for requests or for a weights announcement is waiting for input, not a hang.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aerplane.common.liveness import Progress
from aerplane.common.messages import (
    EVENTS,
    ROLLOUT_GENERATED,
    ROLLOUT_REQUESTS,
    WEIGHTS,
    Event,
    GeneratedSample,
    MessageError,
    RolloutRequest,
    WeightsAnnouncement,
    decode,
)
from aerplane.common.streams import Delivery, StreamClient
from aerplane.generation.backends import Backend, BackendError, GenerationRequest, RequestRejected, SamplingParams
from aerplane.generation.metrics import GenerationMetrics
from aerplane.generation.settings import GenerationSettings

log = logging.getLogger(__name__)

LOOP = "generation.engine"  # the loop's name in /healthz and the watchdog's log line


class EngineDied(RuntimeError):
    """The generation engine is gone; the service must restart."""


@dataclass(eq=False)
class GenerationWorker:
    """The consume → generate → publish loop over the engine `backend`, with weight reloads between batches."""

    settings: GenerationSettings
    backend: Backend
    tokenizer: Any
    client: StreamClient
    metrics: GenerationMetrics
    version: int = field(default=0, init=False)  # the policy version the engine holds

    def __post_init__(self) -> None:
        self.consumer = self.client.consumer_for(ROLLOUT_REQUESTS, RolloutRequest, self.settings)
        self._skipped_weights: set[str] = set()  # announcement ids that failed to decode or load
        self._stop = threading.Event()
        self.progress = Progress(LOOP, self.settings.hang_timeout_s)
        self.metrics.policy_version.set(0)

    # --- loop -------------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        log.info(
            "consuming %s as %s/%s (backend %s)",
            self.consumer.key,
            self.settings.group,
            self.settings.consumer,
            self.backend.name,
        )
        self.sync_weights()
        while not self._stop.is_set():
            self.step()
        log.info("stopped")

    def step(self, block_ms: int = 1000) -> int:
        """One iteration: read a batch, bring the weights up to date, generate and publish. Returns prompts done."""
        batch = self._read_batch(block_ms)
        self._update_queue_depth()
        if not batch:
            self.sync_weights()
            return 0
        wanted = max(d.record.policy_version for d in batch)  # type: ignore[attr-defined]
        if not self.sync_weights(wait_for=wanted):
            log.info("stopping while waiting for weights; %d requests handed back un-acked", len(batch))
            return 0
        with self.progress.working(len(batch)):
            return self._process(batch)

    def _read_batch(self, block_ms: int) -> list[Delivery]:
        limit = self.settings.max_batch_prompts
        batch = self.consumer.read(count=limit, block_ms=block_ms)
        if not batch or self.settings.batch_wait_ms == 0:
            return batch
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
        while len(batch) < limit and not self._stop.is_set():
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms < 1:
                break
            more = self.consumer.read(count=limit - len(batch), block_ms=remaining_ms)
            if not more:
                break
            batch.extend(more)
        return batch

    def _update_queue_depth(self) -> None:
        try:
            info = self.client.group_info(ROLLOUT_REQUESTS, self.settings.group)
            self.metrics.queue_depth.set(info.backlog)
        except Exception as exc:  # a metric must never stop the loop
            log.debug("queue depth unavailable: %s", exc)

    # --- generation -------------------------------------------------------------------------------------------------

    def _process(self, batch: Sequence[Delivery]) -> int:
        """Sample one batch of requests and publish the samples of each wave of requests that finish together
        as it arrives (one round trip a wave); returns how many requests were done. A rejected request is
        dead-lettered; one the engine failed stays pending (reclaimed and retried later) unless the engine itself
        is down (EngineDied)."""
        version = self.version
        live, requests = self._engine_requests(batch)
        if not requests:
            return 0
        self.metrics.batch_prompts.set(len(requests))
        started = time.monotonic()
        response_tokens = done = 0
        engine_error: BackendError | None = None
        for wave in self.backend.generate_waves(requests):
            finished: list[tuple[Delivery, list[int], Sequence[Any]]] = []
            for index, result in wave:
                delivery, prompt_ids = live[index]
                if isinstance(result, RequestRejected):
                    self._dead_letter(delivery, str(result))
                elif isinstance(result, BaseException):
                    self.metrics.errors.labels(kind="engine").inc()
                    log.error("request %s (prompt %s) failed: %s", delivery.id, delivery.record.prompt_id, result)  # type: ignore[attr-defined]
                    engine_error = result
                else:
                    finished.append((delivery, prompt_ids, result))
            if finished:
                response_tokens += self._publish(finished, version)
                done += len(finished)
            self.progress.beat()
        seconds = time.monotonic() - started
        self.metrics.batch_seconds.observe(seconds)
        if seconds > 0 and response_tokens:
            self.metrics.tokens_per_second.set(response_tokens / seconds)
        rate = response_tokens / seconds if seconds > 0 else 0.0
        log.info(
            "batch: %d/%d prompts, %d tokens in %.2fs (%.0f tok/s), policy v%d",
            done,
            len(requests),
            response_tokens,
            seconds,
            rate,
            version,
        )
        if engine_error is not None:
            ok, details = self.backend.ready()
            if not ok:
                raise EngineDied(f"generation engine is down: {details}") from engine_error
        return done

    def _engine_requests(
        self, batch: Sequence[Delivery]
    ) -> tuple[list[tuple[Delivery, list[int]]], list[GenerationRequest]]:
        """The engine request of each delivery, with its prompt's token ids; a prompt that leaves no room for a
        response is dead-lettered here."""
        live: list[tuple[Delivery, list[int]]] = []
        requests: list[GenerationRequest] = []
        for d in batch:
            r: RolloutRequest = d.record  # type: ignore[assignment]
            prompt_ids = self.tokenize(r.prompt)
            room = self.backend.max_model_len - len(prompt_ids)
            if room < 1:
                self._dead_letter(
                    d, f"prompt has {len(prompt_ids)} tokens; the model allows {self.backend.max_model_len}"
                )
                continue
            params = SamplingParams(
                n=r.num_samples,
                temperature=r.temperature,
                top_p=r.top_p,
                max_tokens=min(r.max_tokens, room),
                seed=r.seed,
            )
            live.append((d, prompt_ids))
            requests.append(GenerationRequest(prompt_ids, params))
        return live, requests

    def _publish(self, finished: Sequence[tuple[Delivery, list[int], Sequence[Any]]], version: int) -> int:
        """Publish the samples of requests that finished together and ack the requests, in one round trip (each
        request's samples one group entry, published only with its ack); returns the response tokens."""
        records: list[GeneratedSample] = []
        sources: list[str] = []
        n_tokens = n_prompt_tokens = 0
        for delivery, prompt_ids, samples in finished:
            request: RolloutRequest = delivery.record  # type: ignore[assignment]
            prompt = {**request.prompt_fields(), "policy_version": version}
            for k, s in enumerate(samples):
                records.append(
                    GeneratedSample(
                        **prompt,
                        sample_index=k,
                        prompt_token_ids=prompt_ids,
                        response_token_ids=s.token_ids,
                        logprobs=s.logprobs,
                        response_text=s.text,
                        finish_reason=s.finish_reason,
                    )
                )
                sources.append(delivery.id)
                n_tokens += len(s.token_ids)
            n_prompt_tokens += len(prompt_ids) * len(samples)
        self.consumer.publish_and_ack(ROLLOUT_GENERATED, records, [d.id for d, _, _ in finished], sources=sources)
        self.metrics.requests.inc(len(finished))
        self.metrics.samples.inc(len(records))
        self.metrics.response_tokens.inc(n_tokens)
        self.metrics.prompt_tokens.inc(n_prompt_tokens)
        return n_tokens

    def tokenize(self, prompt: str) -> list[int]:
        """Token ids of an already chat-formatted prompt (no special tokens added: the template has them)."""
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.metrics.errors.labels(kind="rejected").inc()
        self.consumer.dead_letter(delivery, reason)

    # --- weights ----------------------------------------------------------------------------------------------------

    def latest_announcement(self) -> tuple[str, WeightsAnnouncement] | None:
        """The newest entry on the weights stream, or None (malformed ones are logged and skipped once)."""
        rows = self.client.entries(WEIGHTS, count=1, newest=True)
        if not rows:
            return None
        entry_id, payload = rows[0]
        if entry_id in self._skipped_weights:
            return None
        try:
            ann = decode(payload, expect=WeightsAnnouncement)
        except MessageError as exc:
            log.error("ignoring malformed weights announcement %s: %s", entry_id, exc)
            self._skipped_weights.add(entry_id)
            self.metrics.errors.labels(kind="weights").inc()
            return None
        return entry_id, ann  # type: ignore[return-value]

    def sync_weights(self, wait_for: int | None = None) -> bool:
        """Load the newest announced weights if newer than ours; with `wait_for`, wait (bounded) until we reach it.

        Returns False only when asked to stop while waiting.
        """
        self._maybe_load()
        if wait_for is None or self.version >= wait_for:
            return True
        deadline = time.monotonic() + self.settings.weights_wait_s
        log.info("requests want policy v%d, loaded v%d: waiting for its weights", wait_for, self.version)
        while self.version < wait_for:
            if self._stop.wait(0.1):
                return False
            self._maybe_load()
            if time.monotonic() > deadline:
                log.warning(
                    "policy v%d not announced within %.0fs; sampling with v%d",
                    wait_for,
                    self.settings.weights_wait_s,
                    self.version,
                )
                break
        return True

    def _maybe_load(self) -> None:
        latest = self.latest_announcement()
        if latest is None:
            return
        entry_id, ann = latest
        if ann.version <= self.version:
            return
        started = time.monotonic()
        try:
            with self.progress.working():
                self.backend.load_weights(Path(ann.path))
        except BackendError as exc:
            log.error("could not load weights v%d from %s: %s", ann.version, ann.path, exc)
            self._skipped_weights.add(entry_id)
            self.metrics.errors.labels(kind="weights").inc()
            return
        seconds = time.monotonic() - started
        previous, self.version = self.version, ann.version
        self.metrics.weight_reload_seconds.observe(seconds)
        self.metrics.weight_reloads.inc()
        self.metrics.policy_version.set(ann.version)
        log.info("loaded weights v%d (was v%d) from %s in %.3fs", ann.version, previous, ann.path, seconds)
        try:
            detail = {"version": ann.version, "seconds": seconds, "consumer": self.settings.consumer}
            event = Event(run_id=self.settings.run_id, kind="generation.weights_loaded", step=ann.step, detail=detail)
            self.client.publish(EVENTS, event)
        except Exception as exc:  # the event is informational
            log.debug("could not publish the weights_loaded event: %s", exc)
