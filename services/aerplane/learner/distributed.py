"""Process-group plumbing for the learner: join, share small objects from rank 0, sum statistics, leave cleanly.

Works under torchrun (RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set) and as a plain single process (a
one-member group on a free loopback port). gloo on CPU, NCCL on CUDA.

Leaving: on CPU with gloo, worker processes sometimes abort in interpreter teardown after the work is done
(DESIGN §2, Learner). `finish` therefore ends with a barrier, destroys the group, flushes the streams and calls
`os._exit(code)`, so a successful run exits 0 every time.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device_kind: str = "auto", timeout_s: float = 1800.0) -> Dist:
    """Join (or create) the default process group and pick this rank's device.

    Under torchrun the rendezvous comes from its environment. A single process without torchrun gets a one-member
    group on a free loopback port, passed to `init_process_group` directly: nothing is written into `os.environ`,
    so a child process this one starts (bench/learner.py's memory probe) cannot inherit a rendezvous that is
    already taken."""
    single = "RANK" not in os.environ
    rank = 0 if single else int(os.environ["RANK"])
    world = 1 if single else int(os.environ["WORLD_SIZE"])
    local = 0 if single else int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_kind == "cuda" or (device_kind == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda requested but torch sees no CUDA device")
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        if single:
            from aerplane.common.process import free_port

            dist.init_process_group(
                backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, timeout=timeout
            )
        else:
            dist.init_process_group(backend, timeout=timeout)
    return Dist(rank=rank, world_size=world, local_rank=local, device=device, backend=backend)


def broadcast(obj: Any, ctx: Dist) -> Any:
    """Rank 0's `obj` on every rank (pickled; for small things: a step's batch, α, a stop flag)."""
    if ctx.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.backend == "nccl" else None)
    return box[0]


def all_reduce_sum(values: list[float], ctx: Dist) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    if ctx.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(ctx: Dist) -> None:
    if ctx.world_size > 1:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.local_rank])
        else:
            dist.barrier()


def finish(code: int, *, clean: bool = True) -> None:
    """Leave the group and end the process with `code` (never returns).

    `clean=False` skips the barrier (another rank may be gone already, e.g. after an error)."""
    try:
        if dist.is_initialized():
            if clean:
                dist.barrier()
            dist.destroy_process_group()
    except Exception as exc:  # leaving must not turn a success into a crash
        log.warning("process group teardown: %s", exc)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
