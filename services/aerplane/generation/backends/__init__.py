"""Generation engines behind one interface (`base.Backend`): `vllm` (server child or URL) and `transformers`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aerplane.generation.backends.base import (
    Backend,
    BackendError,
    GenerationRequest,
    RequestRejected,
    Sample,
    SamplingParams,
    has_cuda,
)

if TYPE_CHECKING:
    from aerplane.generation.settings import GenerationSettings

__all__ = [
    "Backend",
    "BackendError",
    "GenerationRequest",
    "RequestRejected",
    "Sample",
    "SamplingParams",
    "build_backend",
    "resolve_dtype",
]


def resolve_dtype(dtype: str) -> str:
    """`auto` → bfloat16 on a GPU, float32 on CPU; anything else as given."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if has_cuda() else "float32"


def build_backend(settings: GenerationSettings, model_path: Path) -> Backend:
    """The engine the settings ask for, loaded and ready (this blocks while vLLM starts)."""
    dtype = resolve_dtype(settings.dtype)
    if settings.backend == "transformers":
        from aerplane.generation.backends.hf import TransformersBackend

        return TransformersBackend(
            model_path,
            dtype=dtype,
            logprobs_mode=settings.logprobs_mode,
            max_batch_tokens=settings.max_batch_tokens,
            seed=settings.seed,
        )
    from aerplane.generation.backends.vllm_server import VLLMBackend

    if settings.vllm_url is not None:
        backend = VLLMBackend.connect(
            settings.vllm_url,
            max_concurrency=settings.max_batch_prompts,
            request_timeout=settings.vllm_request_timeout_s,
            wait_timeout=settings.vllm_startup_timeout_s,
        )
        backend.describe()
        return backend
    cuda = has_cuda()
    backend = VLLMBackend.start(
        model_path,
        port=settings.vllm_port,
        dtype=dtype,
        max_model_len=settings.vllm_max_model_len,
        logprobs_mode=settings.logprobs_mode,
        enforce_eager=settings.vllm_enforce_eager,
        kv_cache_gib=None if cuda else settings.vllm_kv_cache_gib,
        gpu_memory_utilization=settings.vllm_gpu_memory_utilization if cuda else None,
        extra_args=settings.vllm_extra_args,
        seed=settings.seed,
        startup_timeout=settings.vllm_startup_timeout_s,
        log_path=settings.vllm_log,
        max_concurrency=settings.max_batch_prompts,
        request_timeout=settings.vllm_request_timeout_s,
    )
    backend.describe()
    return backend
