"""Configuration of `aerplane reward serve`: one settings class, validated at start-up.

Environment variables (CLI flags override them):

| setting | env var | default |
|---|---|---|
| run_id | `AERPLANE_RUN_ID` (shared) | unset: required unless `consume` is false |
| redis_url | `AERPLANE_REDIS_URL` (shared) | `redis://127.0.0.1:6379/0` |
| host | `AERPLANE_REWARD_HOST` | `0.0.0.0` |
| http_port | `AERPLANE_REWARD_HTTP_PORT` | 8001 |
| workers | `AERPLANE_REWARD_WORKERS` | 2 |
| timeout_s | `AERPLANE_REWARD_TIMEOUT_S` | 5.0 |
| max_response_bytes | `AERPLANE_REWARD_MAX_RESPONSE_BYTES` | 65536 |
| max_nesting | `AERPLANE_REWARD_MAX_NESTING` | 32 |
| extraction | `AERPLANE_REWARD_EXTRACTION` | `math_verify` (or `boxed`, `last_number`, `boxed_or_last_number`) |
| hang_timeout_s | `AERPLANE_REWARD_HANG_TIMEOUT_S` | 300 (0: never hung) |
| exit_on_hang | `AERPLANE_REWARD_EXIT_ON_HANG` | true |
| … | `AERPLANE_REWARD_<FIELD>` for the rest | see the fields |

The service-specific variables carry the `REWARD_` part so that one environment can configure every service.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from aerplane.common.flags import Flag
from aerplane.common.settings import HttpSettings, RedisSettings, RunId, ServiceSettings
from aerplane.reward.scorers import DEFAULT_EXTRACTION, EXTRACTION_MODES


def _default_consumer() -> str:
    return f"reward-{socket.gethostname()}-{os.getpid()}"


class RewardSettings(ServiceSettings, RedisSettings, HttpSettings):
    """Settings of the reward verification service (stream consumer + POST /v1/verify)."""

    model_config = SettingsConfigDict(env_prefix="AERPLANE_REWARD_", validate_by_name=True)

    run_id: RunId | None = Field(None, validation_alias="AERPLANE_RUN_ID")
    """The run whose `rollout:generated` stream this service scores (keys `aerplane:{run_id}:...`)."""

    consume: bool = True
    """Consume the generated-rollouts stream; false serves only POST /v1/verify (no run or Redis needed)."""

    http_port: int = Field(8001, ge=0, le=65535)
    """POST /v1/verify, /healthz, /readyz, /metrics (0: any free port)."""

    workers: int = Field(2, ge=1, le=256)
    """Verification worker processes (items scored at once)."""

    timeout_s: Annotated[float, Flag("--timeout")] = Field(5.0, gt=0, le=600)
    """Hard per-item time limit: a worker still busy after it (plus 0.5 s grace) is killed and replaced."""

    max_response_bytes: int = Field(64 * 1024, ge=64, le=64 * 1024 * 1024)
    """Responses longer than this (UTF-8 bytes) score 0 with reason `too_long`, unparsed."""

    max_nesting: int = Field(32, ge=1, le=10_000)
    """Responses or ground truths whose brackets (`{`, `(`, `[`, one count) nest deeper score 0 with `too_long`,
    unparsed: LaTeX parsing slows down steeply with nesting (16 nested braces take math-verify seconds)."""

    worker_memory_mb: int = Field(1024, ge=0)
    """Address-space cap of each worker process in MiB (0: none); a scorer that needs more scores `error`."""

    extraction: str = DEFAULT_EXTRACTION
    """How `math` tasks find the answer in a response. `math_verify` (default): math-verify reads the whole response
    with its own LaTeX and expression extraction, boxed answers first (as TRL, verl and prime-rl call it); of several
    boxes the last counts (or all of them, as one set answer). `boxed`, `last_number`, `boxed_or_last_number`: our
    own cut-out (the last `\\boxed{}`, the last number, or the box else the last number) handed to math-verify.
    reasoning-gym tasks keep their own extraction (`math_verify` means `boxed_or_last_number` for them)."""

    math_tasks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Extra task names scored with math-verify like `math` (e.g. `gsm8k,dapo`; env: JSON list or comma list)."""

    group: str = Field("reward", min_length=1)
    """Consumer group on `rollout:generated` (all reward replicas share it)."""

    consumer: str = Field(default_factory=_default_consumer, min_length=1)
    """This replica's consumer name in the group (unique per replica; a restart may reuse it)."""

    batch_size: int = Field(16, ge=1, le=256)
    """Entries read from the stream at once (scored concurrently by the pool, published in one call); an entry
    holds one prompt's G samples, so a batch is batch_size × G items."""

    block_ms: int = Field(1000, ge=10, le=20_000)
    """How long one stream read waits for new entries."""

    claim_idle_ms: int = Field(30_000, ge=100)
    """Entries pending this long with another (dead) consumer are reclaimed (XAUTOCLAIM)."""

    max_deliveries: int = Field(5, ge=1, le=1000)
    """Entries delivered more often than this go to the dead-letter stream instead of being scored again."""

    stream_maxlen: int = Field(20_000, ge=100)
    """Approximate cap, in entries, of the streams this service writes (XADD MAXLEN ~); an entry holds one prompt's
    samples. A backstop: acknowledged entries are trimmed long before it."""

    downstream_group: str = Field("learner", min_length=1)
    """The group that consumes `rollout:scored`, watched for back-pressure."""

    downstream_max_lag: int = Field(2_000, ge=0)
    """Stop reading new work while `downstream_group` has more unfinished scored entries (one per prompt group)
    than this (0: no limit)."""

    shutdown_grace_s: float = Field(30.0, ge=0, le=600)
    """On SIGTERM, the batch in flight gets this long to finish and be published; the rest stays pending."""

    hang_timeout_s: float = Field(300.0, ge=0)
    """/healthz reports the stream loop hung (503) when it holds a batch read from the stream and not yet published
    and no item of it has finished for this long (0: never). The pool finishes an item every `timeout_s` + 0.5 s
    at worst (a hung scorer is killed) and a Redis outage is retried, not stalled, so 300 s without progress means
    the loop or the pool is stuck, not slow. Must exceed `timeout_s`. Idle (nothing to read, or held back by the
    learner's lag) is healthy however long."""

    exit_on_hang: bool = True
    """Exit with code 124 (`common.liveness.HUNG_EXIT_CODE`) once the loop is hung, so that `aerplane up`, compose's
    `restart:` or the kubelet replaces the process; off, /healthz still answers 503."""

    @field_validator("extraction")
    @classmethod
    def _known_extraction(cls, value: str) -> str:
        if value not in EXTRACTION_MODES:
            raise ValueError(f"must be one of {', '.join(EXTRACTION_MODES)}")
        return value

    @field_validator("math_tasks", mode="before")
    @classmethod
    def _split_tasks(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [t.strip() for t in text.split(",") if t.strip()]
        if isinstance(value, list):  # repeated flags, each may be a comma list: --math-tasks gsm8k,dapo
            return [t.strip() for item in value for t in str(item).split(",") if t.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RewardSettings:
        if self.consume and self.run_id is None:
            raise ValueError("run_id is required to consume the run's stream (or set consume=false for HTTP only)")
        if self.hang_timeout_s and self.hang_timeout_s <= self.timeout_s:
            raise ValueError(
                f"hang_timeout_s ({self.hang_timeout_s}) must exceed timeout_s ({self.timeout_s}): one slow item "
                "would count as a hang (or 0 to disable)"
            )
        if self.downstream_max_lag >= self.stream_maxlen:
            raise ValueError(
                f"downstream_max_lag ({self.downstream_max_lag}) must be below stream_maxlen ({self.stream_maxlen})"
            )
        return self
