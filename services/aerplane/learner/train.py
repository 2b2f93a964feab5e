"""The learner's training loop: one `train(settings)` that reads top to bottom (DESIGN §1–§3, Learner).

    torchrun --standalone --nproc_per_node 2 -m aerplane.learner --run-id exp1 --steps 50   # or:
    aerplane learner train --nproc-per-node 2 --run-id exp1 --steps 50

Each step t (policy version t = optimizer steps so far):
  1. rank 0 publishes the rollout requests of steps up to t + staleness (prompts for step t+1 are being generated
     while step t trains) and collects step t's scored groups from `rollout:scored` (de-duplicated, stale ones
     re-requested);
  2. rank 0 computes per-prompt accuracy, asks the coefficient service for α_t and λ_q, builds the batch with
     group-normalised advantages and broadcasts it; every rank trains on its share of whole groups;
  3. the all-reduced token-mean entropy H_t is reported (step 0's forward runs before any update: that is H_0), and
     the step's prompt groups are added to the record of consumed rollouts (`learner.ledger`);
  4. checkpoint, publish weights v(t+1) and announce them on `weights`, append a line to metrics.jsonl.

Exactly once across restarts: a checkpoint holds the model, optimizer, RNG, the data position (= the step) and
where the consumed-rollout record stood; `--resume` cuts the record back to it and trains on from that step, so
every group of every step goes into the parameters once. The coefficient service applies each step's entropy once,
so the steps re-trained after a crash do not move α again, and it answers the α it gave the first time.

Rank 0 alone talks to Redis and the coefficient service and serves /metrics and /healthz (`learner.driver.Driver`,
built by `open_driver`; /healthz reports the step hung, and rank 0 exits with code 124, when its own work stalls
past `hang_timeout_s`: common.liveness); the other ranks train (and, under FSDP, take part in the gathers that
checkpointing and weight publishing need). Rank 0's decisions (the batch, α, "stop") travel in one broadcast per
step, so every rank leaves the loop together. The parts: `learner.trainable` (model, optimizer, schedule),
`learner.checkpointer` (save, resume), `learner.step` (one step's loss and update). Precision and DDP vs FSDP:
`learner.parallel` and docs/learner.md.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from aerplane.common.liveness import Progress
from aerplane.learner import distributed
from aerplane.learner.checkpointer import Checkpointer, Resumed
from aerplane.learner.driver import Driver, StepPlan, metrics_row, open_driver
from aerplane.learner.settings import BatchSettings, LearnerSettings, LossSettings, ModelSettings, RunSettings
from aerplane.learner.step import train_step
from aerplane.learner.trainable import Trainable, build_trainable, serving_weights

log = logging.getLogger("aerplane.learner")


def train(settings: LearnerSettings) -> int:
    """Run (or resume) a training run; returns the process exit code."""
    s = settings
    ctx = start_process(s)
    stop = stop_on_signals()
    model_path = resolve_model_path(s.model, s.cache_dir, ctx)
    updates = s.run.steps * s.batch.mini_batches
    trainable = build_trainable(model_path, s.model, s.optim, ctx, total_updates=updates, reference=s.loss.kl_coef > 0)
    checkpointer = Checkpointer(s.checkpoint_dir, s.checkpoint, s.run.run_id, s.model.parallel, ctx)
    resumed = checkpointer.resume(trainable, resume=s.run.resume)
    progress = Progress("learner.step", s.hang_timeout_s)  # a step's own work: rank 0's /healthz and watchdog
    driver = open_driver(s, ctx, model_path, stop, resumed, progress) if ctx.is_main else None
    loop = Loop(
        run=s.run,
        batch=s.batch,
        loss=s.loss,
        temperature=s.sampling.temperature,
        grad_clip=s.optim.grad_clip,
        weights_interval=s.weights.interval,
        model=s.model,
        ctx=ctx,
        trainable=trainable,
        checkpointer=checkpointer,
        driver=driver,
        pad_id=distributed.broadcast(driver.pad_id if driver is not None else None, ctx),
        progress=progress,
    )
    step, code = resumed.step, 0
    try:
        loop.announce_resumed(resumed)
        while step < s.run.steps:
            outcome = loop.run_step(step)
            if outcome is not None:
                code = outcome
                break
            step += 1
        if step > resumed.step and checkpointer.last_saved != step and code == 0:
            loop.checkpoint(step)  # a stop between steps leaves a consistent state: keep it
    finally:
        if driver is not None:
            driver.close(finished=step >= s.run.steps and code == 0)
    return code


def start_process(settings: LearnerSettings) -> distributed.Dist:
    """The process group, the checks that need its size, the seeds; rank 0 writes the resolved settings."""
    ctx = distributed.init(settings.device)
    settings.check_world(ctx.world_size)
    torch.manual_seed(settings.run.seed)
    if ctx.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    if ctx.is_main:
        run_dir = settings.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "learner_settings.json").write_text(json.dumps(settings.snapshot(), indent=2) + "\n")
        log.info(
            "run %s: %d rank(s) on %s (%s), run dir %s",
            settings.run.run_id,
            ctx.world_size,
            ctx.device,
            ctx.backend,
            run_dir,
        )
    return ctx


def stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set: the loop leaves between steps, after a checkpoint."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def resolve_model_path(model: ModelSettings, cache_dir: Path | None, ctx: distributed.Dist) -> str:
    """Rank 0 resolves the model (an embedded one is prepared on first use); every rank gets its folder."""
    from aerplane.data.embedded_models import resolve_model

    path = resolve_model(model.path, cache_dir) if ctx.is_main else None
    return distributed.broadcast(str(path) if path else None, ctx)


@dataclass
class Loop:
    """One training step on every rank, with the settings groups it reads and the parts it drives."""

    run: RunSettings
    batch: BatchSettings
    loss: LossSettings
    temperature: float  # sampling.temperature: the learner divides its logits by it too
    grad_clip: float
    weights_interval: int
    model: ModelSettings
    ctx: distributed.Dist
    trainable: Trainable
    checkpointer: Checkpointer
    driver: Driver | None  # rank 0 only
    pad_id: int
    progress: Progress  # held from the plan's broadcast to the step's end; waiting for rollouts is not work

    def run_step(self, step: int) -> int | None:
        """Plan, train, report, checkpoint, publish, record step `step`; None to go on, else the exit code."""
        t0 = time.perf_counter()
        phases: dict[str, float] = {}
        mine = self.driver.plan_step(step, phases) if self.driver else None  # rank 0 waits for rollouts here
        with self.progress.working():  # the step's own work from here on (rank 0's /healthz and watchdog)
            plan: StepPlan = distributed.broadcast(mine, self.ctx)
            if plan.error:
                log.error("step %d: %s", step, plan.error)
                return 1
            if plan.stop:
                log.info("stop requested: leaving before step %d", step)
                return 0
            t = time.perf_counter()
            t_ = self.trainable
            result = train_step(
                t_.policy,
                t_.optimizer,
                t_.scheduler,
                plan.samples,
                num_prompts=self.batch.prompts_per_step,
                ctx=self.ctx,
                alpha=plan.alpha,
                loss=self.loss,
                temperature=self.temperature,
                micro_batch_size=self.batch.micro_batch_size,
                mini_batches=self.batch.mini_batches,
                pad_id=self.pad_id,
                grad_clip=self.grad_clip,
                ref_model=t_.reference,
                update=not plan.measure_only,
            )
            phases["forward_backward"] = time.perf_counter() - t  # includes the optimizer update(s)
            self.progress.beat()
            if not math.isfinite(result.mean_entropy):
                raise FloatingPointError(f"step {step}: non-finite entropy {result.mean_entropy}")
            coef = self.driver.report(step, result, phases) if self.driver is not None else None
            version = step + 1
            if self.checkpointer.due(version, self.run.steps):
                t = time.perf_counter()
                self.checkpoint(version)
                phases["checkpoint"] = time.perf_counter() - t
                self.progress.beat()
            if version == self.run.steps or version % self.weights_interval == 0:
                t = time.perf_counter()
                self.publish(version, step=version, write=True)
                phases["publish_weights"] = time.perf_counter() - t
            if self.driver is not None:
                row = metrics_row(step, self.driver, result, coef or {}, phases, time.perf_counter() - t0)
                self.driver.record(row)
                log.info(
                    "step %d: H=%.4f α=%.3g acc=%.3f pg=%.4f len=%.1f %.0f tok/s %.1fs",
                    *(row[k] for k in ("step", "mean_entropy", "alpha", "accuracy", "pg_loss", "response_length")),
                    row["tokens_per_s"],
                    row["step_seconds"],
                )
        return None

    def checkpoint(self, step: int) -> None:
        driver_state = self.driver.checkpoint_state(step) if self.driver is not None else None
        self.checkpointer.save(step, self.trainable, driver_state)

    def publish(self, version: int, *, step: int, write: bool) -> None:
        """Announce weights version `version`, written first when `write` (under FSDP every rank gathers)."""
        state = serving_weights(self.trainable.lm, self.model, self.ctx) if write else None
        if self.driver is not None:
            self.driver.publish_weights(self.trainable.lm, state, version, step)

    def announce_resumed(self, resumed: Resumed) -> None:
        """After a resume, announce the version it continues from (written again only if its folder is gone)."""
        if resumed.step > 0:
            missing = self.driver.weights_missing(resumed.step) if self.driver is not None else None
            self.publish(resumed.step, step=resumed.step, write=distributed.broadcast(missing, self.ctx))
