"""Checkpoints (to resume training) and published weights (for generation), both written atomically.

Run directory::

    <run dir>/
      metrics.jsonl                   one JSON line per step (rank 0)
      consumed.jsonl                  the prompt groups each step trained on (rank 0; `learner.ledger`)
      learner_settings.json           the resolved settings of the latest start
      checkpoints/step_000004/        state after 4 completed steps (the next step to run is 4)
        trainer.pt                    scheduler, step, run id, data position, coefficient state, parallel mode,
                                      where consumed.jsonl stood (offset and SHA-256: resuming cuts it back there);
                                      under DDP also the model and optimizer (gathered: every rank holds them whole)
        shards/                       under FSDP only: model and optimizer, sharded (torch.distributed.checkpoint)
        rng_rank0.pt rng_rank1.pt …   each rank's RNG states (torch, CUDA, Python, NumPy)
        meta.json                     step, run id, world size, parallel mode, time — human-readable
      weights/v4/                     policy version 4 (= after 4 optimizer steps), what vLLM reloads from
        model.safetensors config.json generation_config.json     (in the serving dtype: bf16 under bf16 mixed)

A folder is written under a temporary name (`.step_000004.tmp`, `.v4.tmp`) and renamed when complete, so a crash
never leaves a half-written checkpoint or weight version that a reader could pick up; only names without the dot
prefix count. Checkpoints need a folder every rank can write (a shared volume on several nodes): each rank adds its
own RNG file (and, under FSDP, its shards) to the temporary folder before rank 0 renames it.

FSDP checkpoints stay sharded: no rank ever holds the whole model and AdamW state (16 B/parameter: 112 GB for a 7B
policy), each rank writes and reads only its own part, and torch.distributed.checkpoint re-shards on load, so a run
may resume on a different number of ranks. The state-dict keys are the Hugging Face parameter names.
`load_model_state` reads either kind back as one full state dict (for tests and tools, no process group needed).
A checkpoint resumes only under the parallel mode that wrote it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from aerplane.common.run_layout import latest_checkpoint, list_checkpoints, list_versions, step_dir_name  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

SHARDS = "shards"  # the sharded (FSDP) model + optimizer state inside a checkpoint folder


def temp_dir(root: Path, step: int) -> Path:
    return root / f".{step_dir_name(step)}.tmp"


def rng_state() -> dict[str, Any]:
    import numpy as np

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype("int64")),
            *map(int, np_state[2:4]),
            float(np_state[4]),
        ],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_rank_rng(tmp: Path, rank: int) -> None:
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")


def begin(root: Path, step: int) -> Path:
    """Rank 0: a fresh temporary folder for the checkpoint of `step`."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(root, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit(root: Path, step: int, trainer_state: dict[str, Any], meta: dict[str, Any], keep: int) -> Path:
    """Rank 0: write the trainer state into the temporary folder, rename it into place, drop old checkpoints."""
    tmp = temp_dir(root, step)
    torch.save(trainer_state, tmp / "trainer.pt")
    (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "time": time.time()}, indent=2) + "\n")
    final = root / step_dir_name(step)
    _swap_in(tmp, final)  # a re-run of the same step after a resume replaces the old folder
    _prune(list_checkpoints(root), keep)
    return final


def load_trainer_state(path: Path) -> dict[str, Any]:
    return torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)


def save_sharded(tmp: Path, lm: Any, optimizer: Any) -> None:
    """Every rank (a collective): its shards of the model's and the optimizer's state into `tmp/shards/`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(lm, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp / SHARDS)


def load_sharded(path: Path, lm: Any, optimizer: Any) -> None:
    """Every rank (a collective): this rank's shards of the checkpoint at `path` into `lm` and `optimizer`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(lm, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=path / SHARDS)
    set_state_dict(lm, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_model_state(path: Path) -> dict[str, torch.Tensor]:
    """The full model state dict of the checkpoint at `path`, DDP (gathered) or FSDP (sharded) alike."""
    state = load_trainer_state(path)
    if "model" in state:
        return state["model"]
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory(prefix="aerplane-ckpt-") as tmp:
        dcp_to_torch_save(path / SHARDS, Path(tmp) / "full.pt")
        return torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)["model"]


def load_rank_rng(path: Path, rank: int) -> dict[str, Any] | None:
    f = path / f"rng_rank{rank}.pt"
    return torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None


# --- weights for generation ----------------------------------------------------------------------------------------


def publish_weights(
    model: Any, root: Path, version: int, keep: int, *, state_dict: dict[str, torch.Tensor] | None = None
) -> tuple[Path, int]:
    """Save `model` (a Hugging Face model) as `root/v<version>/` (safetensors + config); keep the newest `keep`.

    `state_dict`: the tensors to write instead of the model's own (the gathered, serving-dtype parameters of
    `learner.parallel.serving_state_dict`); config.json then records their dtype. Returns the folder and the size
    of its weight files in bytes.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"v{version}"
    tmp = root / f".v{version}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size="1000GB", state_dict=state_dict)
    if state_dict:
        _record_dtype(tmp / "config.json", next(t.dtype for t in state_dict.values() if t.is_floating_point()))
    num_bytes = sum(f.stat().st_size for f in tmp.glob("*.safetensors"))
    _swap_in(tmp, final)
    _prune(list_versions(root), keep)
    return final, num_bytes


def _record_dtype(config: Path, dtype: torch.dtype) -> None:
    """Set config.json's dtype to the one the weights were written in (`save_pretrained` records the model's)."""
    data = json.loads(config.read_text())
    name = str(dtype).removeprefix("torch.")
    data["dtype"] = name
    if "torch_dtype" in data:
        data["torch_dtype"] = name
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _swap_in(tmp: Path, final: Path) -> None:
    """Make the complete folder `tmp` appear as `final` in one rename (replacing an older `final`), durably."""
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(final.parent)


def _prune(found: list[tuple[int, Path]], keep: int) -> None:
    """Delete all but the newest `keep` of `found` (oldest first)."""
    for _, old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
