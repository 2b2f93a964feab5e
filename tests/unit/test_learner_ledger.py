"""The learner's record of consumed rollouts: in order, whole groups, cut back to the checkpoint on resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from aerplane.learner.ledger import LEDGER_FILE, ConsumedLedger, LedgerError, Sample, read_ledger

G = 4


def _groups(step: int, n: int = 2) -> dict[str, list[Sample]]:
    return {f"q{step}-{k}": [Sample(i, max(0, step - 1)) for i in range(G)] for k in range(n)}


def _record(ledger: ConsumedLedger, step: int) -> None:
    ledger.record(step, _groups(step), samples_per_prompt=G, policy_version=step, update=step > 0)


def test_steps_are_recorded_in_order_and_read_back(tmp_path: Path) -> None:
    ledger = ConsumedLedger.open(tmp_path, None, start_step=0)
    for step in range(3):
        _record(ledger, step)
    ledger.close()
    entries = read_ledger(tmp_path)
    assert [e["step"] for e in entries] == [0, 1, 2]
    assert entries[1] == {
        "step": 1,
        "policy_version": 1,
        "update": True,
        "groups": [
            {"prompt_id": "q1-0", "samples": [0, 1, 2, 3], "policy_versions": [0, 0, 0, 0]},
            {"prompt_id": "q1-1", "samples": [0, 1, 2, 3], "policy_versions": [0, 0, 0, 0]},
        ],
    }


def test_a_step_twice_a_skipped_step_or_a_broken_group_is_refused(tmp_path: Path) -> None:
    ledger = ConsumedLedger.open(tmp_path, None, start_step=0)
    _record(ledger, 0)
    with pytest.raises(LedgerError, match="step 0 would be trained again"):
        _record(ledger, 0)
    with pytest.raises(LedgerError, match="step 2 would be trained before step 1"):
        _record(ledger, 2)
    partial = {"q": [Sample(0, 0), Sample(2, 0)]}
    with pytest.raises(LedgerError, match="not one whole group of 4"):
        ledger.record(1, partial, samples_per_prompt=G, policy_version=1, update=True)
    doubled = {"q": [Sample(0, 0), Sample(0, 0), Sample(1, 0), Sample(2, 0)]}
    with pytest.raises(LedgerError, match="not one whole group"):
        ledger.record(1, doubled, samples_per_prompt=G, policy_version=1, update=True)
    assert [e["step"] for e in read_ledger(tmp_path)] == [0]


def test_resume_cuts_the_record_back_to_the_checkpoint(tmp_path: Path) -> None:
    ledger = ConsumedLedger.open(tmp_path, None, start_step=0)
    for step in range(2):
        _record(ledger, step)
    mark = ledger.mark()  # the checkpoint after two steps
    for step in range(2, 4):  # trained after the checkpoint, then the learner dies mid-append
        _record(ledger, step)
    ledger.close()
    with open(tmp_path / LEDGER_FILE, "ab") as f:
        f.write(b'{"step": 4, "groups": [')

    resumed = ConsumedLedger.open(tmp_path, mark, start_step=2)
    assert resumed.last_prompt_ids == ["q1-0", "q1-1"] and resumed.next_step == 2
    for step in range(2, 5):
        _record(resumed, step)
    resumed.close()
    entries = read_ledger(tmp_path)
    assert [e["step"] for e in entries] == [0, 1, 2, 3, 4]
    keys = [(e["step"], g["prompt_id"]) for e in entries for g in e["groups"]]
    assert len(keys) == len(set(keys)) == 10


def test_a_record_that_does_not_match_its_checkpoint_is_refused(tmp_path: Path) -> None:
    ledger = ConsumedLedger.open(tmp_path, None, start_step=0)
    _record(ledger, 0)
    _record(ledger, 1)
    mark = ledger.mark()
    ledger.close()
    with pytest.raises(LedgerError, match="ends before step 2, not 3"):
        ConsumedLedger.open(tmp_path, mark, start_step=3)
    path = tmp_path / LEDGER_FILE
    path.write_bytes(path.read_bytes().replace(b"q0-0", b"q0-9"))
    with pytest.raises(LedgerError, match="does not hold the record the checkpoint"):
        ConsumedLedger.open(tmp_path, mark, start_step=2)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(LedgerError, match="does not hold the record"):
        ConsumedLedger.open(tmp_path, mark, start_step=2)


def test_checkpoints_without_a_mark_keep_the_steps_before_the_resumed_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = ConsumedLedger.open(tmp_path, None, start_step=0)
    for step in range(3):
        _record(ledger, step)
    ledger.close()
    resumed = ConsumedLedger.open(tmp_path, None, start_step=2)
    _record(resumed, 2)
    resumed.close()
    assert [e["step"] for e in read_ledger(tmp_path)] == [0, 1, 2]
    (tmp_path / LEDGER_FILE).unlink()  # a run from before the record existed: it starts at the checkpoint
    older = ConsumedLedger.open(tmp_path, None, start_step=5)
    _record(older, 5)
    older.close()
    assert "expected 0–4; the checkpoint predates the record" in caplog.text
    assert [e["step"] for e in read_ledger(tmp_path)] == [5]
    fresh = ConsumedLedger.open(tmp_path, None, start_step=0)  # a new run in the same folder starts empty
    fresh.close()
    assert read_ledger(tmp_path) == []
