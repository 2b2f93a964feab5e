"""Rank 0's side of the training loop: prompts, streams, coefficients, weights, metrics (the other ranks only train).

    driver = open_driver(settings, ctx, model_path, stop, resumed, progress)   # every part built, connected, checked
    plan = driver.plan_step(step, phases)       # rollouts in, α and λ from the coefficient service, the batch
    ...train...
    state = driver.report(step, result, phases)  # H_t out, the step's groups into the consumed-rollout record
    driver.publish_weights(lm, weights, version, step); driver.record(row); driver.close(finished=...)

`open_driver` is the factory: it builds each part from the settings group it needs and hands the `Driver` parts
that are whole (no field is filled in later). The loop itself is `aerplane.learner.train.train`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aerplane.common.liveness import Progress, Watchdog
from aerplane.core.step_figures import StepFigures
from aerplane.learner import checkpoint as ckpt
from aerplane.learner.batching import TrainSample, group_accuracy, mean_by, truncate_response
from aerplane.learner.metrics import LearnerMetrics, MetricsLog
from aerplane.learner.settings import (
    BatchSettings,
    DataSettings,
    LearnerSettings,
    LengthSettings,
    RunSettings,
    SamplingSettings,
    SettingsError,
    WeightsSettings,
    strategy_kwargs,
)
from aerplane.learner.step import StepResult

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from aerplane.common.messages import PromptSlot
    from aerplane.common.ops import OpsServer
    from aerplane.common.streams import StreamClient
    from aerplane.common.trackers import Trackers
    from aerplane.learner.checkpointer import Resumed
    from aerplane.learner.coefficients import CoefficientSource
    from aerplane.learner.distributed import Dist
    from aerplane.learner.ledger import ConsumedLedger
    from aerplane.learner.rollouts import PromptSchedule, RolloutCollector

log = logging.getLogger("aerplane.learner")

# Seconds a hung step stays up past its bound answering /healthz 503, before the watchdog exits: three of `aerplane
# up`'s probe intervals (launcher.supervise.RestartPolicy.health_interval_s), so its supervisor records `hung`.
HANG_EXIT_GRACE_S = 15.0


@dataclass
class StepPlan:
    """Rank 0's decision for one step, broadcast to every rank."""

    stop: bool = False
    error: str | None = None
    samples: list[TrainSample] | None = None
    alpha: float = 0.0
    measure_only: bool = False


@dataclass
class Requests:
    """What each rollout request asks of generation: the settings groups it is made from."""

    run: RunSettings
    batch: BatchSettings
    sampling: SamplingSettings
    lengths: LengthSettings


@dataclass
class Driver:
    """Rank 0's parts, each whole, and the loop's bookkeeping (policy version, what was requested and consumed)."""

    requests: Requests
    normalize_std: bool  # loss.normalize_std: group advantages divided by the group's std
    anchor_steps: int  # the strategy's measuring steps before the first update
    weights: WeightsSettings
    weights_dir: Path
    pad_id: int
    schedule: PromptSchedule
    ledger: ConsumedLedger
    streams: StreamClient
    collector: RolloutCollector
    coefficients: CoefficientSource
    registry: CollectorRegistry
    metrics: LearnerMetrics
    metrics_log: MetricsLog
    trackers: Trackers  # --report-to: each step's record and overrides (common.trackers); may hold none
    stop: threading.Event
    watchdog: Watchdog  # exits the process when the step (`Loop.progress`) is hung; /healthz reads its check
    version: int = 0
    published_through: int = -1
    consumed: dict[str, list[Any]] = field(default_factory=dict)  # the groups of the step being trained
    last_info: dict[str, Any] = field(default_factory=dict)
    figures_left_out: set[str] = field(default_factory=set)  # the figures whose leaving out was logged once
    ready: bool = False
    ops: OpsServer | None = None  # started by open_driver, stopped by close

    @property
    def run(self) -> RunSettings:
        return self.requests.run

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        redis_ok = self.streams.ping()
        return self.ready and redis_ok, {"training": self.ready, "redis": redis_ok, "policy_version": self.version}

    # --- one step ---------------------------------------------------------------------------------------------

    def slots(self, step: int) -> list[PromptSlot]:
        from aerplane.learner.rollouts import unique_prompt_ids

        items = self.schedule.items_for_step(step)
        ids = unique_prompt_ids([it.prompt_id for it in items])
        return [
            replace(it, step=step, slot=k, prompt_id=pid) for k, (it, pid) in enumerate(zip(items, ids, strict=True))
        ]

    def request_ahead(self, step: int) -> None:
        """Publish the requests of every step up to `step + staleness` not published yet."""
        from aerplane.common.messages import build_requests
        from aerplane.learner.rollouts import publish_requests

        r = self.requests
        last = min(step + r.run.staleness, r.run.steps - 1)
        for future in range(max(step, self.published_through + 1), last + 1):
            reqs = build_requests(
                r.run.run_id,
                future,
                self.slots(future),
                num_samples=r.batch.samples_per_prompt,
                policy_version=max(0, future - r.run.staleness),
                temperature=r.sampling.temperature,
                top_p=r.sampling.top_p,
                max_tokens=r.lengths.max_response_tokens,
                seed=r.run.seed,
            )
            self.collector.expect(reqs)
            publish_requests(self.streams, reqs)
            self.published_through = future

    def plan_step(self, step: int, phases: dict[str, float]) -> StepPlan:
        """Collect step `step`'s rollouts and coefficients; any failure becomes a plan with `error`."""
        from aerplane.learner.rollouts import RolloutTimeout

        if self.stop.is_set():
            return StepPlan(stop=True)
        try:
            t = time.perf_counter()
            self.request_ahead(step)
            groups = self.collector.collect(step, timeout_s=self.run.rollout_timeout_s, should_stop=self.stop.is_set)
            phases["wait_rollouts"] = time.perf_counter() - t
            if groups is None:
                return StepPlan(stop=True)
            self.collector.finish(step)
            self.consumed = groups

            t = time.perf_counter()
            pids = list(groups)
            rewards = [[float(x.reward) for x in groups[pid]] for pid in pids]
            accs = [group_accuracy(r) for r in rewards]
            alpha, weights, _ = self.coefficients.coefficients(
                step, [(pid, acc, len(groups[pid])) for pid, acc in zip(pids, accs, strict=True)]
            )
            if len(weights) != len(pids):
                raise RuntimeError(f"coefficient service returned {len(weights)} prompt weights for {len(pids)}")
            phases["coefficients"] = time.perf_counter() - t
        except RolloutTimeout as exc:
            return StepPlan(error=str(exc))
        except Exception as exc:  # every rank must hear about it, not hang in the broadcast
            log.exception("step %d: planning failed", step)
            return StepPlan(error=f"{type(exc).__name__}: {exc}")
        samples = self._samples(groups, rewards, weights)
        self.last_info = {"alpha": alpha, **self._batch_info(groups, accs, weights)}
        return StepPlan(samples=samples, alpha=alpha, measure_only=step < self.anchor_steps - 1)

    def _samples(
        self, groups: dict[str, list[Any]], rewards: list[list[float]], weights: list[float]
    ) -> list[TrainSample]:
        """The step's batch: every sample with its group-normalised advantage and its prompt's weight λ_q."""
        from aerplane.core.advantages import group_advantages

        max_resp = self.requests.lengths.max_response_tokens
        advantages = group_advantages(torch.tensor(rewards, dtype=torch.float32), normalize_std=self.normalize_std)
        samples: list[TrainSample] = []
        for q, pid in enumerate(groups):
            for x, a in zip(groups[pid], advantages[q].tolist(), strict=True):
                sample = TrainSample(
                    prompt_index=q,
                    prompt_ids=list(x.prompt_token_ids),
                    response_ids=list(x.response_token_ids),
                    sampler_logprobs=list(x.logprobs),
                    reward=float(x.reward),
                    advantage=float(a),
                    weight=float(weights[q]),
                    difficulty=x.difficulty,
                    policy_version=x.policy_version,
                    prompt_id=pid,
                )
                samples.append(truncate_response(sample, max_resp))
        return samples

    def _batch_info(self, groups: dict[str, list[Any]], accs: list[float], weights: list[float]) -> dict[str, Any]:
        """The batch's figures for metrics.jsonl: λ, accuracy (per difficulty too), lengths, staleness, samples."""
        xs = [x for pid in groups for x in groups[pid]]
        lengths = [len(x.response_token_ids) for x in xs]
        lags = [self.version - x.policy_version for x in xs]
        stats = self.collector.stats
        return {
            "mean_prompt_weight": sum(weights) / len(weights),
            "accuracy": sum(accs) / len(accs),
            "accuracy_by_difficulty": mean_by(accs, [groups[pid][0].difficulty for pid in groups]),
            "response_length": sum(lengths) / len(lengths),
            "policy_version_lag": sum(lags) / len(lags),
            "samples": {
                k: getattr(stats, k)
                for k in ("accepted", "duplicate", "stale", "late", "foreign", "unexpected", "rerequested")
            },
        }

    def report(self, step: int, result: StepResult, phases: dict[str, float]) -> dict[str, Any]:
        """After the step's update: report H_t to the coefficient service, record the consumed groups."""
        from aerplane.learner.ledger import Sample

        t = time.perf_counter()
        figures, left_out = StepFigures(
            accuracy_by_difficulty=self.last_info.get("accuracy_by_difficulty"),
            response_length=self.last_info.get("response_length"),
            total_steps=self.requests.run.steps,
        ).sound_part(step)
        for why in left_out:  # the service would refuse the whole report for it (metrics.jsonl keeps the figure)
            name = why.split(":", 1)[0].split(".", 1)[0]
            if name not in self.figures_left_out:
                self.figures_left_out.add(name)
                log.warning("step %d: %s; left out of the report to the coefficient service (said once)", step, why)
        state = self.coefficients.report(step, result.mean_entropy, result.num_tokens, figures)
        self.trackers.coefficient_state(step, state)
        groups = {pid: [Sample(x.sample_index, x.policy_version) for x in xs] for pid, xs in self.consumed.items()}
        self.ledger.record(
            step,
            groups,
            samples_per_prompt=self.requests.batch.samples_per_prompt,
            policy_version=self.version,
            update=result.updates > 0,
        )
        phases["report"] = time.perf_counter() - t
        self.version = step + 1  # policy version = steps completed (an anchoring step's weights are unchanged)
        return state

    def checkpoint_state(self, step: int) -> dict[str, Any]:
        """What a checkpoint of `step` keeps of rank 0's side (`Checkpointer.save`)."""
        self.metrics.checkpoints.inc()
        return {
            "data_position": self.schedule.position(step),
            "coefficients": self.coefficients.state_dict(),
            "ledger": self.ledger.mark(),
        }

    def weights_missing(self, version: int) -> bool:
        return not (self.weights_dir / f"v{version}" / "config.json").is_file()

    def publish_weights(self, lm: torch.nn.Module, state: dict[str, Any] | None, version: int, step: int) -> None:
        """Write `state` (from `trainable.serving_weights`) as version `version` and announce it; `state=None`
        announces the folder already there (after a resume)."""
        from aerplane.common.messages import WEIGHTS, WeightsAnnouncement

        path = self.weights_dir / f"v{version}"
        if state is not None:
            path, num_bytes = ckpt.publish_weights(lm, self.weights_dir, version, self.weights.keep, state_dict=state)
        else:
            num_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        announcement = WeightsAnnouncement(
            run_id=self.run.run_id, version=version, step=step, path=str(path.resolve()), num_bytes=num_bytes
        )
        self.streams.publish(WEIGHTS, announcement)
        self.metrics.weights.inc()

    def record(self, row: dict[str, Any]) -> None:
        """One step's line in metrics.jsonl, on /metrics and in the experiment trackers."""
        self.metrics_log.append(row)
        self.metrics.record(row)
        self.trackers.log_step(row)

    def event(self, kind: str, step: int, detail: dict[str, Any]) -> None:
        from aerplane.common.messages import EVENTS, Event

        try:
            self.streams.publish(EVENTS, Event(run_id=self.run.run_id, kind=kind, step=step, detail=detail))
        except Exception as exc:  # an event is informational; never fail the run over one
            log.warning("could not publish event %s: %s", kind, exc)

    def close(self, *, finished: bool) -> None:
        self.watchdog.stop()
        self.ready = False
        self.event("learner_finished" if finished else "learner_stopped", self.version, {})
        self.trackers.close(finished=finished)
        self.streams.close()
        self.ledger.close()
        self.coefficients.close()
        if self.ops is not None:
            self.ops.stop()


def metrics_row(
    step: int, driver: Driver, result: StepResult, coef: dict[str, Any], phases: dict[str, float], seconds: float
) -> dict[str, Any]:
    """Step `step`'s line of metrics.jsonl (the same fields on /metrics)."""
    info = driver.last_info
    train_s = phases.get("forward_backward", 0.0)
    return {
        "step": step,
        "policy_version": driver.version,
        "alpha": info["alpha"],
        "next_alpha": coef.get("alpha"),
        **{term: coef.get(term) for term in ("p_term", "i_term", "d_term")},  # next_alpha's PID terms (aer)
        "mean_entropy": result.mean_entropy,
        "entropy_by_difficulty": result.entropy_by_difficulty,
        "target_entropy": coef.get("target_entropy"),
        "initial_entropy": coef.get("initial_entropy"),
        "mean_prompt_weight": info["mean_prompt_weight"],
        "accuracy": info["accuracy"],
        "accuracy_by_difficulty": info["accuracy_by_difficulty"],
        "response_length": info["response_length"],
        "pg_loss": result.pg_loss,
        "entropy_loss": result.entropy_loss,
        "kl": result.kl,
        "sampler_kl": result.sampler_kl,
        "clip_fraction": result.clip_fraction,
        "grad_norm": result.grad_norm,
        "lr": result.lr,
        "measure_only": result.updates == 0,
        "response_tokens": result.num_tokens,
        "tokens": result.tokens_total,
        "tokens_per_s": result.tokens_total / seconds if seconds > 0 else 0.0,
        "train_tokens_per_s": result.tokens_total / train_s if train_s > 0 else 0.0,
        "step_seconds": seconds,
        "phases": phases,
        "policy_version_lag": info["policy_version_lag"],
        "samples": info["samples"],
        "time": time.time(),
    }


# --- the factory ----------------------------------------------------------------------------------------------


def open_driver(
    settings: LearnerSettings, ctx: Dist, model_path: str, stop: threading.Event, resumed: Resumed, progress: Progress
) -> Driver:
    """Build rank 0's parts from their settings groups, connect them, and check the data against the record of
    consumed rollouts when resuming. Raises SettingsError when the data changed since the run started."""
    from transformers import AutoTokenizer

    from aerplane.common.ops import new_registry
    from aerplane.common.trackers import open_trackers
    from aerplane.core.strategies import build_strategy
    from aerplane.learner.coefficients import build_coefficients
    from aerplane.learner.ledger import ConsumedLedger
    from aerplane.learner.rollouts import PromptSchedule

    s, start_step = settings, resumed.step
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    registry = new_registry()
    metrics = LearnerMetrics(registry)
    coefficients = build_coefficients(s.strategy, s.coefficient, s.run.run_id)
    items = load_prompt_slots(tokenizer, s.data, s.lengths, seed=s.run.seed)
    schedule = PromptSchedule(items, s.batch.prompts_per_step, seed=s.run.seed, shuffle=s.data.shuffle)
    ledger = ConsumedLedger.open(s.run_dir, resumed.ledger_mark, start_step=start_step)
    strategy = build_strategy(s.strategy.name, **strategy_kwargs(s.strategy.params, s.strategy.options))
    streams, collector = _connect(s.redis_url, s.run, s.batch, registry, start_step)
    trackers = open_trackers(s.tracking, s.run.run_id, s.run_dir, config=s.snapshot(), start_step=start_step)
    driver = Driver(
        requests=Requests(s.run, s.batch, s.sampling, s.lengths),
        normalize_std=s.loss.normalize_std,
        anchor_steps=strategy.anchor_steps(),
        weights=s.weights,
        weights_dir=s.weights_dir,
        pad_id=pad_id,
        schedule=schedule,
        ledger=ledger,
        streams=streams,
        collector=collector,
        coefficients=coefficients,
        registry=registry,
        metrics=metrics,
        metrics_log=MetricsLog(s.run_dir / "metrics.jsonl"),
        trackers=trackers,
        stop=stop,
        # the grace: torchrun turns rank 0's exit 124 into its own 1, so `aerplane up` must see the 503 first
        watchdog=Watchdog(progress.check, exit_on_hang=s.exit_on_hang, grace_s=HANG_EXIT_GRACE_S),
        version=start_step,
    )
    try:
        _start(driver, (s.host, s.http_port), s.run, resumed, ctx.world_size)
    except BaseException:
        driver.close(finished=False)
        raise
    return driver


def _start(driver: Driver, ops: tuple[str, int], run: RunSettings, resumed: Resumed, world_size: int) -> None:
    """Serve /metrics, check the data against the record of consumed rollouts, start (or resume) the coefficient
    run, and announce the learner."""
    from aerplane.common.ops import OpsServer

    start_step = resumed.step
    ledger, coefficients = driver.ledger, driver.coefficients
    driver.ops = OpsServer(*ops, driver.registry, driver.readiness, driver.watchdog.live).start()
    driver.watchdog.start()
    log.info("metrics on http://%s:%d/metrics", ops[0], driver.ops.port)
    if start_step > 0 and ledger.last_prompt_ids is not None:
        if ledger.last_prompt_ids != [slot.prompt_id for slot in driver.slots(start_step - 1)]:
            raise SettingsError(
                f"learner.data: step {start_step - 1} trained on other prompts than the data settings give now (the "
                "task list, its size, seed or shuffle changed); resume with the settings the run started with"
            )
    if resumed.coefficients:
        coefficients.load_state_dict(resumed.coefficients)
    state = coefficients.start(run.resume)
    keys = ("strategy", "step", "alpha", "initial_entropy", "target_entropy")
    log.info("coefficient run %s: %s", run.run_id, {k: state.get(k) for k in keys})
    driver.ready = True
    driver.event("learner_started", start_step, {"resume": run.resume, "world_size": world_size})
    driver.metrics_log.truncate_from(start_step)


def _connect(
    redis_url: str, run: RunSettings, batch: BatchSettings, registry: CollectorRegistry, start_step: int
) -> tuple[StreamClient, RolloutCollector]:
    """The Redis streams, the consumer of scored rollouts (with its scrape-time metrics) and the collector on it."""
    from aerplane.common.messages import ROLLOUT_SCORED, ScoredSample
    from aerplane.common.stream_metrics import StreamMetrics
    from aerplane.common.streams import StreamClient
    from aerplane.learner.rollouts import LEARNER_GROUP, RolloutCollector, publish_requests

    streams = StreamClient(redis_url, run.run_id)
    consumer = streams.consumer(
        ROLLOUT_SCORED, LEARNER_GROUP, "learner-0", ScoredSample, claim_idle_ms=600_000, max_deliveries=10
    )
    StreamMetrics("aerplane_learner", streams, lambda: consumer, [(ROLLOUT_SCORED, LEARNER_GROUP)]).register(registry)
    collector = RolloutCollector(
        consumer,
        lambda reqs: publish_requests(streams, reqs),
        run_id=run.run_id,
        samples_per_prompt=batch.samples_per_prompt,
        staleness=run.staleness,
    )
    collector.trained_below = start_step
    return streams, collector


def load_prompt_slots(tokenizer: Any, data: DataSettings, lengths: LengthSettings, *, seed: int) -> list[PromptSlot]:
    """The training prompts as chat text, without those longer than `lengths.max_prompt_tokens` (a warning says
    how many); raises SettingsError when none is left."""
    from aerplane.common.messages import PromptSlot
    from aerplane.data.tasks import chat_prompt, load_data_file, load_training_tasks

    items = load_data_file(data.file) if data.file else load_training_tasks(data.task, size=data.size, seed=seed)
    limit = lengths.max_prompt_tokens
    kept = []
    for item in items:
        text = chat_prompt(tokenizer, item)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) > limit:
            continue
        # step and slot are set when a step's prompts are drawn (Driver.slots)
        kept.append(PromptSlot(-1, -1, item.prompt_id, text, item.ground_truth, item.task, item.difficulty))
    if len(kept) < len(items):
        log.warning("skipped %d of %d prompts longer than %d tokens", len(items) - len(kept), len(items), limit)
    if not kept:
        raise SettingsError(
            f"learner.lengths.max_prompt_tokens: all {len(items)} prompts are longer than {limit} tokens"
        )
    return kept
