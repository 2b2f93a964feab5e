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

Rank 0 alone talks to Redis and the coefficient service and serves /metrics; the other ranks train (and, under
FSDP, take part in the gathers that checkpointing and weight publishing need). Rank 0's decisions (the batch, α,
"stop") travel in one broadcast per step, so every rank leaves the loop together. Precision and DDP vs FSDP:
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
from typing import Any

import torch

from aerplane.learner import checkpoint as ckpt
from aerplane.learner import distributed
from aerplane.learner.batching import TrainSample, group_accuracy, mean_by, truncate_response
from aerplane.learner.metrics import LearnerMetrics, MetricsLog
from aerplane.learner.settings import LearnerSettings, SettingsError
from aerplane.learner.step import LossConfig, StepResult, train_step

log = logging.getLogger("aerplane.learner")


@dataclass
class StepPlan:
    """Rank 0's decision for one step, broadcast to every rank."""

    stop: bool = False
    error: str | None = None
    samples: list[TrainSample] | None = None
    alpha: float = 0.0
    measure_only: bool = False


def train(settings: LearnerSettings) -> int:
    """Run (or resume) a training run; returns the process exit code."""
    # --- process group, seeds, stop signal ------------------------------------------------------------------------
    ctx = distributed.init(settings.device)
    settings.check_world(ctx.world_size)
    settings.check_runtime()
    torch.manual_seed(settings.run.seed)
    if ctx.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_id, P = settings.run.run_id, settings.batch.prompts_per_step
    run_dir, ckpt_dir = settings.run_dir, settings.checkpoint_dir
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "learner_settings.json").write_text(json.dumps(settings.snapshot(), indent=2) + "\n")
        log.info("run %s: %d rank(s) on %s (%s), run dir %s", run_id, ctx.world_size, ctx.device, ctx.backend, run_dir)

    # --- model (float32 master weights; DDP or FSDP2, bf16 compute if asked), optimizer, schedule ------------------
    from aerplane.data.models import resolve_model
    from aerplane.learner.parallel import MASTER_DTYPE, wrap_policy
    from aerplane.learner.policy import load_policy

    model_path = resolve_model(settings.model.path, settings.cache_dir) if ctx.is_main else None
    model_path = distributed.broadcast(str(model_path) if model_path else None, ctx)
    m = settings.model
    lm = load_policy(model_path, MASTER_DTYPE, ctx.device, gradient_checkpointing=m.gradient_checkpointing)
    policy = wrap_policy(lm, ctx, parallel=m.parallel, dtype=m.dtype)
    ref_policy = None
    if settings.loss.kl_coef > 0:
        ref_lm = load_policy(model_path, MASTER_DTYPE, ctx.device).requires_grad_(False)
        ref_policy = wrap_policy(ref_lm, ctx, parallel=m.parallel, dtype=m.dtype, trainable=False)
    optimizer = build_optimizer(lm, settings)  # after sharding: FSDP's parameters are the local shards
    scheduler = build_scheduler(optimizer, settings)

    # --- resume ---------------------------------------------------------------------------------------------------
    start_step, coef_state, ledger_mark = 0, None, None
    latest = ckpt.latest_checkpoint(ckpt_dir)
    if latest is not None and not settings.run.resume:
        raise SettingsError(
            f"learner.run.resume: {ckpt_dir} already holds checkpoints (last: step {latest[0]}); "
            "pass --resume to continue that run, or choose another run id / run dir"
        )
    if settings.run.resume and latest is not None:
        start_step, coef_state, ledger_mark = resume_from(latest[1], lm, optimizer, scheduler, ctx, settings)
        if ctx.is_main:
            log.info("resumed from %s: next step %d", latest[1], start_step)
    elif settings.run.resume and ctx.is_main:
        log.info("--resume: no checkpoint in %s yet, starting at step 0", ckpt_dir)

    # --- rank 0: tasks, streams, coefficient service, ops server --------------------------------------------------
    driver = Driver(settings, ctx, model_path, stop) if ctx.is_main else None
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")
    if driver is not None:
        driver.open(resume=settings.run.resume, start_step=start_step, coef_state=coef_state, ledger_mark=ledger_mark)
        metrics_log.truncate_from(start_step)
    if start_step > 0:  # announce the resumed version (written again only if its folder is gone)
        missing = distributed.broadcast(driver.weights_missing(start_step) if driver is not None else None, ctx)
        state = serving_weights(lm, settings, ctx) if missing else None
        if driver is not None:
            driver.publish_weights(lm, state, start_step, start_step)

    loss_cfg = LossConfig(
        eps_low=settings.loss.eps_low,
        eps_high=settings.loss.eps_high,
        kl_coef=settings.loss.kl_coef,
        policy_loss=settings.loss.policy_loss,
        policy_loss_params=dict(settings.loss.policy_loss_params),
        old_logprobs=settings.loss.old_logprobs,
        temperature=settings.sampling.temperature,
        chunk_size=settings.loss.entropy_chunk_size,
    )
    pad_id = distributed.broadcast(driver.pad_id if driver else None, ctx)
    last_checkpoint = start_step if latest is not None and settings.run.resume else -1
    code = 0

    # --- the loop -------------------------------------------------------------------------------------------------
    step = start_step
    try:
        while step < settings.run.steps:
            t0 = time.perf_counter()
            phases: dict[str, float] = {}
            plan = distributed.broadcast(driver.plan_step(step, phases) if driver is not None else None, ctx)
            if plan.error:
                log.error("step %d: %s", step, plan.error)
                code = 1
                break
            if plan.stop:
                log.info("stop requested: leaving before step %d", step)
                break

            # train on this rank's share
            t = time.perf_counter()
            result = train_step(
                policy,
                optimizer,
                scheduler,
                plan.samples,
                num_prompts=P,
                ctx=ctx,
                alpha=plan.alpha,
                cfg=loss_cfg,
                micro_batch_size=settings.batch.micro_batch_size,
                mini_batches=settings.batch.mini_batches,
                pad_id=pad_id,
                grad_clip=settings.optim.grad_clip,
                ref_model=ref_policy,
                update=not plan.measure_only,
            )
            phases["forward_backward"] = time.perf_counter() - t  # includes the optimizer update(s)
            if not math.isfinite(result.mean_entropy):
                raise FloatingPointError(f"step {step}: non-finite entropy {result.mean_entropy}")
            coef_after = driver.report(step, result, phases) if driver is not None else None

            # checkpoint (every rank writes its RNG state, and its shards under FSDP), publish weights
            version = step + 1
            interval = settings.checkpoint.interval
            if version == settings.run.steps or (interval and version % interval == 0):
                t = time.perf_counter()
                save_checkpoint(version, lm, optimizer, scheduler, ctx, settings, driver)
                last_checkpoint = version
                phases["checkpoint"] = time.perf_counter() - t
            if version == settings.run.steps or version % settings.weights.interval == 0:
                t = time.perf_counter()
                state = serving_weights(lm, settings, ctx)  # under FSDP every rank takes part in the gather
                if driver is not None:
                    driver.publish_weights(lm, state, version, step + 1)
                phases["publish_weights"] = time.perf_counter() - t
            if driver is not None:
                row = driver.metrics_row(
                    step,
                    plan_info=driver.last_info,
                    result=result,
                    coef=coef_after,
                    phases=phases,
                    seconds=time.perf_counter() - t0,
                )
                metrics_log.append(row)
                driver.metrics.record(row)
                log.info(
                    "step %d: H=%.4f α=%.3g acc=%.3f pg=%.4f len=%.1f %.0f tok/s %.1fs",
                    step,
                    row["mean_entropy"],
                    row["alpha"],
                    row["accuracy"],
                    row["pg_loss"],
                    row["response_length"],
                    row["tokens_per_s"],
                    row["step_seconds"],
                )
            step += 1
        # a stop between steps leaves a consistent state: keep it
        if step > start_step and last_checkpoint != step and code == 0:
            save_checkpoint(step, lm, optimizer, scheduler, ctx, settings, driver)
    finally:
        if driver is not None:
            driver.close(finished=step >= settings.run.steps and code == 0)
    return code


# --- building blocks ----------------------------------------------------------------------------------------------


def build_optimizer(lm: torch.nn.Module, settings: LearnerSettings) -> torch.optim.Optimizer:
    o = settings.optim
    params = [p for p in lm.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)


def lr_factor(update: int, *, schedule: str, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer update `update` (0-based)."""
    if warmup and update < warmup:
        return (update + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(total - warmup, 1)
    progress = min(max(update - warmup, 0) / span, 1.0)
    if schedule == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    else:  # linear
        shape = 1.0 - progress
    return min_ratio + (1 - min_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, settings: LearnerSettings) -> Any:
    o = settings.optim
    total = settings.run.steps * settings.batch.mini_batches
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda u: lr_factor(u, schedule=o.schedule, warmup=o.warmup_steps, total=total, min_ratio=o.min_lr_ratio),
    )


def save_checkpoint(
    step: int,
    lm: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    ctx: distributed.Dist,
    settings: LearnerSettings,
    driver: Driver | None,
) -> None:
    """Every rank: RNG state (and, under FSDP, its shards) into the temporary folder; rank 0: the rest, the rename.

    `driver` (rank 0 only) supplies the data position and the coefficient state."""
    root = settings.checkpoint_dir
    sharded = settings.model.parallel == "fsdp"
    if ctx.is_main:
        ckpt.begin(root, step)
    distributed.barrier(ctx)
    tmp = ckpt.temp_dir(root, step)
    ckpt.write_rank_rng(tmp, ctx.rank)
    if sharded:
        ckpt.save_sharded(tmp, lm, optimizer)
    distributed.barrier(ctx)
    if ctx.is_main:
        position = driver.schedule.position(step) if driver is not None else None
        coefficients = driver.coefficients.state_dict() if driver is not None else {}
        ledger = driver.ledger.mark() if driver is not None else None
        state: dict[str, Any] = {
            "scheduler": scheduler.state_dict(),
            "step": step,
            "run_id": settings.run.run_id,
            "world_size": ctx.world_size,
            "parallel": settings.model.parallel,
            "data_position": position,
            "coefficients": json.dumps(coefficients),
            "ledger": ledger,
        }
        if not sharded:
            state["model"] = {k: v.detach().cpu() for k, v in lm.state_dict().items()}
            state["optimizer"] = optimizer.state_dict()
        meta = {
            "run_id": settings.run.run_id,
            "world_size": ctx.world_size,
            "parallel": settings.model.parallel,
            "data_position": position,
            "ledger": ledger,
        }
        path = ckpt.commit(root, step, state, meta, settings.checkpoint.keep)
        if driver is not None:
            driver.metrics.checkpoints.inc()
        log.info("checkpoint %s", path)
    distributed.barrier(ctx)


def resume_from(
    path: Path, lm: torch.nn.Module, optimizer: Any, scheduler: Any, ctx: distributed.Dist, settings: LearnerSettings
) -> tuple[int, dict[str, Any] | None, dict[str, Any] | None]:
    """Every rank: model, optimizer, scheduler and RNG from the checkpoint at `path`; (next step, coefficient state,
    consumed-rollout record mark — None in checkpoints written before the record existed)."""
    state = ckpt.load_trainer_state(path)
    run_id, parallel = settings.run.run_id, settings.model.parallel
    if state["run_id"] != run_id:
        raise SettingsError(
            f"learner.run.run_id: the checkpoint {path} belongs to run {state['run_id']!r}, not {run_id!r}"
        )
    written_by = state.get("parallel", "ddp")
    if written_by != parallel:
        raise SettingsError(
            f"learner.model.parallel: the checkpoint {path} was written under {written_by}; resume "
            f"with --parallel {written_by} (this run asks for {parallel})"
        )
    if parallel == "fsdp":
        ckpt.load_sharded(path, lm, optimizer)
    else:
        lm.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = ckpt.load_rank_rng(path, ctx.rank)
    if rng is not None:
        ckpt.set_rng_state(rng)
    elif ctx.is_main:
        log.warning("no RNG state for rank %d in %s (world size changed?): continuing with fresh RNG", ctx.rank, path)
    return int(state["step"]), json.loads(state.get("coefficients") or "{}"), state.get("ledger")


def serving_weights(lm: torch.nn.Module, settings: LearnerSettings, ctx: distributed.Dist) -> dict[str, Any] | None:
    """Rank 0: the policy's parameters in the serving dtype (`model.dtype`), to publish. Under FSDP every rank must
    call this (the parameters are gathered); under DDP the other ranks get None at no cost."""
    if settings.model.parallel != "fsdp" and not ctx.is_main:
        return None
    from aerplane.learner.parallel import serving_state_dict

    return serving_state_dict(lm, settings.model.dtype, ctx)


class Driver:
    """Rank 0's side of the loop: prompts, streams, coefficients, weights, metrics. Other ranks never build one."""

    def __init__(self, settings: LearnerSettings, ctx: distributed.Dist, model_path: str, stop: threading.Event):
        from transformers import AutoTokenizer

        from aerplane.common.ops import new_registry
        from aerplane.learner.coefficients import build_coefficients

        self.settings = settings
        self.ctx = ctx
        self.stop = stop
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.registry = new_registry()
        self.metrics = LearnerMetrics(self.registry)
        self.coefficients = build_coefficients(settings)
        self.streams: Any = None
        self.collector: Any = None
        self.schedule: Any = None
        self.ledger: Any = None
        self.consumed: dict[str, list[Any]] = {}  # the groups of the step being trained (for the ledger)
        self.slots_cache: dict[int, list[Any]] = {}
        self.published_through = -1
        self.version = 0
        self.last_info: dict[str, Any] = {}
        self.ready = False
        self.ops: Any = None  # the ops server: started by open(), stopped by close()

    def _ready(self) -> tuple[bool, dict[str, Any]]:
        redis_ok = bool(self.streams and self.streams.ping())
        return self.ready and redis_ok, {"training": self.ready, "redis": redis_ok, "policy_version": self.version}

    # --- start-up ---------------------------------------------------------------------------------------------

    def open(
        self, *, resume: bool, start_step: int, coef_state: dict[str, Any] | None, ledger_mark: dict[str, Any] | None
    ) -> None:
        from aerplane.common.messages import ROLLOUT_SCORED, ScoredSample
        from aerplane.common.ops import OpsServer
        from aerplane.common.stream_metrics import StreamMetrics
        from aerplane.common.streams import StreamClient
        from aerplane.learner.ledger import ConsumedLedger
        from aerplane.learner.rollouts import LEARNER_GROUP, PromptSchedule, RolloutCollector, publish_requests

        s = self.settings
        self.ops = OpsServer(s.host, s.http_port, self.registry, self._ready).start()
        log.info("metrics on http://%s:%d/metrics", s.host, self.ops.port)
        self.schedule = PromptSchedule(
            self._load_items(), s.batch.prompts_per_step, seed=s.run.seed, shuffle=s.data.shuffle
        )
        self.ledger = ConsumedLedger.open(s.run_dir, ledger_mark, start_step=start_step)
        if start_step > 0 and self.ledger.last_prompt_ids is not None:
            expected = [slot.prompt_id for slot in self._slots(start_step - 1)]
            if self.ledger.last_prompt_ids != expected:
                raise SettingsError(
                    f"learner.data: step {start_step - 1} trained on other prompts than the data "
                    "settings give now (the task list, its size, seed or shuffle changed); resume with "
                    "the settings the run started with"
                )
        self.streams = StreamClient(s.redis_url, s.run.run_id)
        consumer = self.streams.consumer(
            ROLLOUT_SCORED, LEARNER_GROUP, "learner-0", ScoredSample, claim_idle_ms=600_000, max_deliveries=10
        )
        StreamMetrics("aerplane_learner", self.streams, lambda: consumer, [(ROLLOUT_SCORED, LEARNER_GROUP)]).register(
            self.registry
        )
        self.collector = RolloutCollector(
            consumer,
            lambda reqs: publish_requests(self.streams, reqs),
            run_id=s.run.run_id,
            samples_per_prompt=s.batch.samples_per_prompt,
            staleness=s.run.staleness,
        )
        self.collector.trained_below = start_step
        if coef_state:
            self.coefficients.load_state_dict(coef_state)
        state = self.coefficients.start(resume)
        log.info(
            "coefficient run %s: %s",
            s.run.run_id,
            {k: state.get(k) for k in ("strategy", "step", "alpha", "initial_entropy", "target_entropy")},
        )
        self.version = start_step
        self.ready = True
        self._event("learner_started", start_step, {"resume": resume, "world_size": self.ctx.world_size})

    def _load_items(self) -> list[Any]:
        from aerplane.common.messages import PromptSlot
        from aerplane.data.tasks import chat_prompt, load_data_file, load_training_tasks

        s = self.settings
        items = (
            load_data_file(s.data.file)
            if s.data.file
            else load_training_tasks(s.data.task, size=s.data.size, seed=s.run.seed)
        )
        kept, skipped = [], 0
        for item in items:
            text = chat_prompt(self.tokenizer, item)
            if len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) > s.lengths.max_prompt_tokens:
                skipped += 1
                continue
            slot = PromptSlot(
                step=-1,
                slot=-1,
                prompt_id=item.prompt_id,
                prompt=text,
                ground_truth=item.ground_truth,
                task=item.task,
                difficulty=item.difficulty,
            )
            kept.append(slot)
        if skipped:
            log.warning(
                "skipped %d of %d prompts longer than %d tokens", skipped, len(items), s.lengths.max_prompt_tokens
            )
        if not kept:
            raise SettingsError(
                f"learner.lengths.max_prompt_tokens: all {len(items)} prompts are longer than "
                f"{s.lengths.max_prompt_tokens} tokens"
            )
        return kept

    # --- one step ---------------------------------------------------------------------------------------------

    def _slots(self, step: int) -> list[Any]:
        from dataclasses import replace

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

        s = self.settings
        for future in range(max(step, self.published_through + 1), min(step + s.run.staleness, s.run.steps - 1) + 1):
            reqs = build_requests(
                s.run.run_id,
                future,
                self._slots(future),
                num_samples=s.batch.samples_per_prompt,
                policy_version=max(0, future - s.run.staleness),
                temperature=s.sampling.temperature,
                top_p=s.sampling.top_p,
                max_tokens=s.lengths.max_response_tokens,
                seed=s.run.seed,
            )
            self.collector.expect(reqs)
            publish_requests(self.streams, reqs)
            self.published_through = future

    def plan_step(self, step: int, phases: dict[str, float]) -> StepPlan:
        """Collect step `step`'s rollouts and coefficients; any failure becomes a plan with `error`."""
        from aerplane.core.advantages import group_advantages
        from aerplane.learner.rollouts import RolloutTimeout

        s = self.settings
        if self.stop.is_set():
            return StepPlan(stop=True)
        try:
            t = time.perf_counter()
            self.request_ahead(step)
            groups = self.collector.collect(step, timeout_s=s.run.rollout_timeout_s, should_stop=self.stop.is_set)
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

        samples: list[TrainSample] = []
        lags, lengths, difficulties = [], [], []
        max_resp = s.lengths.max_response_tokens
        advantages = group_advantages(torch.tensor(rewards, dtype=torch.float32), normalize_std=s.loss.normalize_std)
        for q, pid in enumerate(pids):
            for x, a in zip(groups[pid], advantages[q].tolist(), strict=True):
                samples.append(
                    truncate_response(
                        TrainSample(
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
                        ),
                        max_resp,
                    )
                )
                lags.append(self.version - x.policy_version)
                lengths.append(len(x.response_token_ids))
            difficulties.append(groups[pid][0].difficulty)
        stats = self.collector.stats
        self.last_info = {
            "alpha": alpha,
            "mean_prompt_weight": sum(weights) / len(weights),
            "accuracy": sum(accs) / len(accs),
            "accuracy_by_difficulty": mean_by(accs, difficulties),
            "response_length": sum(lengths) / len(lengths),
            "policy_version_lag": sum(lags) / len(lags),
            "samples": {
                k: getattr(stats, k)
                for k in ("accepted", "duplicate", "stale", "late", "foreign", "unexpected", "rerequested")
            },
        }
        return StepPlan(samples=samples, alpha=alpha, measure_only=self._measure_only(step))

    def _measure_only(self, step: int) -> bool:
        """AER anchors H_0 on the first `anchor_steps` steps of the *initial* policy: no update before the last."""
        from aerplane.core.strategies import build_strategy

        s = self.settings.strategy
        return step < build_strategy(s.name, **s.params, **s.options).anchor_steps() - 1

    def report(self, step: int, result: StepResult, phases: dict[str, float]) -> dict[str, Any]:
        """After the step's update: report H_t to the coefficient service, record the consumed groups."""
        from aerplane.learner.ledger import Sample

        t = time.perf_counter()
        state = self.coefficients.report(step, result.mean_entropy, result.num_tokens)
        groups = {pid: [Sample(x.sample_index, x.policy_version) for x in xs] for pid, xs in self.consumed.items()}
        self.ledger.record(
            step,
            groups,
            samples_per_prompt=self.settings.batch.samples_per_prompt,
            policy_version=self.version,
            update=result.updates > 0,
        )
        phases["report"] = time.perf_counter() - t
        self.version = step + 1  # policy version = steps completed (an anchoring step's weights are unchanged)
        return state

    def weights_missing(self, version: int) -> bool:
        return not (self.settings.weights_dir / f"v{version}" / "config.json").is_file()

    def publish_weights(self, lm: torch.nn.Module, state: dict[str, Any] | None, version: int, step: int) -> None:
        """Write `state` (from `serving_weights`) as version `version` and announce it; `state=None` announces the
        folder already there (after a resume)."""
        from aerplane.common.messages import WEIGHTS, WeightsAnnouncement

        root = self.settings.weights_dir
        path = root / f"v{version}"
        if state is not None:
            path, num_bytes = ckpt.publish_weights(lm, root, version, self.settings.weights.keep, state_dict=state)
        else:
            num_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        self.streams.publish(
            WEIGHTS,
            WeightsAnnouncement(
                run_id=self.settings.run.run_id,
                version=version,
                step=step,
                path=str(path.resolve()),
                num_bytes=num_bytes,
            ),
        )
        self.metrics.weights.inc()

    def metrics_row(
        self,
        step: int,
        *,
        plan_info: dict[str, Any],
        result: StepResult,
        coef: dict[str, Any] | None,
        phases: dict[str, float],
        seconds: float,
    ) -> dict[str, Any]:
        coef = coef or {}
        train_s = phases.get("forward_backward", 0.0)
        return {
            "step": step,
            "policy_version": self.version,
            "alpha": plan_info["alpha"],
            "next_alpha": coef.get("alpha"),
            **{term: coef.get(term) for term in ("p_term", "i_term", "d_term")},  # next_alpha's PID terms (aer)
            "mean_entropy": result.mean_entropy,
            "entropy_by_difficulty": result.entropy_by_difficulty,
            "target_entropy": coef.get("target_entropy"),
            "initial_entropy": coef.get("initial_entropy"),
            "mean_prompt_weight": plan_info["mean_prompt_weight"],
            "accuracy": plan_info["accuracy"],
            "accuracy_by_difficulty": plan_info["accuracy_by_difficulty"],
            "response_length": plan_info["response_length"],
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
            "policy_version_lag": plan_info["policy_version_lag"],
            "samples": plan_info["samples"],
            "time": time.time(),
        }

    def _event(self, kind: str, step: int, detail: dict[str, Any]) -> None:
        from aerplane.common.messages import EVENTS, Event

        try:
            self.streams.publish(EVENTS, Event(run_id=self.settings.run.run_id, kind=kind, step=step, detail=detail))
        except Exception as exc:  # an event is informational; never fail the run over one
            log.warning("could not publish event %s: %s", kind, exc)

    def close(self, *, finished: bool) -> None:
        self.ready = False
        if self.streams is not None:
            self._event("learner_finished" if finished else "learner_stopped", self.version, {})
            self.streams.close()
        if self.ledger is not None:
            self.ledger.close()
        self.coefficients.close()
        if self.ops is not None:
            self.ops.stop()
