"""Saving and resuming a run, on every rank: `Checkpointer.save(step, trainable, driver_state)` and `.resume(...)`.

A checkpoint holds the model, optimizer, scheduler and every rank's RNG (under FSDP each rank's shards), and from
rank 0 the data position, the coefficient state and where the consumed-rollout record stood (`Driver.
checkpoint_state`). The file operations (temporary folder, atomic rename, pruning) are `learner.checkpoint`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aerplane.learner import checkpoint as ckpt
from aerplane.learner import distributed
from aerplane.learner.settings import CheckpointSettings, SettingsError
from aerplane.learner.trainable import Trainable

log = logging.getLogger("aerplane.learner")


@dataclass(frozen=True)
class Resumed:
    """Where a run starts: the next step, and rank 0's saved state (None where there was nothing to resume)."""

    step: int = 0
    coefficients: dict[str, Any] | None = None
    ledger_mark: dict[str, Any] | None = None
    from_checkpoint: bool = False


@dataclass
class Checkpointer:
    """The checkpoints of one run in `root` (`checkpoint` settings: interval and how many to keep)."""

    root: Path
    settings: CheckpointSettings
    run_id: str
    parallel: str  # "ddp" | "fsdp": FSDP writes and reads shards on every rank
    ctx: distributed.Dist
    last_saved: int = field(default=-1)

    def due(self, version: int, total_steps: int) -> bool:
        interval = self.settings.interval
        return version == total_steps or bool(interval and version % interval == 0)

    def resume(self, trainable: Trainable, *, resume: bool) -> Resumed:
        """Load the last checkpoint when `resume`; refuse to start over one that exists when not."""
        latest = ckpt.latest_checkpoint(self.root)
        if latest is not None and not resume:
            raise SettingsError(
                f"learner.run.resume: {self.root} already holds checkpoints (last: step {latest[0]}); "
                "pass --resume to continue that run, or choose another run id / run dir"
            )
        if latest is None:
            if resume and self.ctx.is_main:
                log.info("--resume: no checkpoint in %s yet, starting at step 0", self.root)
            return Resumed()
        resumed = self._load(latest[1], trainable)
        self.last_saved = resumed.step
        if self.ctx.is_main:
            log.info("resumed from %s: next step %d", latest[1], resumed.step)
        return resumed

    def _load(self, path: Path, t: Trainable) -> Resumed:
        """Every rank: model, optimizer, scheduler and RNG from the checkpoint at `path`."""
        state = ckpt.load_trainer_state(path)
        if state["run_id"] != self.run_id:
            raise SettingsError(
                f"learner.run.run_id: the checkpoint {path} belongs to run {state['run_id']!r}, not {self.run_id!r}"
            )
        written_by = state.get("parallel", "ddp")
        if written_by != self.parallel:
            raise SettingsError(
                f"learner.model.parallel: the checkpoint {path} was written under {written_by}; resume "
                f"with --parallel {written_by} (this run asks for {self.parallel})"
            )
        if self.parallel == "fsdp":
            ckpt.load_sharded(path, t.lm, t.optimizer)
        else:
            t.lm.load_state_dict(state["model"])
            t.optimizer.load_state_dict(state["optimizer"])
        t.scheduler.load_state_dict(state["scheduler"])
        rng = ckpt.load_rank_rng(path, self.ctx.rank)
        if rng is not None:
            ckpt.set_rng_state(rng)
        elif self.ctx.is_main:
            log.warning(
                "no RNG state for rank %d in %s (world size changed?): continuing with fresh RNG", self.ctx.rank, path
            )
        coefficients = json.loads(state.get("coefficients") or "{}")
        # the ledger mark is None in checkpoints written before the consumed-rollout record existed
        return Resumed(int(state["step"]), coefficients, state.get("ledger"), from_checkpoint=True)

    def save(self, step: int, t: Trainable, driver_state: dict[str, Any] | None) -> Path | None:
        """Every rank: RNG state (and, under FSDP, its shards) into the temporary folder; rank 0: the rest, the
        rename. `driver_state` (rank 0 only: `Driver.checkpoint_state`) is the data position, the coefficient
        state and the record's mark. Returns the checkpoint's folder on rank 0."""
        sharded = self.parallel == "fsdp"
        if self.ctx.is_main:
            ckpt.begin(self.root, step)
        distributed.barrier(self.ctx)
        tmp = ckpt.temp_dir(self.root, step)
        ckpt.write_rank_rng(tmp, self.ctx.rank)
        if sharded:
            ckpt.save_sharded(tmp, t.lm, t.optimizer)
        distributed.barrier(self.ctx)
        path = None
        if self.ctx.is_main:
            path = self._commit(step, t, driver_state or {})
            log.info("checkpoint %s", path)
        distributed.barrier(self.ctx)
        self.last_saved = step
        return path

    def _commit(self, step: int, t: Trainable, driver_state: dict[str, Any]) -> Path:
        position, ledger = driver_state.get("data_position"), driver_state.get("ledger")
        common = {
            "run_id": self.run_id,
            "world_size": self.ctx.world_size,
            "parallel": self.parallel,
            "data_position": position,
            "ledger": ledger,
        }
        state: dict[str, Any] = {
            "scheduler": t.scheduler.state_dict(),
            "step": step,
            **common,
            "coefficients": json.dumps(driver_state.get("coefficients", {})),
        }
        if self.parallel != "fsdp":
            state["model"] = {k: v.detach().cpu() for k, v in t.lm.state_dict().items()}
            state["optimizer"] = t.optimizer.state_dict()
        return ckpt.commit(self.root, step, state, common, self.settings.keep)
