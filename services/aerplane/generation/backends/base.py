"""The small interface every generation engine implements (vLLM server, in-process transformers).

The worker hands a backend token-id prompts with sampling parameters and gets back, per prompt, `n` samples with
the token ids, text, per-token logprobs and finish reason of each. Weights change in place with `load_weights`
between batches; the worker stamps every sample with the version it passed there.

Logprobs: by default (`logprobs_mode="processed"`, vLLM's `processed_logprobs`) each sampled token carries its
logprob under the distribution it was sampled from — log softmax(logits / temperature), renormalised over the top-p
nucleus — which with top_p = 1 is what the learner recomputes (it scales its logits by the temperature too).
`raw` (vLLM's default `raw_logprobs`) reports log softmax(logits) of the model itself, temperature 1, no top-p.
Greedy requests (temperature 0) get the raw logprob in both modes. Both backends compute the same quantity in
float32.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aerplane.common.closing import Closing

LOGPROBS_MODES = ("raw", "processed")


class BackendError(RuntimeError):
    """The engine failed (died, refused a request, could not load weights)."""


class RequestRejected(BackendError):
    """The engine refused one request for a reason that retrying will not fix (e.g. the prompt is too long)."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError(f"n: must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be at least 1, got {self.max_tokens}")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class Sample:
    token_ids: list[int]  # the response tokens, including a final end-of-sequence token when it stopped on one
    text: str  # decoded response, special tokens skipped
    logprobs: list[float]  # one per token in token_ids
    finish_reason: str  # "stop" (end of sequence) | "length" (hit max_tokens)


Result = list[Sample] | BackendError


class Backend(Closing, abc.ABC):
    """A generation engine holding one policy version at a time."""

    name: str = "base"

    @property
    @abc.abstractmethod
    def max_model_len(self) -> int:
        """Most prompt + response tokens one sequence may have."""

    @abc.abstractmethod
    def generate_waves(self, requests: Sequence[GenerationRequest]) -> Iterator[list[tuple[int, Result]]]:
        """Yield requests as they finish, in waves: each wave lists `(index into requests, samples or the error
        for that request)` of the requests that finished together (one engine call, or the ones done by the time
        the caller came back for more), so the caller publishes a wave in one round trip. Every request appears
        in exactly one wave."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        """All requests' samples in request order; the first failed request raises its error."""
        out: list[list[Sample] | None] = [None] * len(requests)
        for wave in self.generate_waves(requests):
            for index, result in wave:
                if isinstance(result, BaseException):
                    raise result
                out[index] = result
        return out  # type: ignore[return-value]

    @abc.abstractmethod
    def load_weights(self, path: Path) -> None:
        """Replace the weights in place with the safetensors checkpoint in folder `path` (no restart)."""

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether the engine can take requests now, with details for /readyz."""
        return True, {}

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the engine (stop the server this backend started)."""


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def checkpoint_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder; raises BackendError when there are none."""
    if not path.is_dir():
        raise BackendError(f"weights folder {path} does not exist (is the checkpoint volume shared?)")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise BackendError(f"weights folder {path} holds no *.safetensors file")
    return files
