"""Reading back what the experiment trackers wrote, with each library's own reader (tests of common.trackers)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from aerplane.common.trackers import read_state

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when asked to


def tensorboard_scalars(logdir: str, key: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(key)} if key in acc.Tags()["scalars"] else {}


def tensorboard_texts(logdir: str, key: str) -> dict[int, str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    return {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(key)}


def wandb_records(run_dir: Path, wandb_id: str) -> list[Any]:
    """Every record of the W&B run's offline files (the learner's and the launcher's), as wandb's own protobuf
    `Record` messages. wandb 0.31 dropped its Python reader of these files (the Go core writes them), so the
    LevelDB-log framing they use is read here: a 7-byte file header (`:W&B`, magic, version), then 32 KiB blocks of
    chunks, each `crc32c(4) length(2) type(1)` + data, type FULL=1 or FIRST=2, MIDDLE=3, LAST=4."""
    from wandb.proto import wandb_internal_pb2

    # offline-run-<second>-<id>, and -<id>-1 for a second writer (the launcher's evaluation) within the same second
    files = sorted(run_dir.glob(f"wandb/offline-run-*-{wandb_id}*/run-{wandb_id}.wandb"))
    assert files, f"no offline W&B run {wandb_id} under {run_dir / 'wandb'}"
    records = []
    for path in files:
        for data in _leveldb_log(path.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            records.append(record)
    return records


def _leveldb_log(data: bytes, block: int = 32768) -> list[bytes]:
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, out, parts = 7, [], b""
    while pos + 7 <= len(data):
        space = block - pos % block
        if space < 7:  # a block's tail too short for a chunk header is padding
            pos += space
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += space
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            parts = chunk
        elif kind == 3:
            parts += chunk
        elif kind == 4:
            out.append(parts + chunk)
    return out


def wandb_history(records: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
    return rows


def tracker_reads(run_dir: Path, key: str) -> dict[str, dict[int, float]]:
    """`key` per step as each tracker's reader sees it (the trackers the run recorded in trackers.json)."""
    from mlflow.tracking import MlflowClient

    state = read_state(run_dir)["trackers"]
    out = {"tensorboard": tensorboard_scalars(state["tensorboard"]["logdir"], key)}
    history = wandb_history(wandb_records(Path(state["wandb"]["dir"]), state["wandb"]["id"]))
    out["wandb"] = {int(r["_step"]): r[key] for r in history if key in r}
    client = MlflowClient(tracking_uri=state["mlflow"]["tracking_uri"])
    out["mlflow"] = {m.step: m.value for m in client.get_metric_history(state["mlflow"]["run_id"], key)}
    return out
