"""Typed records carried on the Redis streams (DESIGN §3), and their compact binary encoding.

Every record carries the run id, the step, and — where it concerns samples — the prompt id, the sample index and
the policy version, so that consumers can drop duplicates and stale samples. A record travels in the stream field
`d` as a msgpack map; token ids and logprobs are packed little-endian arrays (uint32 / float32), never lists
of numbers. Records that belong together (a prompt's G samples) share one entry as a group (`encode_group`,
`decode_entry`). `decode` validates everything (kind, schema version, field types, sizes) and raises `MessageError`
with a reason, which the stream consumer puts on the dead-letter stream.

Stream keys are namespaced by run: `stream_key(run_id, "rollout:requests")` → `aerplane:{run_id}:rollout:requests`.
"""

from __future__ import annotations

import array
import math
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
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


def _unpack(raw: Any, code: str, name: str) -> list:
    if type(raw) is not bytes:
        raise MessageError(f"{name}: expected packed bytes, got {type(raw).__name__}")
    if len(raw) % 4:
        raise MessageError(f"{name}: packed array length {len(raw)} is not a multiple of 4")
    if len(raw) // 4 > MAX_TOKENS:
        raise MessageError(f"{name}: {len(raw) // 4} elements exceed the limit of {MAX_TOKENS}")
    arr = array.array(code)
    arr.frombytes(raw)
    return arr.tolist()


def _pack_array(values: Sequence[Any], code: str, name: str) -> bytes:
    """Little-endian uint32 / float32 bytes of a validated list; a value the type cannot hold is a MessageError
    (a negative or too large id, a float32 overflow), never a silent wrap or inf."""
    try:  # the faster of the two on CPython 3.11: array for uint32, struct for float32 (about 1.8x array's)
        return array.array(code, values).tobytes() if code == "I" else struct.pack(f"<{len(values)}f", *values)
    except (struct.error, TypeError, OverflowError) as exc:
        raise MessageError(f"{name}: {exc}") from None


# Field kinds, read from each record's annotations: the fields are the one declaration of a record.
_KINDS = {
    "str": "str",
    "int": "int",
    "float": "float",
    "int | None": "int?",
    "float | None": "float?",
    "list[int]": "u32[]",
    "list[float]": "f32[]",
    "dict[str, Any]": "dict",
}
_PACKED = {"u32[]": "I", "f32[]": "f"}


def _check_str(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise MessageError(f"{name}: expected a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise MessageError(f"{name}: {len(value)} characters exceed the limit of {MAX_TEXT_CHARS}")


def _check_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MessageError(f"{name}: expected a non-negative integer, got {value!r}")


def _check_float(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise MessageError(f"{name}: expected a finite number, got {value!r}")


def _check_array(name: str, value: Any) -> None:
    if not isinstance(value, list | tuple):
        raise MessageError(f"{name}: expected a list, got {type(value).__name__}")
    if len(value) > MAX_TOKENS:
        raise MessageError(f"{name}: {len(value)} elements exceed the limit of {MAX_TOKENS}")


def _check_dict(name: str, value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MessageError(f"{name}: expected a map with string keys")


def _optional(check: Any) -> Any:
    def check_optional(name: str, value: Any) -> None:
        if value is not None:
            check(name, value)

    return check_optional


_CHECKS = {
    "str": _check_str,
    "int": _check_int,
    "float": _check_float,
    "int?": _optional(_check_int),
    "float?": _optional(_check_float),
    "u32[]": _check_array,
    "f32[]": _check_array,
    "dict": _check_dict,
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """A record class's fields, sorted for the checks and the codec: built once per class from its annotations.

    The checks run per kind, with a quick test of the usual exact type inline and the full check (`_CHECKS`, which
    accepts e.g. an int where a float is expected, and words the error) only when the quick test fails."""

    fields: tuple[tuple[str, str], ...]  # (name, kind) of each wire field, in declaration order
    names: frozenset[str]
    strs: tuple[str, ...]
    ints: tuple[str, ...]
    floats: tuple[str, ...]
    arrays: tuple[str, ...]
    others: tuple[tuple[str, Any], ...]  # optional numbers and maps: (name, full check)
    packed: tuple[tuple[str, str], ...]  # (name, struct/array code) of the packed arrays
    setters: tuple[tuple[str, Any], ...]  # (name, slot setter) of each wire field
    extras: tuple[tuple[Any, Any], ...]  # (slot setter, default) of the bookkeeping fields, not on the wire


@dataclass(frozen=True, slots=True, kw_only=True)
class _Record:
    """A stream record. Subclasses declare their fields once, as annotated dataclass fields (types from `_KINDS`);
    the checks and the encoding follow from them (`_plan`)."""

    KIND: ClassVar[str] = ""
    _plan: ClassVar[_Plan]

    @classmethod
    def _make_plan(cls) -> None:
        wire, extras = [], []
        for f in fields(cls):
            setter = getattr(cls, f.name).__set__  # the slot's descriptor (a parent's, for an inherited field)
            if f.name.startswith("_"):  # bookkeeping, not on the wire
                extras.append((setter, None if f.default is MISSING else f.default))
                continue
            kind = _KINDS.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
            if kind is None:
                raise TypeError(f"{cls.__name__}.{f.name}: unsupported field type {f.type!r}")
            wire.append((f.name, kind, setter))

        def of(*kinds: str) -> tuple[str, ...]:
            return tuple(name for name, kind, _ in wire if kind in kinds)

        cls._plan = _Plan(
            fields=tuple((name, kind) for name, kind, _ in wire),
            names=frozenset(name for name, _, _ in wire),
            strs=of("str"),
            ints=of("int"),
            floats=of("float"),
            arrays=of("u32[]", "f32[]"),
            others=tuple((name, _CHECKS[kind]) for name, kind, _ in wire if kind in ("int?", "float?", "dict")),
            packed=tuple((name, _PACKED[kind]) for name, kind, _ in wire if kind in _PACKED),
            setters=tuple((name, setter) for name, _, setter in wire),
            extras=tuple(extras),
        )

    @classmethod
    def _build(cls, values: dict[str, Any]) -> Any:
        """The record of `values`, which holds exactly the wire fields, without running `__init__` (a frozen
        dataclass sets each field through `object.__setattr__`, the slowest part of decoding); not validated."""
        record = object.__new__(cls)
        for name, setter in cls._plan.setters:
            setter(record, values[name])
        for setter, default in cls._plan.extras:
            setter(record, default)
        return record

    def validate(self) -> None:
        plan = self._plan
        for name in plan.strs:
            value = getattr(self, name)
            if type(value) is not str or len(value) > MAX_TEXT_CHARS:
                _check_str(name, value)
        for name in plan.ints:
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                _check_int(name, value)
        for name in plan.floats:
            value = getattr(self, name)
            if type(value) is not float or value - value != 0.0:  # inf - inf and nan - nan are nan
                _check_float(name, value)
        for name in plan.arrays:
            value = getattr(self, name)
            if type(value) is not list or len(value) > MAX_TOKENS:
                _check_array(name, value)
        for name, check in plan.others:
            check(name, getattr(self, name))
        if not self.run_id:  # type: ignore[attr-defined]
            raise MessageError("run_id: must not be empty")

    def encode(self) -> bytes:
        self.validate()
        body: dict[str, Any] = {"k": self.KIND, "v": SCHEMA_VERSION}
        for name, _ in self._plan.fields:
            body[name] = getattr(self, name)
        for name, code in self._plan.packed:
            body[name] = _pack_array(body[name], code, name)
        return _pack(self.KIND, body)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def _pack(kind: str, body: dict[str, Any]) -> bytes:
    """msgpack of a record's body, refused over MAX_MESSAGE_BYTES."""
    data = _packb(body)
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"{kind}: encoded size {len(data)} exceeds {MAX_MESSAGE_BYTES} bytes")
    return data


@dataclass(frozen=True, slots=True, kw_only=True)
class _PromptRecord(_Record):
    """The fields of a record about one prompt of one step, declared once for the request and its samples."""

    run_id: str
    step: int
    prompt_id: str
    task: str
    difficulty: str
    ground_truth: str
    num_samples: int  # G, the samples of this prompt
    policy_version: int  # request: the version the learner expects (at least); sample: the one that produced it

    def prompt_fields(self) -> dict[str, Any]:
        """The fields every record about this prompt carries (a request's, passed on to its samples)."""
        return {f.name: getattr(self, f.name) for f in fields(_PromptRecord)}


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutRequest(_PromptRecord):
    """One prompt to sample `num_samples` (G) responses for, published by the learner."""

    KIND: ClassVar[str] = "rollout_request"

    prompt: str  # chat-formatted prompt text, ready for the tokenizer (no further templating)
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


@dataclass(frozen=True)
class PromptSlot:
    """One prompt of one step: what to request, and the item it came from."""

    step: int
    slot: int
    prompt_id: str
    prompt: str
    ground_truth: str
    task: str
    difficulty: str


def build_requests(
    run_id: str,
    step: int,
    slots: Sequence[PromptSlot],
    *,
    num_samples: int,
    policy_version: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int,
) -> list[RolloutRequest]:
    """The rollout requests of one step's prompts: G samples each, with a sampling seed derived from `seed`, the
    step and the slot, so a re-published request samples the same responses."""
    return [
        RolloutRequest(
            run_id=run_id,
            step=step,
            prompt_id=s.prompt_id,
            prompt=s.prompt,
            ground_truth=s.ground_truth,
            task=s.task,
            difficulty=s.difficulty,
            num_samples=num_samples,
            policy_version=policy_version,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=(seed * 1_000_003 + step * 10_007 + s.slot) % (2**31 - 1),
        )
        for s in slots
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class GeneratedSample(_PromptRecord):
    """One sampled response with its per-token logprobs, published by generation."""

    KIND: ClassVar[str] = "generated_sample"

    sample_index: int
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    logprobs: list[float]  # sampling logprob of each response token under `policy_version`
    response_text: str
    finish_reason: str = "stop"
    # The validated bytes this record was decoded from: a scored sample carries them on unchanged (ScoredSample).
    # Not an __init__ argument, so `dataclasses.replace` never carries bytes that no longer match the fields.
    _payload: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def validate(self) -> None:
        _Record.validate(self)
        if self.sample_index >= self.num_samples:
            raise MessageError(f"sample_index: {self.sample_index} is not below num_samples {self.num_samples}")
        if len(self.logprobs) != len(self.response_token_ids):
            raise MessageError(
                f"logprobs: {len(self.logprobs)} values for {len(self.response_token_ids)} response tokens"
            )

    def _sample_values(self) -> dict[str, Any]:
        """This record's generated-sample fields by name (a scored sample's, without its verdict)."""
        return {name: getattr(self, name) for name, _ in GeneratedSample._plan.fields}

    @property
    def key(self) -> tuple[str, int, str, int]:
        """Identity for de-duplication: (run, step, prompt, sample)."""
        return (self.run_id, self.step, self.prompt_id, self.sample_index)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoredSample(GeneratedSample):
    """A generated sample with its verified reward, published by the reward service.

    On the wire it is the generated sample's own payload, unchanged, next to the verdict: `{"k": "scored_sample",
    "v": 1, "sample": <generated_sample bytes>, "reward": r, "reason": s}`. The reward service passes on the bytes
    it decoded and validated (no re-encoding); decoding validates the inner sample again like any other.
    """

    KIND: ClassVar[str] = "scored_sample"

    reward: float
    reason: str  # match | mismatch | no_answer | timeout | too_long | error

    @classmethod
    def from_generated(cls, g: GeneratedSample, reward: float, reason: str) -> ScoredSample:
        """`g` with its verdict. `g`'s fields are taken as they are (a decoded sample was validated, and one built
        here is validated when encoded); reward and reason are checked on `validate`/`encode`."""
        values = g._sample_values()
        values["reward"] = reward
        values["reason"] = reason
        record = cls._build(values)
        object.__setattr__(record, "_payload", g._payload)
        return record

    def validate(self) -> None:
        if self._payload is None:  # built here, not from a decoded sample: check the sample part too
            GeneratedSample.validate(self)
        _check_float("reward", self.reward)
        _check_str("reason", self.reason)

    def encode(self) -> bytes:
        self.validate()
        sample = self._payload
        if sample is None:
            sample = GeneratedSample(**self._sample_values()).encode()
        body = {"k": self.KIND, "v": SCHEMA_VERSION, "sample": sample, "reward": self.reward, "reason": self.reason}
        return _pack(self.KIND, body)


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsAnnouncement(_Record):
    """A new policy version: a safetensors checkpoint on the shared volume."""

    KIND: ClassVar[str] = "weights"

    run_id: str
    version: int
    step: int
    path: str  # folder holding model.safetensors (and config) for this version
    num_bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(_Record):
    """A lifecycle event (run started, step done, service ready, ...)."""

    KIND: ClassVar[str] = "event"

    run_id: str
    kind: str
    step: int = 0
    time: float = field(default_factory=time.time)
    detail: dict[str, Any] = field(default_factory=dict)


RECORDS: dict[str, type[_Record]] = {
    cls.KIND: cls for cls in (RolloutRequest, GeneratedSample, ScoredSample, WeightsAnnouncement, Event)
}
for _cls in RECORDS.values():
    _cls._make_plan()
_SCORED_WIRE = frozenset({"sample", "reward", "reason"})  # a scored sample's wire fields (see its docstring)


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


def _body(data: Any) -> dict[str, Any]:
    if not isinstance(data, bytes):
        raise MessageError(f"payload: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"payload: {len(data)} bytes exceed {MAX_MESSAGE_BYTES}")
    try:
        body = _unpackb(data)
    except Exception as exc:
        raise MessageError(f"payload: not msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict):
        raise MessageError("payload: expected a map")
    return body


def decode(data: bytes, expect: type[_Record] | None = None) -> _Record:
    """Decode and validate one record's payload; raise MessageError with the reason."""
    return _record(_body(data), data, expect)


# A group entry: several records' payloads in one stream entry, {"k": "group", "v": 1, "items": [bytes, ...]}. A
# prompt's G samples travel this way (one XADD, one entry to read and ack instead of G); each item is an ordinary
# record payload, validated as one.
GROUP_KIND = "group"
_GROUP_OVERHEAD = 64  # bytes of a group's map around its items (with room to spare)
_ITEM_OVERHEAD = 5  # msgpack bin header of one item


def encode_group(payloads: Sequence[bytes]) -> bytes:
    """One entry's payload for several encoded records (`_Record.encode()`), in order."""
    if not payloads:
        raise MessageError("group: no records")
    return _pack(GROUP_KIND, {"k": GROUP_KIND, "v": SCHEMA_VERSION, "items": list(payloads)})


def entry_chunks(payloads: Sequence[bytes]) -> list[list[bytes]]:
    """`payloads` cut, in order, into the runs that one entry each carries: all of them, or several runs where one
    group would pass MAX_MESSAGE_BYTES. `entry_payload` packs a run."""
    out: list[list[bytes]] = []
    chunk: list[bytes] = []
    size = _GROUP_OVERHEAD
    for payload in payloads:
        if chunk and size + len(payload) + _ITEM_OVERHEAD > MAX_MESSAGE_BYTES:
            out.append(chunk)
            chunk, size = [], _GROUP_OVERHEAD
        chunk.append(payload)
        size += len(payload) + _ITEM_OVERHEAD
    if chunk:
        out.append(chunk)
    return out


def entry_payload(chunk: Sequence[bytes]) -> bytes:
    """One entry's payload: a lone record as itself, several as a group."""
    return chunk[0] if len(chunk) == 1 else encode_group(chunk)


def decode_entry(data: bytes, expect: type[_Record] | None = None) -> list[_Record]:
    """The records of one stream entry, in order: one record, or every item of a group entry. Any item that fails
    fails the entry (MessageError naming the item)."""
    body = _body(data)
    if body.get("k") != GROUP_KIND:
        return [_record(body, data, expect)]
    if body.get("v") != SCHEMA_VERSION:
        raise MessageError(f"v: unsupported schema version {body.get('v')!r} (this build reads {SCHEMA_VERSION})")
    unknown = body.keys() - {"k", "v", "items"}
    if unknown:
        raise MessageError(f"group: unknown fields {sorted(unknown)}")
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise MessageError("group: items: expected a non-empty list of record payloads")
    records = []
    for n, item in enumerate(items):
        try:
            records.append(decode(item, expect))
        except MessageError as exc:
            raise MessageError(f"group: items[{n}]: {exc}") from None
    return records


def _record(body: dict[str, Any], data: bytes, expect: type[_Record] | None) -> _Record:
    kind = body.pop("k", None)
    version = body.pop("v", None)
    cls = RECORDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(f"kind: unknown record kind {kind!r}")
    if expect is not None and cls is not expect:
        raise MessageError(f"kind: expected {expect.KIND!r}, got {kind!r}")
    if version != SCHEMA_VERSION:
        raise MessageError(f"v: unsupported schema version {version!r} (this build reads {SCHEMA_VERSION})")
    plan = cls._plan
    unknown = body.keys() - (_SCORED_WIRE if cls is ScoredSample else plan.names)
    if unknown:
        raise MessageError(f"{kind}: unknown fields {sorted(unknown)}")
    if cls is ScoredSample:
        return _decode_scored(body)
    for name, code in plan.packed:
        if name in body:
            body[name] = _unpack(body[name], code, name)
    if len(body) == len(plan.names):  # every field present (as encode writes them): no defaults to fill in
        record = cls._build(body)
    else:
        try:
            record = cls(**body)
        except TypeError as exc:
            raise MessageError(f"{kind}: {exc}") from None
    record.validate()
    if cls is GeneratedSample:
        object.__setattr__(record, "_payload", data)
    return record


def _decode_scored(body: dict[str, Any]) -> ScoredSample:
    missing = {"sample", "reward", "reason"} - body.keys()
    if missing:
        raise MessageError(f"scored_sample: missing fields {sorted(missing)}")
    if not isinstance(body["sample"], bytes):
        raise MessageError(f"sample: expected the generated sample's bytes, got {type(body['sample']).__name__}")
    try:
        inner = decode(body["sample"], expect=GeneratedSample)
    except MessageError as exc:
        raise MessageError(f"sample: {exc}") from None
    record = ScoredSample.from_generated(inner, body["reward"], body["reason"])  # type: ignore[arg-type]
    record.validate()
    return record
