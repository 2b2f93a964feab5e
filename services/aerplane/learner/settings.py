"""Learner configuration: `AERPLANE_LEARNER_*` environment variables with `__` nesting, CLI flags on top.

One group per concern, named like every service's options (`AERPLANE_<SERVICE>_<FIELD>`, common.settings):
`AERPLANE_LEARNER_OPTIM__LR=1e-6`, `AERPLANE_LEARNER_BATCH__PROMPTS_PER_STEP=16`, `AERPLANE_LEARNER_RUN__RUN_ID=exp1`,
`AERPLANE_LEARNER_HTTP_PORT=8003`. The shared names are read too: `AERPLANE_RUN_ID` (the default of `run.run_id`),
`AERPLANE_REDIS_URL`, and `AERPLANE_LEARNER_TOKEN` (`coefficient.token`, the variable the coefficient service reads
the same token from). CLI flags (`aerplane learner train --lr ...`) override them all.

The names before the `AERPLANE_LEARNER_` prefix (`AERPLANE_OPTIM__LR`, `AERPLANE_HOST`, `AERPLANE_HTTP_PORT`,
`AERPLANE_DEVICE`, `AERPLANE_MODEL`, `AERPLANE_COEFFICIENT__TOKEN`) still work, below the new ones, and each logs
once which name replaces it.

Validation happens twice: the field bounds and the cross-field checks that need no runtime knowledge when the
settings are built, and `check_world(world_size)` once the number of DDP ranks is known (the CLI runs it before
launching torchrun, each worker again after joining the process group). Errors name the full key, e.g.
``learner.batch.prompts_per_step: must be divisible by world size 2 (got 3)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from aerplane.common.flags import Flag, group_model
from aerplane.common.settings import HttpSettings, RedisSettings, RunId, ServiceSettings, SettingsError
from aerplane.common.trackers import TrackingSettings
from aerplane.core.policy_losses import POLICY_LOSS_NAMES, PolicyLoss, build_policy_loss
from aerplane.core.strategies import STRATEGY_NAMES

SECTION = "learner"


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class ModelSettings(_Group):
    path: Annotated[str, Flag("--model")] = "tiny"
    """The policy to train: a Hugging Face model folder, or `smollm2-135m` / `tiny` (the embedded models)."""
    dtype: Annotated[Literal["float32", "bfloat16", "float16"], Flag("--dtype")] = "float32"
    """Compute dtype. `bfloat16` is mixed precision: float32 master weights, gradients and AdamW state, bf16 forward
    and backward (autocast under DDP, FSDP2's MixedPrecisionPolicy under FSDP), entropy and log-probs in float32,
    weights published in bf16. `float32` computes in float32 throughout. float16 is refused (it needs loss
    scaling)."""
    parallel: Annotated[Literal["ddp", "fsdp"], Flag("--parallel")] = "ddp"
    """How the ranks share the model: `ddp` replicates it (every rank holds all weights, gradients and AdamW state:
    16 B/parameter), `fsdp` shards all three over the ranks (FSDP2 `fully_shard` per decoder block) for policies
    that do not fit one device. FSDP checkpoints are sharded; a run resumes only under the mode that wrote it."""
    gradient_checkpointing: Annotated[bool, Flag("--gradient-checkpointing")] = False
    """Recompute activations in the backward pass (less memory, ~30% more compute); works under ddp and fsdp."""


class OptimSettings(_Group):
    lr: Annotated[float, Flag("--lr")] = Field(1e-6, gt=0, le=1.0)
    """AdamW peak learning rate."""
    schedule: Annotated[Literal["constant", "cosine", "linear"], Flag("--lr-schedule")] = "constant"
    """Learning-rate shape after the warm-up: constant, cosine decay or linear decay to `min_lr_ratio · lr`."""
    warmup_steps: Annotated[int, Flag("--warmup-steps")] = Field(0, ge=0)
    """Linear warm-up from 0 over this many optimizer updates."""
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    """Floor of the cosine / linear decay, as a fraction of `lr`."""
    weight_decay: Annotated[float, Flag("--weight-decay")] = Field(0.0, ge=0, le=1)
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = Field(1e-8, gt=0)
    """AdamW epsilon."""
    grad_clip: Annotated[float, Flag("--grad-clip")] = Field(1.0, ge=0)
    """Clip the global gradient norm to this value (0 = no clipping; the norm is still reported)."""

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"each beta must be in [0, 1), got {v}")
        return v


class BatchSettings(_Group):
    prompts_per_step: Annotated[int, Flag("--prompts-per-step")] = Field(8, ge=1, le=100_000)
    """Prompts per training step (global, over all ranks); each rank trains on an equal share of whole groups."""
    samples_per_prompt: Annotated[int, Flag("--samples-per-prompt")] = Field(8, ge=1, le=1024)
    """G: responses sampled per prompt; advantages are normalised within each group of G."""
    micro_batch_size: Annotated[int, Flag("--micro-batch-size")] = Field(4, ge=1)
    """Sequences per forward/backward pass on one rank; gradients accumulate over the micro-batches."""
    mini_batches: Annotated[int, Flag("--mini-batches")] = Field(1, ge=1)
    """Optimizer updates per step: the step's batch is split into this many mini-batches (PPO-style)."""


class LengthSettings(_Group):
    max_prompt_tokens: Annotated[int, Flag("--max-prompt-tokens")] = Field(512, ge=1)
    """Prompts longer than this (after the chat template) are skipped when the task list is loaded."""
    max_response_tokens: Annotated[int, Flag("--max-response-tokens")] = Field(256, ge=1)
    """`max_tokens` asked of generation; longer responses that arrive anyway are truncated."""


class LossSettings(_Group):
    eps_low: Annotated[float, Flag("--eps-low")] = Field(0.2, ge=0, le=1)
    """Lower clip range of the ratio (1 − ε_low)."""
    eps_high: Annotated[float, Flag("--eps-high")] = Field(0.28, ge=0, le=10)
    """Upper clip range of the ratio (1 + ε_high; "clip-higher")."""
    aggregation: Literal["token-mean"] = "token-mean"
    """How per-token losses are reduced: a token mean over the whole global batch (all ranks, all micro-batches)."""
    kl_coef: Annotated[float, Flag("--kl-coef")] = Field(0.0, ge=0)
    """Weight of the k3 KL penalty to the initial (reference) policy; > 0 keeps a frozen copy of the model."""
    policy_loss: Annotated[Literal[POLICY_LOSS_NAMES], Flag("--policy-loss")] = "vanilla"  # type: ignore[valid-type]
    """Policy-loss mode (`aerplane.core.policy_losses`): the clipped surrogate, or Clip-Cov / KL-Cov from "The
    Entropy Mechanism of RL"."""
    policy_loss_params: dict[str, float] = Field(default_factory=dict)
    """Hyperparameters of the policy-loss mode, by its field names in `aerplane.core.policy_losses`, e.g.
    {"clip_cov_ratio": 1e-3}; the others keep the mode's defaults."""
    normalize_std: Annotated[bool, Flag("--normalize-std")] = True
    """Divide group advantages by the group's std (GRPO); false gives Dr. GRPO's mean-centred advantages."""
    old_logprobs: Annotated[Literal["recompute", "sampler"], Flag("--old-logprobs")] = "recompute"
    """Behaviour log-probs of the ratio: `recompute` with the learner's current model (a no-grad pass, skipped when
    there is one update per step because it equals the detached forward), or `sampler`, the generation engine's
    own log-probs (importance-corrects the bounded staleness)."""
    entropy_chunk_size: int = Field(1024, ge=1)
    """Tokens per chunk of the full-vocabulary entropy computation (bounds its peak memory)."""

    @field_validator("policy_loss_params")
    @classmethod
    def _mode_takes_them(cls, v: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        """Checked against the mode's declared hyperparameters (names, bounds), without torch."""
        if "policy_loss" in info.data:  # else the mode's own error is reported
            build_policy_loss(info.data["policy_loss"], v)
        return v

    @property
    def policy(self) -> PolicyLoss:
        """The policy-loss mode with its hyperparameters (`policy_loss_params` over the mode's defaults)."""
        return build_policy_loss(self.policy_loss, self.policy_loss_params)


class StrategySettings(_Group):
    name: Annotated[Literal[STRATEGY_NAMES], Flag("--strategy")] = "aer"  # type: ignore[valid-type]
    """Entropy-control strategy (DESIGN §1)."""
    params: dict[str, float] = Field(default_factory=dict)
    """Numeric strategy parameters by their `build_strategy` names, e.g. {"rho": 0.5, "eta": 0.001}."""
    options: dict[str, str] = Field(default_factory=dict)
    """Non-numeric strategy parameters, e.g. {"weighting": "threshold"}."""

    @field_validator("params", "options", mode="before")
    @classmethod
    def _drop_defaults(cls, v: Any) -> Any:
        """A parameter set to None (`--strategy-param KEY=none`) goes back to the strategy's default, also over a
        value the environment gave."""
        return {k: x for k, x in v.items() if x is not None} if isinstance(v, dict) else v

    @field_validator("params")
    @classmethod
    def _finite(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not math.isfinite(x)]
        if bad:
            raise ValueError(f"parameters must be finite numbers: {', '.join(bad)}")
        return v


class SamplingSettings(_Group):
    temperature: Annotated[float, Flag("--temperature")] = Field(1.0, gt=0, le=10)
    """Sampling temperature asked of generation; the learner divides its logits by it too."""
    top_p: Annotated[float, Flag("--top-p")] = Field(1.0, gt=0, le=1)
    """Nucleus sampling threshold asked of generation."""


class DataSettings(_Group):
    task: Annotated[str, Flag("--task")] = "mixed"
    """Training task set from `aerplane.data.tasks.load_training_tasks` (ignored when `file` is set)."""
    file: Annotated[Path | None, Flag("--data")] = None
    """A verl-style jsonl/parquet file of prompts and ground truths, instead of `task`."""
    size: int = Field(2000, ge=1)
    """How many items to draw from the task generator."""
    shuffle: bool = True
    """Shuffle the items each epoch (seeded by `run.seed` and the epoch number)."""


class RunSettings(_Group):
    run_id: Annotated[RunId, Flag("--run-id")] = "default"
    """Run identity: namespaces the Redis streams and the coefficient state."""
    dir: Path | None = None
    """Run directory (metrics.jsonl, checkpoints/, weights/); default `runs/<run_id>`."""
    steps: Annotated[int, Flag("--steps")] = Field(10, ge=1)
    """Training steps to run (the total, counting steps before a resume)."""
    seed: Annotated[int, Flag("--seed")] = Field(0, ge=0, le=2**31 - 1)
    """Seeds model-side randomness, the data order and the generation seeds of the requests."""
    staleness: Annotated[int, Flag("--staleness")] = Field(1, ge=0, le=64)
    """Bounded staleness: prompts are requested this many steps ahead, and samples whose policy version is older
    than (current version − staleness) are dropped and requested again."""
    resume: Annotated[bool, Flag("--resume")] = False
    """Continue from the last checkpoint in the checkpoint folder (and resume the coefficient run)."""
    rollout_timeout_s: Annotated[float, Flag("--rollout-timeout")] = Field(0.0, ge=0)
    """Give up when a step's rollouts have not all arrived after this many seconds (0 = wait forever)."""

    @property
    def directory(self) -> Path:
        return self.dir if self.dir is not None else Path("runs") / self.run_id


class CheckpointSettings(_Group):
    dir: Path | None = None
    """Checkpoint folder; default `<run dir>/checkpoints`."""
    interval: int = Field(1, ge=0)
    """Write a checkpoint every this many steps (and after the last step); 0 = only after the last step."""
    keep: int = Field(2, ge=1)
    """Checkpoints kept; older ones are deleted once a newer one is complete."""


class WeightsSettings(_Group):
    dir: Path | None = None
    """Where versions are published for generation (`v<version>/model.safetensors`); default `<run dir>/weights`.
    Must be on a volume the generation service can read."""
    keep: int = Field(3, ge=1)
    """Weight versions kept; older ones are garbage-collected."""
    interval: int = Field(1, ge=1)
    """Publish new weights every this many steps (and after the last step)."""


class CoefficientSettings(_Group):
    target: str = "127.0.0.1:50051"
    """gRPC address of the coefficient service; `local` runs the strategy in-process (no service, no overrides)."""
    timeout_s: float = Field(10.0, gt=0)
    """Deadline of one coefficient RPC."""
    outage_s: float = Field(300.0, ge=0)
    """How long a call keeps being retried (with backoff) while the service is unreachable, e.g. restarting, before
    the learner fails: every call is idempotent by step, so a retry is always safe."""
    token: SecretStr | None = None
    """The coefficient service's learner token (`AERPLANE_COEFFICIENT__TOKEN`, the variable the service reads it
    from too), sent as gRPC `authorization` metadata; needed once the service has one. Never logged."""


# The learner's variables before the AERPLANE_LEARNER_ prefix: its groups' `AERPLANE_<GROUP>__<FIELD>`, these
# top-level names, and the learner token under the coefficient service's old name.
_LEGACY_TOP = {"HOST": "host", "HTTP_PORT": "http_port", "DEVICE": "device", "MODEL": "model"}
_LEGACY_TOKEN = "AERPLANE_COEFFICIENT__TOKEN"
_warned: set[str] = set()


class _LegacyEnv(PydanticBaseSettingsSource):
    """The learner's old variable names, read below the new ones; each logs once which name replaces it."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        groups = {name.upper() for name, f in self.settings_cls.model_fields.items() if group_model(f.annotation)}
        out: dict[str, Any] = {}
        for key, raw in os.environ.items():
            name = key.upper()
            if not name.startswith("AERPLANE_") or name.startswith("AERPLANE_LEARNER_"):
                continue
            rest = name.removeprefix("AERPLANE_")
            value: Any = json.loads(raw) if raw.strip()[:1] in ("{", "[") else raw
            if name == _LEGACY_TOKEN:  # under the shared name's key: AERPLANE_LEARNER_TOKEN itself wins
                out["AERPLANE_LEARNER_TOKEN"] = raw
                _warn(name, "AERPLANE_LEARNER_TOKEN")
            elif "__" in rest and rest.split("__", 1)[0] in groups:
                group, field = rest.lower().split("__", 1)
                out.setdefault(group, {})[field] = value
                _warn(name, f"AERPLANE_LEARNER_{rest}")
            elif rest in _LEGACY_TOP:
                out[_LEGACY_TOP[rest]] = value
                _warn(name, f"AERPLANE_LEARNER_{rest}")
        return out


def _default_in_group(data: dict[str, Any], group: str, name: str, value: Any) -> None:
    """`data[group][name] = value` unless the group (a dict, or JSON from the environment) sets it itself."""
    if value:
        values = data.get(group)
        values = json.loads(values) if isinstance(values, str) else dict(values or {})
        values.setdefault(name, value)
        data[group] = values


def _warn(old: str, new: str) -> None:
    if old not in _warned:
        _warned.add(old)
        logging.getLogger(__name__).warning("%s is the learner's old variable name: use %s", old, new)


def strategy_kwargs(params: dict[str, float], options: dict[str, str]) -> dict[str, Any]:
    """`build_strategy` keyword arguments from the numeric params and string options (integral counts as int)."""
    out: dict[str, Any] = {
        k: (int(v) if k == "anchor_steps" and float(v).is_integer() else v) for k, v in params.items()
    }
    out.update(options)
    return out


class LearnerSettings(ServiceSettings, RedisSettings, HttpSettings):
    """Everything the learner reads. Groups map to `AERPLANE_LEARNER_<GROUP>__<FIELD>` variables."""

    model_config = SettingsConfigDict(env_prefix="AERPLANE_LEARNER_")

    model: Annotated[ModelSettings, NoDecode] = Field(default_factory=ModelSettings)
    """The policy, its precision and parallelism (`model=<path>` sets the path alone)."""
    optim: OptimSettings = Field(default_factory=OptimSettings)
    """AdamW and the learning-rate schedule."""
    batch: BatchSettings = Field(default_factory=BatchSettings)
    lengths: LengthSettings = Field(default_factory=LengthSettings)
    loss: LossSettings = Field(default_factory=LossSettings)
    """The policy loss: its mode (`core.policy_losses`), clipping, KL, advantages."""
    strategy: StrategySettings = Field(default_factory=StrategySettings)
    """The entropy-control strategy and its parameters (`core.strategies`)."""
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    """The run's identity, length, seed, staleness and resume."""
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    weights: WeightsSettings = Field(default_factory=WeightsSettings)
    coefficient: CoefficientSettings = Field(default_factory=CoefficientSettings)
    """Where α and λ come from: the coefficient service's address, deadline and token."""
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    """Experiment trackers (`--report-to tensorboard,wandb,mlflow`) and their options: `aerplane.common.trackers`."""
    http_port: int = Field(8003, ge=0, le=65535)
    """Port of rank 0's ops server (0 = pick a free one)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA (and NCCL) when available, else CPU (and gloo)."""
    hang_timeout_s: float = Field(1800.0, ge=0)
    """Rank 0's /healthz reports the step hung (503) when one phase of a step's own work (the forward/backward and
    update from the plan's broadcast on, then the checkpoint, then the weights publish) has run this long (0:
    never). A big model's step on GPUs takes minutes, a checkpoint of its AdamW state more, and the step's report
    rides out a coefficient service outage for up to `coefficient.outage_s` (which the bound must exceed); a
    collective stuck on any rank stalls rank 0 too. Waiting for rollouts is waiting on the other services, not a
    hang."""
    exit_on_hang: bool = True
    """Rank 0 exits with code 124 (`common.liveness.HUNG_EXIT_CODE`) once the step is hung; torchrun then stops
    every rank and the supervisor (`aerplane up`, compose's `restart:`, the kubelet) resumes the run from its last
    checkpoint. Off, /healthz still answers 503."""
    shared_run_id: str | None = Field(None, validation_alias=AliasChoices("AERPLANE_RUN_ID"), exclude=True)
    """`AERPLANE_RUN_ID`, the run id every service reads: the default of `run.run_id`."""
    shared_learner_token: SecretStr | None = Field(None, validation_alias="AERPLANE_LEARNER_TOKEN", exclude=True)
    """`AERPLANE_LEARNER_TOKEN`, the learner's token as the coefficient service reads it: `coefficient.token`."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _LegacyEnv(settings_cls), dotenv_settings, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _shared_names(cls, data: Any) -> Any:
        """`model=<path>` (the model group's path), and the names the services share: `AERPLANE_RUN_ID` (when
        `run.run_id` is not given itself) and `AERPLANE_LEARNER_TOKEN` (when `coefficient.token` is not)."""
        if not isinstance(data, dict):
            return data
        model = data.get("model")
        if isinstance(model, str):
            text = model.strip()
            data["model"] = json.loads(text) if text.startswith("{") else {"path": text}
        token = data.get("AERPLANE_LEARNER_TOKEN") or data.get("shared_learner_token")
        _default_in_group(data, "coefficient", "token", token)
        _default_in_group(data, "run", "run_id", data.get("AERPLANE_RUN_ID") or data.get("shared_run_id"))
        return data

    @model_validator(mode="after")
    def _cross_field(self) -> LearnerSettings:
        if self.batch.prompts_per_step % self.batch.mini_batches:
            raise ValueError(
                f"batch.prompts_per_step: must be divisible by batch.mini_batches {self.batch.mini_batches} "
                f"(got {self.batch.prompts_per_step})"
            )
        if self.weights.interval > max(1, self.run.staleness):
            raise ValueError(
                f"weights.interval: {self.weights.interval} exceeds run.staleness {self.run.staleness}: generation "
                "would sample with weights older than the staleness bound allows"
            )
        try:
            from aerplane.core.strategies import build_strategy  # pure Python, no torch

            build_strategy(self.strategy.name, **strategy_kwargs(self.strategy.params, self.strategy.options))
        except ValueError as exc:
            raise ValueError(f"strategy.params: {exc}") from None
        ride_out = self.coefficient.outage_s + self.coefficient.timeout_s
        if self.hang_timeout_s and self.coefficient.target != "local" and self.hang_timeout_s <= ride_out:
            raise ValueError(
                f"hang_timeout_s: {self.hang_timeout_s} must exceed coefficient.outage_s + coefficient.timeout_s "
                f"({ride_out}): a step rides out a coefficient service restart that long (or 0 to disable)"
            )
        if self.model.dtype == "float16":
            raise ValueError(
                "model.dtype: float16 training needs loss scaling, which the learner does not do; "
                "use bfloat16 or float32"
            )
        return self

    # --- derived locations ----------------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.run.directory

    @property
    def checkpoint_dir(self) -> Path:
        return self.checkpoint.dir if self.checkpoint.dir is not None else self.run_dir / "checkpoints"

    @property
    def weights_dir(self) -> Path:
        return self.weights.dir if self.weights.dir is not None else self.run_dir / "weights"

    def check_world(self, world_size: int) -> None:
        """Checks that need the number of DDP ranks; raises SettingsError naming the key."""
        per = self.batch.prompts_per_step
        if per % world_size:
            raise SettingsError(
                f"{SECTION}.batch.prompts_per_step: must be divisible by world size {world_size} (got {per})"
            )
        if per % (world_size * self.batch.mini_batches):
            raise SettingsError(
                f"{SECTION}.batch.prompts_per_step: must be divisible by world size × batch.mini_batches = "
                f"{world_size * self.batch.mini_batches} (got {per})"
            )

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe copy of the resolved settings (written to the run dir, stored in checkpoints)."""
        data = json.loads(self.model_dump_json())
        if data["coefficient"].get("token"):
            data["coefficient"]["token"] = "***"
        return data
