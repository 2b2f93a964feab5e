"""Configuration of `aerplane up` and the shared setup of `aerplane compare`: one settings class, its flags
generated from it (`aerplane.common.flags`).

Flags win over `AERPLANE_UP_<FIELD>` variables (`AERPLANE_UP_STEPS=40 aerplane up`); `AERPLANE_REDIS_URL` points the
run at a running Redis instead of starting one. The strategy and its parameters come from the strategy flags
(`--strategy`, `--rho`, ... shared with `aerplane simulate`), not from here.

The defaults are the CPU demo regime (docs/results/README.md): on a 2-core CPU with SmolLM2-135M, entropy under
`none` falls below H* = 0.5·H_0 around step 8 at lr 2e-4, so AER's controller engages within the run; ≈ 15 minutes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from aerplane.common.flags import Flag
from aerplane.common.settings import RunId, ServiceSettings
from aerplane.core.strategies import STRATEGY_NAMES

SECTION = "up"
_PORT = {"ge": 1, "le": 65535}


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

    steps: int = Field(20, ge=1)
    """Training steps."""
    model: str = "smollm2-135m"
    """The policy: `smollm2-135m`, `tiny` or a Hugging Face model folder."""
    task: str = "mixed"
    """Training tasks: `mixed`, `easy`, `easy-tier` (reasoning-gym arithmetic at three, two or one difficulty tier),
    or a reasoning-gym dataset name."""
    data: str | None = None
    """A verl-style jsonl/parquet file of prompts and answers, instead of `task`."""
    strategy: Annotated[Literal[STRATEGY_NAMES], Flag(hidden=True)] = "aer"  # type: ignore[valid-type]
    """Entropy-control strategy (set with --strategy)."""
    params: dict[str, float] = Field(default_factory=dict)
    """Numeric strategy parameters (set with the strategy flags)."""
    options: dict[str, str] = Field(default_factory=dict)
    """String strategy parameters such as aer's `weighting`."""
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
    prompts_per_step: int = Field(8, ge=1)
    """Prompts per training step."""
    samples_per_prompt: Annotated[int, Flag("--samples-per-prompt", aliases=("-G",))] = Field(4, ge=1)
    """G, responses sampled per prompt."""
    max_tokens: int = Field(64, ge=1)
    """Most tokens per response."""
    temperature: float = Field(1.0, gt=0, le=10)
    """Sampling temperature (the learner divides its logits by it too)."""
    lr: float = Field(2e-4, gt=0, le=1)
    """Learning rate."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Learner compute: `bfloat16` is mixed precision with float32 master weights; `auto` is bfloat16 on a CUDA GPU
    and float32 on CPU (see `up.resolve_dtype`)."""
    seed: int = Field(0, ge=0)
    """Random seed of the run (model-side randomness, data order, generation seeds)."""
    nproc: int = Field(1, ge=1)
    """Learner processes (DDP ranks)."""
    checkpoint_interval: int = Field(5, ge=0)
    """Checkpoint every this many steps, and at the end."""
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


# UpSettings fields that are the shared setup of a comparison (everything but what varies per run, and plumbing).
_PER_RUN = ("strategy", "params", "options", "seed", "run_dir", "run_id", "resume", "ports", "live", "redis_url")
SETUP_FIELDS = tuple(name for name in UpSettings.model_fields if name not in _PER_RUN)
