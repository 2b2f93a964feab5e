"""How the policy is spread over the ranks (DDP or FSDP2) and in which precision it computes (float32 or bf16 mixed).

Precision, `model.dtype`:

- `float32`: parameters, gradients, AdamW state and compute in float32.
- `bfloat16`: mixed precision. Master parameters, gradients and AdamW state stay float32, and forward and backward
  run in bf16. Under DDP (and in a single process) the policy's forward runs under `torch.autocast(bf16)`, on CUDA
  and on CPU alike. Under FSDP2, `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=float32)` all-gathers bf16
  copies of the float32 shards for compute and reduces gradients in float32. Either way the LM head emits bf16
  logits, and the chunked kernel (`aerplane.core.entropy`, called outside autocast) computes entropy and log-probs
  from them in float32. Published weights are cast to bf16, the serving dtype (`serving_state_dict`).
  The parameters themselves are never bf16. AdamW's step at lr 1e-6 is smaller than half a bf16 ulp of almost
  every weight (relative resolution 2^-8), so plain AdamW on bf16 parameters rounds ~98 % of the updates away
  (`tests/unit/test_learner_precision.py` measures it).
- `float16` is refused in the settings: it would need loss scaling.

Parallelism, `model.parallel`:

- `ddp`: every rank holds the whole model, its gradients and the AdamW state (16 B/parameter in float32).
  Gradients are all-reduced in buckets, once per mini-batch: the micro-batches before the last one run under
  `no_sync`.
- `fsdp`: FSDP2 `fully_shard` on every decoder layer (the classes in the model's `_no_split_modules`) and on the
  root (embeddings, final norm, LM head, which keeps tied embeddings in one unit). Each rank holds 1/N of the
  parameters, gradients and AdamW state. A layer is all-gathered just before its forward and backward and freed
  after. Gradients are reduce-scattered after every micro-batch, with no `no_sync`: accumulating unsharded
  gradients would bring back the full-size gradient memory that FSDP exists to avoid. FSDP2 also averages over
  ranks, so the loss scaling in `step.py` is the same.
  Every forward is a collective, so every rank must run the same number of passes (`step.py` pads a rank with
  fewer micro-batches with zero-weighted repeats).
  Checkpoints are sharded (`checkpoint.save_sharded`, torch.distributed.checkpoint). Weights for generation are
  gathered one tensor at a time to rank 0 (`serving_state_dict`) and written as one safetensors file, the form
  vLLM's `reload_weights` reads.

Gradient checkpointing (HF's non-reentrant one) works under both modes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from aerplane.learner.distributed import Dist
from aerplane.learner.policy import DTYPES, ResponseLogits

PARALLEL_MODES = ("ddp", "fsdp")
MASTER_DTYPE = "float32"  # what the trainable parameters are stored in, whatever `model.dtype` says


def compute_dtype(dtype: str) -> torch.dtype | None:
    """The lower-precision compute dtype of `model.dtype`, or None for float32 throughout."""
    if dtype == "float16":
        raise ValueError("model.dtype: float16 training needs loss scaling, which the learner does not do")
    return None if dtype == "float32" else DTYPES[dtype]


def wrap_policy(lm: nn.Module, ctx: Dist, *, parallel: str, dtype: str, trainable: bool = True) -> nn.Module:
    """`lm` (float32 parameters) as the module `train_step` calls: a ResponseLogits, under DDP or FSDP2.

    `trainable=False` (the frozen KL reference): never DDP (it has no gradients to reduce). Under FSDP it is
    sharded like the policy, so that its memory is split across ranks too.
    """
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"model.parallel: expected one of {PARALLEL_MODES}, got {parallel!r}")
    low = compute_dtype(dtype)
    if parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = ResponseLogits(lm)
        mp = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32) if low else MixedPrecisionPolicy()
        for block in decoder_blocks(lm):
            fully_shard(block, mp_policy=mp)
        fully_shard(policy, mp_policy=mp)
        return policy
    policy = ResponseLogits(lm, autocast=low)
    if trainable and ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(policy, device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None)
    return policy


def decoder_blocks(lm: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a Hugging Face model: the units FSDP shards one by one."""
    names = set(getattr(lm, "_no_split_modules", None) or ())
    blocks = [m for m in lm.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(
            f"model.parallel: fsdp cannot find the decoder blocks of {type(lm).__name__} "
            f"(no module of the classes {sorted(names) or '_no_split_modules'})"
        )
    return blocks


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def no_sync(module: nn.Module, skip: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's `no_sync` for a micro-batch that is not the last of its mini-batch (`skip`); a no-op otherwise."""
    from torch.nn.parallel import DistributedDataParallel

    if skip and isinstance(module, DistributedDataParallel):
        return module.no_sync()
    return contextlib.nullcontext()


def local_float(value: torch.Tensor) -> float:
    """A scalar that may be a replicated DTensor (FSDP's gradient norm) as a Python float."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        value = value.full_tensor()
    return float(value)


def serving_state_dict(lm: nn.Module, dtype: str, ctx: Dist) -> dict[str, torch.Tensor] | None:
    """The full parameters of `lm` in the serving dtype `dtype`, on CPU, on rank 0 (None on the other ranks).

    Under FSDP a collective: every rank must call it, and the parameters are gathered one tensor at a time (rank 0
    never holds more than one float32 full tensor on the device). Tied parameters (embeddings = LM head) come back
    as one tensor under both names, so `save_pretrained` writes it once. Without FSDP only rank 0 needs to call it.
    """
    from torch.distributed.tensor import DTensor

    target = DTYPES[dtype]
    out: dict[str, torch.Tensor] = {}
    first: dict[int, str] = {}
    with torch.no_grad():
        for name, value in lm.state_dict(keep_vars=True).items():
            if id(value) in first:
                if ctx.is_main:
                    out[name] = out[first[id(value)]]
                continue
            first[id(value)] = name
            full = value.full_tensor() if isinstance(value, DTensor) else value.detach()
            if ctx.is_main:
                out[name] = full.to(device="cpu", dtype=target if full.is_floating_point() else full.dtype)
            del full
    return out if ctx.is_main else None
