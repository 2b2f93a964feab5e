"""Configuration of `aerplane up` and the shared setup of `aerplane compare`, and the options of the launcher's other
commands (`compare`, `report`): settings classes whose flags are generated from them (`aerplane.common.flags`).

`UpSettings` composes the services' settings: each training field takes its type, bounds and doc from the learner
setting it feeds (`fed`, which records the key: `learner_values` is what `Stack.start_learner` passes), and `up`'s
own defaults, where they differ, are the one table `UP_DEFAULTS`. Flags win over `AERPLANE_UP_<FIELD>` variables
(`AERPLANE_UP_STEPS=40 aerplane up`); `AERPLANE_REDIS_URL` points the run at a running Redis instead of starting one.
The strategy is `--strategy NAME[:KEY=VALUE...]`, as on every command line; `with_resolved_strategy` fills in the
rest of its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsConfigDict

from aerplane.common.flags import STRATEGY_FLAG, Flag, group_model, set_dotted
from aerplane.common.settings import RunId, ServiceSettings
from aerplane.common.trackers import REPORT_TO_FLAG
from aerplane.core.strategies import STRATEGY_DEFAULTS, STRATEGY_NAMES, parse_spec, resolve_strategy, split_params
from aerplane.learner.settings import LearnerSettings

SECTION = "up"
_PORT = {"ge": 1, "le": 65535}

# `aerplane up`'s defaults where they differ from the services' own (which suit a GPU cluster): the CPU demo regime
# of docs/results/README.md. On a 2-core CPU with SmolLM2-135M, entropy under `none` falls below H* = 0.5·H_0 around
# step 8 at lr 2e-4, so AER's controller engages within the run; ≈ 15 minutes. There α ≈ 0.02 is what holds entropy,
# and DESIGN's η = 1e-3 and α_max = 1e-2 (placed for GPU-scale learning rates) would take the whole run to get there:
# `strategy_params` are the parameters each strategy runs with unless given. Flags and AERPLANE_UP_* override all.
UP_DEFAULTS: dict[str, Any] = {
    "model": "smollm2-135m",
    "steps": 20,
    "samples_per_prompt": 4,
    "max_tokens": 64,
    "lr": 2e-4,
    "checkpoint_interval": 5,
    "strategy_params": {"aer": {"eta": 0.01, "alpha_max": 0.03}},
}


@dataclass(frozen=True, slots=True)
class Feeds:
    """Metadata of an `UpSettings` field: the learner setting (a dotted `LearnerSettings` key) its value goes to."""

    key: str


def learner_field(key: str) -> FieldInfo:
    """The `LearnerSettings` field of a dotted key (`optim.lr`)."""
    cls: Any = LearnerSettings
    *groups, leaf = key.split(".")
    for group in groups:
        cls = group_model(cls.model_fields[group].annotation)
    return cls.model_fields[leaf]


def fed(key: str, *default: Any) -> Any:
    """The field of learner setting `key` — bounds, doc and default — with `default` instead where given (an
    `UP_DEFAULTS` entry), for an `UpSettings` field that feeds it. Not the learner's flag name: up keeps its own."""
    info = FieldInfo.merge_field_infos(learner_field(key), **({"default": default[0]} if default else {}))
    info.metadata = [m for m in info.metadata if not isinstance(m, Flag)] + [Feeds(key)]
    return info


class Ports(BaseModel):
    """The ports of one run's services on 127.0.0.1 (DESIGN §2's defaults)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    coefficient_grpc: Annotated[int, Flag("--coefficient-grpc-port")] = Field(50051, **_PORT)
    """The coefficient service's gRPC port (the learner's calls)."""
    coefficient_http: Annotated[int, Flag("--coefficient-http-port")] = Field(8000, **_PORT)
    """The coefficient service's REST API and /metrics."""
    reward_http: Annotated[int, Flag("--reward-http-port")] = Field(8001, **_PORT)
    """The reward service's HTTP port (POST /v1/verify, /metrics)."""
    generation_http: Annotated[int, Flag("--generation-http-port")] = Field(8002, **_PORT)
    """The generation service's ops port (/healthz, /readyz, /metrics)."""
    vllm: Annotated[int, Flag("--vllm-port")] = Field(8100, **_PORT)
    """The vLLM server the generation service starts (vllm backend only)."""
    learner_http: Annotated[int, Flag("--learner-http-port")] = Field(8003, **_PORT)
    """The learner's ops port (/healthz, /metrics)."""

    @classmethod
    def free(cls) -> Ports:
        """Six ports free right now (for a run next to another one)."""
        from aerplane.common.process import free_port

        return cls(**{name: free_port() for name in cls.model_fields})


class UpSettings(ServiceSettings):
    """Everything `aerplane up` runs with: the training setup, the evaluation, the services' ports and supervision."""

    model_config = SettingsConfigDict(env_prefix="AERPLANE_UP_", validate_by_name=True)

    steps: int = fed("run.steps", UP_DEFAULTS["steps"])
    model: str = fed("model.path", UP_DEFAULTS["model"])
    task: str = fed("data.task")
    data: Path | None = fed("data.file")
    strategy: Annotated[Literal[STRATEGY_NAMES], STRATEGY_FLAG] = fed("strategy.name")  # type: ignore[valid-type]
    params: dict[str, float] = fed("strategy.params")
    options: dict[str, str] = fed("strategy.options")
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    """Generation engine; `auto` is vLLM when it is installed."""
    run_dir: str | None = None
    """Run directory; default `runs/<run-id>`."""
    run_id: RunId | None = None
    """Run id; default `aer-<date>-<time>-<random>`."""
    resume: bool = False
    """Continue the run in `run_dir` from its last checkpoint."""
    eval_every: int = Field(0, ge=0)
    """Evaluate every this many steps (0: at the end only)."""
    eval_split: Literal["rg-heldout", "champ"] = "rg-heldout"
    """Held-out problems: reasoning-gym's held-out split or CHAMP."""
    eval_size: int = Field(32, ge=1)
    """Held-out problems evaluated."""
    eval_k: int = Field(8, ge=1)
    """Samples per held-out problem for avg@k / pass@k (k = 1, 4, 8 up to it)."""
    eval_seed: int = Field(0, ge=0)
    """Picks the held-out problems and their sampling seeds, independent of `seed`: the same for every run."""
    prompts_per_step: int = fed("batch.prompts_per_step")
    samples_per_prompt: Annotated[int, Flag("--samples-per-prompt", aliases=("-G",))] = fed(
        "batch.samples_per_prompt", UP_DEFAULTS["samples_per_prompt"]
    )
    max_tokens: int = fed("lengths.max_response_tokens", UP_DEFAULTS["max_tokens"])
    temperature: float = fed("sampling.temperature")
    lr: float = fed("optim.lr", UP_DEFAULTS["lr"])
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Learner compute: `bfloat16` is mixed precision with float32 master weights; `auto` is bfloat16 on a CUDA GPU
    and float32 on CPU (see `up.resolve_dtype`)."""
    seed: int = fed("run.seed")
    nproc: int = Field(1, ge=1)
    """Learner processes (DDP ranks)."""
    checkpoint_interval: int = fed("checkpoint.interval", UP_DEFAULTS["checkpoint_interval"])
    report_to: Annotated[list[str], REPORT_TO_FLAG] = fed("tracking.report_to")
    tensorboard_dir: Path | None = fed("tracking.tensorboard_dir")
    wandb_project: str = fed("tracking.wandb_project")
    wandb_entity: str | None = fed("tracking.wandb_entity")
    wandb_mode: Literal["online", "offline", "disabled"] | None = fed("tracking.wandb_mode")
    wandb_dir: Path | None = fed("tracking.wandb_dir")
    mlflow_tracking_uri: str | None = fed("tracking.mlflow_tracking_uri")
    mlflow_experiment: str = fed("tracking.mlflow_experiment")
    ports: Ports = Field(default_factory=Ports)
    """The services' ports."""
    live: bool | None = None
    """Live terminal view; default: when stdout is a terminal."""
    redis_url: str | None = Field(None, validation_alias=AliasChoices("AERPLANE_REDIS_URL", "redis_url"))
    """Use this running Redis instead of starting one."""
    max_failures: int = Field(5, ge=1)
    """A service that dies is restarted (the learner with --resume); this many failures of one service within
    `failure_window` seconds stop the run."""
    failure_window: float = Field(600.0, gt=0)
    """Seconds over which `max_failures` counts."""
    health_interval: float = Field(5.0, ge=0)
    """Seconds between one /healthz probe of a service and the next."""
    health_timeout: float = Field(10.0, gt=0)
    """Seconds a /healthz probe waits for its answer."""
    health_failures: int = Field(3, ge=1)
    """Unanswered /healthz probes in a row after which a service is hung (killed and restarted like a crash); a
    service whose own loop stalled past its bound says so at once (503)."""

    @model_validator(mode="before")
    @classmethod
    def _strategy_spec(cls, data: Any) -> Any:
        """`--strategy aer:eta=0.01` (or AERPLANE_UP_STRATEGY): the name here, its parameters over `params` and
        `options` (KEY=none drops one: the default)."""
        spec = data.get("strategy") if isinstance(data, dict) else None
        if not isinstance(spec, str) or ":" not in spec:
            return data
        try:
            name, given = parse_spec(spec)
        except ValueError:
            return data  # `_spec_syntax` names the field
        numeric, options = split_params(given)
        params = {k: v for k, v in {**(data.get("params") or {}), **numeric}.items() if v is not None}
        strings = {k: v for k, v in {**(data.get("options") or {}), **options}.items() if v is not None}
        return {**data, "strategy": name, "params": params, "options": strings}

    @field_validator("strategy", mode="before")
    @classmethod
    def _spec_syntax(cls, value: Any) -> Any:
        """A spec `_strategy_spec` could not split: its syntax error."""
        if isinstance(value, str) and ":" in value:
            parse_spec(value)
        return value

    def with_resolved_strategy(self, given: dict[str, float | str | None] | None = None) -> UpSettings:
        """These settings with the strategy as `aerplane up` runs it: its parameters set here, then `given` (the
        old spellings' values), then `UP_DEFAULTS["strategy_params"]` for the rest, then the strategy's own; every
        parameter recorded in `params` and `options` (what run.json and the learner get). Raises ValueError naming
        a bad parameter."""
        strategy = resolve_strategy(
            self.strategy,
            {**self.params, **self.options, **(given or {})},
            defaults=UP_DEFAULTS["strategy_params"],
        )
        return self.model_copy(update={"params": strategy.numeric_params, "options": strategy.options})


def _feeds(info: FieldInfo) -> Feeds | None:
    return next((m for m in info.metadata if isinstance(m, Feeds)), None)


def learner_values(cfg: UpSettings) -> dict[str, Any]:
    """The learner settings (a nested dict of `LearnerSettings` keys) that `cfg`'s fields feed (`Feeds`); unset
    ones left out."""
    values: dict[str, Any] = {}
    for name, info in UpSettings.model_fields.items():
        feeds = _feeds(info)
        value = getattr(cfg, name)
        if feeds is not None and value is not None:
            set_dotted(values, feeds.key, value)
    return values


def demo_defaults_text() -> str:
    """`UP_DEFAULTS` beside the defaults they replace, for `aerplane up --help`."""
    parts = []
    for name, value in UP_DEFAULTS.items():
        feeds = _feeds(UpSettings.model_fields[name]) if name in UpSettings.model_fields else None
        if feeds is not None:
            parts.append(f"--{name.replace('_', '-')} {value} (learner: {learner_field(feeds.key).default})")
    for strategy, params in UP_DEFAULTS["strategy_params"].items():
        given = ", ".join(f"{k}={v} (DESIGN: {STRATEGY_DEFAULTS[strategy][k]})" for k, v in params.items())
        parts.append(f"under --strategy {strategy}, {given} unless given")
    return "; ".join(parts)


class UpOptions(BaseModel):
    """`aerplane up`'s options that are not settings of the run."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    free_ports: bool = False
    """Pick free ports instead of the defaults (for a run next to another one)."""


# UpSettings fields that are the shared setup of a comparison (everything but what varies per run, and plumbing).
_PER_RUN = ("strategy", "params", "options", "seed", "run_dir", "run_id", "resume", "ports", "live", "redis_url")
SETUP_FIELDS = tuple(name for name in UpSettings.model_fields if name not in _PER_RUN)


class CompareOptions(BaseModel):
    """`aerplane compare`'s own options; its shared setup is UpSettings' `SETUP_FIELDS`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    strategies: str | None = None
    """Comma-separated configurations: NAME[:KEY=VALUE[:KEY=VALUE...]], e.g.
    none,fixed:alpha=1e-3,aer:rho=0.8:weighting=uniform."""
    seeds: str | None = None
    """Comma-separated seeds for every configuration (without it: the matrix file's, else 0)."""
    matrix: Annotated[Path | None, Flag(metavar="FILE")] = None
    """TOML or YAML file with setup, seeds and [[config]] tables."""
    out: Path | None = None
    """Comparison folder (default runs/compare-<date>-<time>); reuse it to continue."""
    coefficient_http_port: int | None = Field(None, ge=0, le=65535)
    """REST port of the shared coefficient service (unset or 0: a free port)."""
    live: bool | None = None
    """Live terminal view per run (unset: when stdout is a terminal)."""
    keep_checkpoints: bool = False
    """Keep finished runs' checkpoints and every weights version (without it only the final weights stay; a
    SmolLM2 run's checkpoints take GBs)."""


class ReportOptions(BaseModel):
    """`aerplane report`'s arguments."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    run_dir: Annotated[list[str], Flag("RUN_DIR", nargs="+")]
    """A run directory (`aerplane up`) or a comparison folder (`aerplane compare`); with --config, one or more
    comparison folders."""
    config: Annotated[list[str], Flag(metavar="LABEL")] = Field(default_factory=list)
    """Print, instead, the per-seed tracking and held-out table of these configurations across the given comparison
    folders, with the mean over every seed (repeatable)."""
