"""The learner's record of consumed rollouts: which prompt groups each step trained on, kept with the checkpoint.

`<run dir>/consumed.jsonl` holds one JSON line per trained step, appended and fsynced before that step's
checkpoint is written:

    {"step": 4, "policy_version": 4, "update": true,
     "groups": [{"prompt_id": "gsm-17", "samples": [0, 1, 2, 3], "policy_versions": [3, 3, 3, 3]}, ...]}

A checkpoint stores how far the file went (`LedgerMark`: the next step, the byte offset and a SHA-256 of those
bytes). Resuming from it checks the digest and cuts the file back to that offset, so the record always describes
the parameters the learner holds: steps that a learner trained after its last checkpoint and then lost by dying are
gone from the parameters and from the record alike, and are trained — and recorded — again. Appending refuses a
step out of order (a step trained twice or skipped) and a group that is repeated or not whole, so a restarted
learner can neither re-train nor skip a group without failing loudly. `read_ledger(run_dir)` reads the record back
(tests, tools): every group of every step, each exactly once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LEDGER_FILE = "consumed.jsonl"


class LedgerError(RuntimeError):
    """The record and the training disagree (a step out of order, a broken group, a record that does not match
    its checkpoint). Training stops rather than train a group twice or skip one."""


@dataclass(frozen=True)
class LedgerMark:
    """How far the record went when a checkpoint was written."""

    next_step: int
    offset: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerMark:
        return cls(next_step=int(data["next_step"]), offset=int(data["offset"]), sha256=str(data["sha256"]))


@dataclass(frozen=True)
class Sample:
    """What the record keeps of one consumed sample."""

    index: int
    policy_version: int


class ConsumedLedger:
    """Rank 0's append-only record of consumed prompt groups, step by step."""

    def __init__(self, path: Path, *, kept: bytes, next_step: int, last_prompt_ids: list[str] | None) -> None:
        """Continue the record at `path`, whose content must already be `kept` (see `open`)."""
        self.path = path
        self.next_step = next_step
        self.last_prompt_ids = last_prompt_ids  # the groups of step next_step − 1 (to check the data on resume)
        self._digest = hashlib.sha256(kept)
        self._offset = len(kept)
        self._file = open(path, "ab")  # closed in close()

    @classmethod
    def open(cls, run_dir: Path, mark: Mapping[str, Any] | None, *, start_step: int) -> ConsumedLedger:
        """The record of a run that continues at `start_step`, cut back to the checkpoint's `mark` (None: a run
        without a checkpoint, or a checkpoint written before the record existed: the lines of steps below
        `start_step` are kept as they are, and a record that lacks some of them only draws a warning)."""
        path = run_dir / LEDGER_FILE
        data = path.read_bytes() if path.exists() else b""
        if mark is not None:
            m = LedgerMark.from_dict(mark)
            if m.next_step != start_step:
                raise LedgerError(f"{path}: the checkpoint's record ends before step {m.next_step}, not {start_step}")
            if len(data) < m.offset or hashlib.sha256(data[: m.offset]).hexdigest() != m.sha256:
                raise LedgerError(
                    f"{path} does not hold the record the checkpoint of step {start_step} was written with (changed "
                    "or cut short): the groups trained so far are unknown; restore the file or start a new run"
                )
            kept = data[: m.offset]
        else:
            lines = data.splitlines(keepends=True)
            kept = b"".join(line.rstrip(b"\n") + b"\n" for line in lines if 0 <= _step_of(line) < start_step)
        entries = [json.loads(line) for line in kept.splitlines()]
        steps = [e["step"] for e in entries]
        if steps != list(range(start_step)):
            problem = f"{path}: the record holds steps {_ranges(steps)}, expected 0–{start_step - 1}"
            if mark is not None:
                raise LedgerError(problem)
            log.warning("%s; the checkpoint predates the record, so it continues from step %d", problem, start_step)
        if len(kept) < len(data):
            dropped = sorted({s for s in map(_step_of, data[len(kept) :].splitlines()) if s >= 0})
            log.info("consumed-rollout record: dropped steps %s (trained after the checkpoint, lost)", _ranges(dropped))
        _cut_to(path, data, kept)
        last = [g["prompt_id"] for g in entries[-1]["groups"]] if entries else None
        return cls(path, kept=kept, next_step=start_step, last_prompt_ids=last)

    def record(
        self,
        step: int,
        groups: Mapping[str, Sequence[Sample]],
        *,
        samples_per_prompt: int,
        policy_version: int,
        update: bool,
    ) -> None:
        """Append step `step`'s consumed groups (prompt id → its samples) and make them durable."""
        if step != self.next_step:
            what = "again" if step < self.next_step else f"before step {self.next_step}"
            raise LedgerError(f"step {step} would be trained {what}: the record expects step {self.next_step}")
        out = []
        for pid, samples in groups.items():
            indices = [s.index for s in samples]
            if sorted(indices) != list(range(samples_per_prompt)):
                raise LedgerError(
                    f"step {step} prompt {pid!r}: samples {indices} are not one whole group of {samples_per_prompt}"
                )
            out.append({"prompt_id": pid, "samples": indices, "policy_versions": [s.policy_version for s in samples]})
        entry = {"step": step, "policy_version": policy_version, "update": update, "groups": out}
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._digest.update(line)
        self._offset += len(line)
        self.next_step = step + 1
        self.last_prompt_ids = list(groups)

    def mark(self) -> dict[str, Any]:
        """What a checkpoint stores to find this point of the record again."""
        return LedgerMark(self.next_step, self._offset, self._digest.hexdigest()).to_dict()

    def close(self) -> None:
        self._file.close()


def read_ledger(run_dir: Path) -> list[dict[str, Any]]:
    """The record's entries, oldest first (a line cut by a crash at the end is left out)."""
    path = run_dir / LEDGER_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _cut_to(path: Path, data: bytes, kept: bytes) -> None:
    """Make the file hold exactly `kept`, durably: cut it when `kept` is its beginning, else replace it whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data.startswith(kept) and path.exists():
        with open(path, "r+b") as f:
            f.truncate(len(kept))
            os.fsync(f.fileno())
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(kept)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _step_of(line: bytes) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1  # a line cut by a crash


def _ranges(steps: list[int]) -> str:
    if not steps:
        return "none"
    return ", ".join(str(s) for s in steps) if len(steps) <= 8 else f"{steps[0]}…{steps[-1]} ({len(steps)} steps)"
