"""What every rank trains: the policy (and the frozen reference), the optimizer and the learning-rate schedule.

    state = build_trainable(model_path, settings.model, settings.optim, ctx, total_updates=..., reference=False)

The master weights are float32; `learner.parallel.wrap_policy` wraps them for DDP or FSDP2 and bf16 compute. The
optimizer is built after sharding, so under FSDP its parameters are the local shards. `serving_weights` gathers the
policy in the serving dtype for `aerplane.learner.driver.Driver.publish_weights`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from aerplane.learner.distributed import Dist
from aerplane.learner.settings import ModelSettings, OptimSettings


@dataclass
class Trainable:
    """The modules and optimizer state of one rank. `lm` is the bare model (checkpoints, weights); `policy` is it
    wrapped for training; `reference` is the frozen copy the KL term needs (None without one)."""

    lm: torch.nn.Module
    policy: torch.nn.Module
    reference: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch.optim.lr_scheduler.LambdaLR


def build_trainable(
    model_path: str,
    model: ModelSettings,
    optim: OptimSettings,
    ctx: Dist,
    *,
    total_updates: int,
    reference: bool,
) -> Trainable:
    """Load the policy (and the reference when `reference`), wrap it, and build the optimizer and its schedule."""
    from aerplane.learner.parallel import MASTER_DTYPE, wrap_policy
    from aerplane.learner.policy import load_policy

    lm = load_policy(model_path, MASTER_DTYPE, ctx.device, gradient_checkpointing=model.gradient_checkpointing)
    policy = wrap_policy(lm, ctx, parallel=model.parallel, dtype=model.dtype)
    ref_policy = None
    if reference:
        ref_lm = load_policy(model_path, MASTER_DTYPE, ctx.device).requires_grad_(False)
        ref_policy = wrap_policy(ref_lm, ctx, parallel=model.parallel, dtype=model.dtype, trainable=False)
    optimizer = build_optimizer(lm, optim)  # after sharding: FSDP's parameters are the local shards
    return Trainable(lm, policy, ref_policy, optimizer, build_scheduler(optimizer, optim, total_updates))


def build_optimizer(lm: torch.nn.Module, optim: OptimSettings) -> torch.optim.Optimizer:
    params = [p for p in lm.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)


def lr_factor(update: int, *, schedule: str, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer update `update` (0-based)."""
    if warmup and update < warmup:
        return (update + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(total - warmup, 1)
    progress = min(max(update - warmup, 0) / span, 1.0)
    if schedule == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    else:  # linear
        shape = 1.0 - progress
    return min_ratio + (1 - min_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimSettings, total_updates: int) -> Any:
    """The warm-up and decay of `optim.schedule` over `total_updates` optimizer updates (steps × mini-batches)."""
    o = optim
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda u: lr_factor(
            u, schedule=o.schedule, warmup=o.warmup_steps, total=total_updates, min_ratio=o.min_lr_ratio
        ),
    )


def serving_weights(lm: torch.nn.Module, model: ModelSettings, ctx: Dist) -> dict[str, Any] | None:
    """Rank 0: the policy's parameters in the serving dtype (`model.dtype`), to publish. Under FSDP every rank must
    call this (the parameters are gathered); under DDP the other ranks get None at no cost."""
    if model.parallel != "fsdp" and not ctx.is_main:
        return None
    from aerplane.learner.parallel import serving_state_dict

    return serving_state_dict(lm, model.dtype, ctx)
