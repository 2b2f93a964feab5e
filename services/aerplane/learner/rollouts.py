"""The learner's side of the rollout streams: which prompts each step trains on, requesting them, collecting them.

- `PromptSchedule`: step s trains on items [s·P, (s+1)·P) of an endless stream that reshuffles the task list each
  epoch (seeded by the run seed and the epoch). The data position is therefore the step itself: a resumed run asks
  for exactly the prompts the interrupted one would have.
- `RolloutCollector` (rank 0 only): reads `rollout:scored`, keeps the samples of the steps it expects, and hands
  back a step's groups once every prompt has its G samples. It drops — and counts — samples of another run,
  duplicates (same step, prompt and sample index: re-deliveries, a re-published request), late samples of steps
  already trained, and stale ones whose policy version is older than (step − staleness); for a stale group it asks
  generation again (at most every `rerequest_interval_s` per prompt) so the step still completes.

Deliveries are acked as soon as they are handled: the buffer is in memory, so a learner that dies loses what it
held; on `--resume` it publishes the requests of the steps it has not trained again, and the de-duplication by key
makes the regenerated samples count once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aerplane.common.messages import ROLLOUT_REQUESTS, RolloutRequest, ScoredSample

log = logging.getLogger(__name__)

LEARNER_GROUP = "learner"


class RolloutTimeout(TimeoutError):
    """A step's rollouts did not all arrive in time."""


class PromptSchedule:
    """Deterministic prompts per step over an endless, per-epoch reshuffled item list."""

    def __init__(self, items: Sequence[Any], prompts_per_step: int, *, seed: int, shuffle: bool = True) -> None:
        if not items:
            raise ValueError("the task list is empty")
        self.items = list(items)
        self.per_step = prompts_per_step
        self.seed = seed
        self.shuffle = shuffle
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.items)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._orders = {epoch: order}  # one epoch at a time is enough: steps are asked for in order
        return self._orders[epoch]

    def position(self, step: int) -> dict[str, int]:
        """Where step `step` starts in the data (epoch, index within the epoch)."""
        start = step * self.per_step
        return {"epoch": start // len(self.items), "index": start % len(self.items), "items": len(self.items)}

    def items_for_step(self, step: int) -> list[Any]:
        out = []
        for k in range(step * self.per_step, (step + 1) * self.per_step):
            epoch, index = divmod(k, len(self.items))
            out.append(self.items[self._order(epoch)[index]])
        return out


def unique_prompt_ids(ids: Sequence[str]) -> list[str]:
    """Make prompt ids unique within a step (an epoch boundary can put one item in a step twice)."""
    seen: dict[str, int] = {}
    out = []
    for pid in ids:
        n = seen.get(pid, 0)
        seen[pid] = n + 1
        out.append(pid if n == 0 else f"{pid}#{n}")
    return out


@dataclass
class CollectStats:
    """What the collector saw while waiting for one step."""

    accepted: int = 0
    duplicate: int = 0
    stale: int = 0
    late: int = 0
    foreign: int = 0
    unexpected: int = 0
    rerequested: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def outcome(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)


class RolloutCollector:
    """Rank 0's buffer of scored samples, by step and prompt, with de-duplication and the staleness bound."""

    def __init__(
        self,
        consumer: Any,
        publish: Callable[[list[RolloutRequest]], None],
        *,
        run_id: str,
        samples_per_prompt: int,
        staleness: int,
        rerequest_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.publish = publish
        self.run_id = run_id
        self.G = samples_per_prompt
        self.staleness = staleness
        self.rerequest_interval_s = rerequest_interval_s
        self.clock = clock
        self.requests: dict[int, dict[str, RolloutRequest]] = {}  # step -> prompt_id -> request
        self.buffer: dict[int, dict[str, dict[int, ScoredSample]]] = {}
        self.trained_below = 0  # steps below this are done: their samples are late
        self._last_rerequest: dict[tuple[int, str], float] = {}
        self.stats = CollectStats()

    # --- bookkeeping ----------------------------------------------------------------------------------------------

    def expect(self, requests: Sequence[RolloutRequest]) -> None:
        for r in requests:
            self.requests.setdefault(r.step, {})[r.prompt_id] = r

    def missing(self, step: int) -> dict[str, int]:
        """prompt_id -> samples still missing for `step`."""
        have = self.buffer.get(step, {})
        return {
            pid: self.G - len(have.get(pid, {}))
            for pid in self.requests.get(step, {})
            if len(have.get(pid, {})) < self.G
        }

    def complete(self, step: int) -> bool:
        return step in self.requests and not self.missing(step)

    def finish(self, step: int) -> None:
        """Forget everything about steps up to `step` (trained)."""
        self.trained_below = max(self.trained_below, step + 1)
        for s in [s for s in self.requests if s <= step]:
            del self.requests[s]
        for s in [s for s in self.buffer if s <= step]:
            del self.buffer[s]
        self._last_rerequest = {k: v for k, v in self._last_rerequest.items() if k[0] > step}

    # --- intake ---------------------------------------------------------------------------------------------------

    def offer(self, sample: ScoredSample) -> str:
        """File one scored sample; returns its outcome (accepted, duplicate, stale, late, foreign, unexpected)."""
        if sample.run_id != self.run_id:
            outcome = "foreign"
        elif sample.step < self.trained_below:
            outcome = "late"
        elif sample.num_samples != self.G or not self._expected(sample.step, sample.prompt_id):
            outcome = "unexpected"
        elif sample.policy_version + self.staleness < sample.step:
            outcome = "stale"
            self._maybe_rerequest(sample.step, sample.prompt_id)
        else:
            group = self.buffer.setdefault(sample.step, {}).setdefault(sample.prompt_id, {})
            if sample.sample_index in group:
                outcome = "duplicate"
            else:
                group[sample.sample_index] = sample
                outcome = "accepted"
        self.stats.outcome(outcome)
        if outcome not in ("accepted", "duplicate"):
            log.debug("dropped %s sample %s (policy version %d)", outcome, sample.key, sample.policy_version)
        return outcome

    def _expected(self, step: int, prompt_id: str) -> bool:
        """A prompt this learner asked for — or, for a step it has not asked for yet but soon will (requests left
        by a previous, crashed learner of the same run, which asked for the same prompts), any prompt: `collect`
        returns only the prompts of the step's requests."""
        if step in self.requests:
            return prompt_id in self.requests[step]
        return step <= self.trained_below + 2 * (self.staleness + 1)

    def _maybe_rerequest(self, step: int, prompt_id: str) -> None:
        if prompt_id not in self.requests.get(step, {}):
            return  # not asked for by this learner yet; its own request comes
        now = self.clock()
        key = (step, prompt_id)
        if now - self._last_rerequest.get(key, float("-inf")) < self.rerequest_interval_s:
            return
        self._last_rerequest[key] = now
        old = self.requests[step][prompt_id]
        from dataclasses import replace

        fresh = replace(old, policy_version=max(old.policy_version, step - self.staleness))
        log.info("step %d prompt %s: stale samples, requesting the group again", step, prompt_id)
        self.publish([fresh])
        self.stats.rerequested += 1

    def poll(self, block_ms: int = 500) -> int:
        """Read one batch of deliveries from the stream, file and ack them; returns how many arrived."""
        deliveries = self.consumer.read(count=256, block_ms=block_ms)
        for d in deliveries:
            self.offer(d.record)
        if deliveries:
            self.consumer.ack(*[d.id for d in deliveries])
        return len(deliveries)

    def collect(
        self, step: int, *, timeout_s: float = 0.0, should_stop: Callable[[], bool] = lambda: False
    ) -> dict[str, list[ScoredSample]] | None:
        """Wait until every prompt of `step` has G samples; return them by prompt (in request order, samples sorted
        by index), or None when `should_stop()` turned true first. Raises RolloutTimeout after `timeout_s` (> 0)."""
        if step not in self.requests:
            raise ValueError(f"step {step}: no requests were published for it")
        self.stats = CollectStats()
        start = self.clock()
        last_log = start
        while not self.complete(step):
            if should_stop():
                return None
            self.poll()
            now = self.clock()
            if timeout_s and now - start > timeout_s and not self.complete(step):
                missing = self.missing(step)
                raise RolloutTimeout(
                    f"step {step}: {sum(missing.values())} samples of {len(missing)} prompts still missing after "
                    f"{timeout_s:.0f}s (is generation/reward running for run {self.run_id!r}?)"
                )
            if now - last_log > 30:
                last_log = now
                missing = self.missing(step)
                log.info("step %d: waiting for %d samples of %d prompts", step, sum(missing.values()), len(missing))
        self.stats.seconds = self.clock() - start
        groups = self.buffer.get(step, {})
        extra = set(groups) - set(self.requests[step])
        self.stats.unexpected += sum(len(groups[pid]) for pid in extra)
        return {pid: [groups[pid][i] for i in sorted(groups[pid])] for pid in self.requests[step]}


def publish_requests(client: Any, requests: list[RolloutRequest]) -> None:
    if requests:
        client.publish_many(ROLLOUT_REQUESTS, requests)
