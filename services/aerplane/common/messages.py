"""Typed records carried on the Redis streams (DESIGN §3), and their compact binary encoding.

Every record carries the run id, the step, and — where it concerns samples — the prompt id, the sample index and
the policy version, so that consumers can drop duplicates and stale samples. A record travels as one stream field
`d` holding a msgpack map; token ids and logprobs are packed little-endian arrays (uint32 / float32), never lists
of numbers. `decode` validates everything (kind, schema version, field types, sizes) and raises `MessageError`
with a reason, which the stream consumer puts on the dead-letter stream.

Stream keys are namespaced by run: `stream_key(run_id, "rollout:requests")` → `aerplane:{run_id}:rollout:requests`.
"""

from __future__ import annotations

import array
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import msgpack

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_TOKENS = 1 << 20
MAX_TEXT_CHARS = 4 * 1024 * 1024

# Stream names (suffixes under aerplane:{run_id}:).
ROLLOUT_REQUESTS = "rollout:requests"
ROLLOUT_GENERATED = "rollout:generated"
ROLLOUT_SCORED = "rollout:scored"
WEIGHTS = "weights"
EVENTS = "events"
DEAD_LETTER = "deadletter"

if sys.byteorder != "little":  # pragma: no cover - every platform we ship on is little-endian
    raise ImportError("aerplane's packed arrays assume a little-endian host")


class MessageError(ValueError):
    """A stream payload that cannot be decoded or fails validation."""


def stream_key(run_id: str, name: str) -> str:
    return f"aerplane:{run_id}:{name}"


def _pack_u32(values: list[int]) -> bytes:
    return array.array("I", values).tobytes()


def _pack_f32(values: list[float]) -> bytes:
    return array.array("f", values).tobytes()


def _unpack(raw: Any, code: str, name: str) -> list:
    if not isinstance(raw, bytes):
        raise MessageError(f"{name}: expected packed bytes, got {type(raw).__name__}")
    if len(raw) % 4:
        raise MessageError(f"{name}: packed array length {len(raw)} is not a multiple of 4")
    if len(raw) // 4 > MAX_TOKENS:
        raise MessageError(f"{name}: {len(raw) // 4} elements exceed the limit of {MAX_TOKENS}")
    arr = array.array(code)
    arr.frombytes(raw)
    return arr.tolist()


# Field kinds used by the validator.
_STR, _INT, _FLOAT, _U32, _F32, _DICT, _OPT_INT, _OPT_FLOAT = (
    "str",
    "int",
    "float",
    "u32[]",
    "f32[]",
    "dict",
    "int?",
    "float?",
)


@dataclass(frozen=True, slots=True)
class _Record:
    KIND: ClassVar[str] = ""
    SPEC: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        for name, kind in self.SPEC.items():
            _check_value(name, kind, getattr(self, name))
        if not self.run_id:  # type: ignore[attr-defined]
            raise MessageError("run_id: must not be empty")

    def encode(self) -> bytes:
        self.validate()
        body: dict[str, Any] = {"k": self.KIND, "v": SCHEMA_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            kind = self.SPEC[f.name]
            if kind == _U32:
                value = _pack_u32(value)
            elif kind == _F32:
                value = _pack_f32(value)
            body[f.name] = value
        data = msgpack.packb(body, use_bin_type=True)
        if len(data) > MAX_MESSAGE_BYTES:
            raise MessageError(f"{self.KIND}: encoded size {len(data)} exceeds {MAX_MESSAGE_BYTES} bytes")
        return data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_value(name: str, kind: str, value: Any) -> None:
    if kind == _STR:
        if not isinstance(value, str):
            raise MessageError(f"{name}: expected a string, got {type(value).__name__}")
        if len(value) > MAX_TEXT_CHARS:
            raise MessageError(f"{name}: {len(value)} characters exceed the limit of {MAX_TEXT_CHARS}")
    elif kind in (_INT, _OPT_INT):
        if value is None and kind == _OPT_INT:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MessageError(f"{name}: expected a non-negative integer, got {value!r}")
    elif kind in (_FLOAT, _OPT_FLOAT):
        if value is None and kind == _OPT_FLOAT:
            return
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise MessageError(f"{name}: expected a finite number, got {value!r}")
    elif kind in (_U32, _F32):
        if not isinstance(value, list | tuple):
            raise MessageError(f"{name}: expected a list, got {type(value).__name__}")
        if len(value) > MAX_TOKENS:
            raise MessageError(f"{name}: {len(value)} elements exceed the limit of {MAX_TOKENS}")
    elif kind == _DICT:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise MessageError(f"{name}: expected a map with string keys")


@dataclass(frozen=True, slots=True)
class RolloutRequest(_Record):
    """One prompt to sample `num_samples` (G) responses for, published by the learner."""

    KIND: ClassVar[str] = "rollout_request"
    SPEC: ClassVar[dict[str, str]] = {
        "run_id": _STR, "step": _INT, "prompt_id": _STR, "prompt": _STR, "ground_truth": _STR, "task": _STR,
        "difficulty": _STR, "num_samples": _INT, "policy_version": _INT, "temperature": _FLOAT, "top_p": _FLOAT,
        "max_tokens": _INT, "seed": _OPT_INT,
    }  # fmt: skip

    run_id: str
    step: int
    prompt_id: str
    prompt: str  # chat-formatted prompt text, ready for the tokenizer (no further templating)
    ground_truth: str
    task: str
    difficulty: str
    num_samples: int
    policy_version: int  # the policy version the learner expects these samples from (at least)
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None

    def validate(self) -> None:
        _Record.validate(self)
        if not 1 <= self.num_samples <= 1024:
            raise MessageError(f"num_samples: must be in [1, 1024], got {self.num_samples}")
        if not 1 <= self.max_tokens <= MAX_TOKENS:
            raise MessageError(f"max_tokens: must be in [1, {MAX_TOKENS}], got {self.max_tokens}")
        if not 0 < self.top_p <= 1:
            raise MessageError(f"top_p: must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True, slots=True)
class GeneratedSample(_Record):
    """One sampled response with its per-token logprobs, published by generation."""

    KIND: ClassVar[str] = "generated_sample"
    SPEC: ClassVar[dict[str, str]] = {
        "run_id": _STR, "step": _INT, "prompt_id": _STR, "sample_index": _INT, "num_samples": _INT,
        "policy_version": _INT, "task": _STR, "difficulty": _STR, "ground_truth": _STR,
        "prompt_token_ids": _U32, "response_token_ids": _U32, "logprobs": _F32, "response_text": _STR,
        "finish_reason": _STR,
    }  # fmt: skip

    run_id: str
    step: int
    prompt_id: str
    sample_index: int
    num_samples: int
    policy_version: int  # the version of the weights that produced this sample
    task: str
    difficulty: str
    ground_truth: str
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    logprobs: list[float]  # sampling logprob of each response token under `policy_version`
    response_text: str
    finish_reason: str = "stop"

    def validate(self) -> None:
        _Record.validate(self)
        if self.sample_index >= self.num_samples:
            raise MessageError(f"sample_index: {self.sample_index} is not below num_samples {self.num_samples}")
        if len(self.logprobs) != len(self.response_token_ids):
            raise MessageError(
                f"logprobs: {len(self.logprobs)} values for {len(self.response_token_ids)} response tokens"
            )

    @property
    def key(self) -> tuple[str, int, str, int]:
        """Identity for de-duplication: (run, step, prompt, sample)."""
        return (self.run_id, self.step, self.prompt_id, self.sample_index)


@dataclass(frozen=True, slots=True)
class ScoredSample(_Record):
    """A generated sample with its verified reward, published by the reward service."""

    KIND: ClassVar[str] = "scored_sample"
    SPEC: ClassVar[dict[str, str]] = {**GeneratedSample.SPEC, "reward": _FLOAT, "reason": _STR}

    run_id: str
    step: int
    prompt_id: str
    sample_index: int
    num_samples: int
    policy_version: int
    task: str
    difficulty: str
    ground_truth: str
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    logprobs: list[float]
    response_text: str
    finish_reason: str
    reward: float
    reason: str  # match | mismatch | no_answer | timeout | too_long | error

    validate = GeneratedSample.validate  # type: ignore[assignment]

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.run_id, self.step, self.prompt_id, self.sample_index)

    @classmethod
    def from_generated(cls, g: GeneratedSample, reward: float, reason: str) -> ScoredSample:
        return cls(**{f.name: getattr(g, f.name) for f in fields(g)}, reward=reward, reason=reason)


@dataclass(frozen=True, slots=True)
class WeightsAnnouncement(_Record):
    """A new policy version: a safetensors checkpoint on the shared volume."""

    KIND: ClassVar[str] = "weights"
    SPEC: ClassVar[dict[str, str]] = {"run_id": _STR, "version": _INT, "step": _INT, "path": _STR, "num_bytes": _INT}

    run_id: str
    version: int
    step: int
    path: str  # folder holding model.safetensors (and config) for this version
    num_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Event(_Record):
    """A lifecycle event (run started, step done, service ready, ...)."""

    KIND: ClassVar[str] = "event"
    SPEC: ClassVar[dict[str, str]] = {"run_id": _STR, "kind": _STR, "step": _INT, "time": _FLOAT, "detail": _DICT}

    run_id: str
    kind: str
    step: int = 0
    time: float = field(default_factory=time.time)
    detail: dict[str, Any] = field(default_factory=dict)


RECORDS: dict[str, type[_Record]] = {
    cls.KIND: cls for cls in (RolloutRequest, GeneratedSample, ScoredSample, WeightsAnnouncement, Event)
}


def decode(data: bytes, expect: type[_Record] | None = None) -> _Record:
    """Decode and validate one payload; raise MessageError with the reason."""
    if not isinstance(data, bytes):
        raise MessageError(f"payload: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"payload: {len(data)} bytes exceed {MAX_MESSAGE_BYTES}")
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise MessageError(f"payload: not msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict):
        raise MessageError("payload: expected a map")
    kind = body.pop("k", None)
    version = body.pop("v", None)
    cls = RECORDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(f"kind: unknown record kind {kind!r}")
    if expect is not None and cls is not expect:
        raise MessageError(f"kind: expected {expect.KIND!r}, got {kind!r}")
    if version != SCHEMA_VERSION:
        raise MessageError(f"v: unsupported schema version {version!r} (this build reads {SCHEMA_VERSION})")
    names = {f.name for f in fields(cls)}
    unknown = set(body) - names
    if unknown:
        raise MessageError(f"{kind}: unknown fields {sorted(unknown)}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in body:
            continue  # dataclass defaults apply; a missing required field fails below
        raw = body[f.name]
        spec = cls.SPEC[f.name]
        if spec == _U32:
            raw = _unpack(raw, "I", f.name)
        elif spec == _F32:
            raw = _unpack(raw, "f", f.name)
        values[f.name] = raw
    try:
        record = cls(**values)
    except TypeError as exc:
        raise MessageError(f"{kind}: {exc}") from None
    record.validate()
    return record
