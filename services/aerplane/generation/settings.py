"""Configuration of `aerplane generation serve`: one settings class, validated at start-up.

Environment variables (CLI flags override them):

| setting | env var | default |
|---|---|---|
| run_id | `AERPLANE_RUN_ID` or `AERPLANE_GENERATION_RUN_ID` | `default` |
| redis_url | `AERPLANE_REDIS_URL` (shared by every service) | `redis://127.0.0.1:6379/0` |
| hang_timeout_s | `AERPLANE_GENERATION_HANG_TIMEOUT_S` | 900 (0: never hung) |
| … | `AERPLANE_GENERATION_<FIELD>` for the rest | see the fields |

e.g. `AERPLANE_GENERATION_BACKEND=transformers AERPLANE_GENERATION_MODEL=tiny aerplane generation serve`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from aerplane.common.flags import Flag
from aerplane.common.settings import HttpSettings, RedisSettings, RunId, ServiceSettings

SECTION = "generation"


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GenerationSettings(ServiceSettings, RedisSettings, HttpSettings):
    """Settings of the generation service (rollout requests in, sampled responses with logprobs out)."""

    model_config = SettingsConfigDict(env_prefix="AERPLANE_GENERATION_", validate_by_name=True)

    run_id: RunId = Field("default", validation_alias=AliasChoices("AERPLANE_RUN_ID", "AERPLANE_GENERATION_RUN_ID"))
    """The run whose streams this instance serves (`aerplane:{run_id}:rollout:requests`, ...)."""

    backend: Literal["vllm", "transformers"] = "vllm"
    """`vllm` (a vLLM OpenAI-compatible server, started here or given by `vllm_url`) or `transformers` (in-process)."""

    model: str = "smollm2-135m"
    """Initial policy (version 0): `smollm2-135m`, `tiny` or a Hugging Face model folder."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Compute dtype; `auto` is float32 on CPU and bfloat16 on a GPU."""

    http_port: int = Field(8002, ge=0, le=65535)
    """Ops HTTP port (0: any free port)."""

    vllm_url: str | None = None
    """Use this running vLLM OpenAI-compatible server (e.g. `http://vllm:8000`) instead of starting one. It must
    serve the same model and run with `VLLM_SERVER_DEV_MODE=1` for in-place weight reloads."""

    vllm_port: int = Field(8100, ge=0, le=65535)
    """Port of the vLLM server this service starts (0: any free port); ignored with `vllm_url`."""

    vllm_startup_timeout_s: float = Field(900.0, gt=0)
    """How long the started vLLM server may take to answer /health (CPU start-up is about a minute)."""

    vllm_max_model_len: Annotated[int, Flag("--max-model-len")] = Field(2048, ge=64)
    """vLLM `--max-model-len`: prompt + response tokens per sequence (the KV cache is sized for it)."""

    vllm_kv_cache_gib: float = Field(1.0, gt=0, le=1024)
    """CPU only: KV cache size in GiB (`VLLM_CPU_KVCACHE_SPACE`)."""

    vllm_gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """GPU only: fraction of GPU memory vLLM may use (`--gpu-memory-utilization`)."""

    vllm_enforce_eager: bool = True
    """Pass `--enforce-eager` (no graph capture / compilation): much faster start-up, a little slower decoding."""

    vllm_extra_args: list[str] = Field(default_factory=list)
    """More vLLM server flags, e.g. `["--max-num-seqs", "256"]` (env: a JSON list)."""

    vllm_log: Path | None = None
    """Log file of the vLLM server started here (default: none, vLLM's output goes to this service's stdout)."""

    vllm_request_timeout_s: float = Field(600.0, gt=0)
    """Timeout of one completion request to vLLM."""

    logprobs_mode: Literal["raw", "processed"] = "processed"
    """Which logprob each sampled token carries: `processed` = under the distribution actually sampled from (logits
    / temperature, then top-p; vLLM's `processed_logprobs`) — with top_p = 1 exactly what the learner recomputes
    (it divides its logits by the temperature too); `raw` = the model's own distribution at temperature 1 (vLLM's
    default `raw_logprobs`)."""

    max_batch_prompts: int = Field(64, ge=1, le=4096)
    """Most rollout requests (prompts) taken from the stream and sent to the engine together."""

    batch_wait_ms: int = Field(20, ge=0, le=10_000)
    """After the first request arrives, wait up to this long for more to fill the batch."""

    max_batch_tokens: int = Field(65536, ge=1)
    """transformers backend: most sequences × (prompt + max_tokens) tokens in one `generate()` call."""

    weights_wait_s: float = Field(120.0, ge=0)
    """When a request asks for a newer policy version than is loaded, wait this long for its weights announcement
    before sampling with the current weights anyway (the learner then drops or importance-corrects the samples)."""

    group: str = Field("generation", min_length=1)
    """Consumer group on the rollout-requests stream (instances of this service share it)."""

    consumer: str = Field(default_factory=_default_consumer, min_length=1)
    """This instance's consumer name in the group (default `<hostname>-<pid>`)."""

    claim_idle_ms: int = Field(120_000, ge=1000)
    """Requests a dead instance left pending are reclaimed after this idle time (longer than the slowest batch)."""

    max_deliveries: int = Field(5, ge=1)
    """A request delivered more often than this goes to the dead-letter stream."""

    seed: int = Field(0, ge=0)
    """Base sampling seed for requests that carry none (vLLM gets seed + sample offset per request)."""

    hang_timeout_s: float = Field(900.0, ge=0)
    """/healthz reports the rollout loop hung (503) when requests are in flight in the engine (a batch handed to it
    and not yet published, or a weights reload) and nothing has come back for this long (0: never). A wave of
    responses coming back is progress, so the bound is the slowest single response: it must exceed
    `vllm_request_timeout_s` (600 s, a long response at the full `max_model_len` on a busy GPU) — then a stuck
    engine surfaces as timed-out requests first, and the hang covers what has no timeout of its own (a wedged
    reload, a transformers `generate`, a stuck Redis publish). Waiting for requests, or for the learner's weights
    announcement, is waiting for input: healthy however long."""

    exit_on_hang: bool = True
    """Exit with code 124 (`common.liveness.HUNG_EXIT_CODE`) once the loop is hung, so that `aerplane up`, compose's
    `restart:` or the kubelet replaces the process (and its vLLM server); off, /healthz still answers 503."""

    @field_validator("vllm_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _cross_checks(self) -> GenerationSettings:
        if self.vllm_url is not None and self.backend != "vllm":
            raise ValueError(f"vllm_url: only used with backend vllm (backend is {self.backend})")
        if self.backend == "vllm" and 0 < self.hang_timeout_s <= self.vllm_request_timeout_s:
            raise ValueError(
                f"hang_timeout_s ({self.hang_timeout_s}) must exceed vllm_request_timeout_s "
                f"({self.vllm_request_timeout_s}): one slow response would count as a hang (or 0 to disable)"
            )
        if self.vllm_port and self.vllm_port == self.http_port and self.backend == "vllm" and self.vllm_url is None:
            raise ValueError(f"vllm_port: {self.vllm_port} is also the http_port")
        return self
