"""One training step on one rank: micro-batches, the loss of DESIGN §1, gradient accumulation, optimizer update.

    L = token_mean[pg] − α · token_mean[λ·H] (+ kl_coef · token_mean[k3 KL to the reference])

The token mean runs over the whole global batch — every rank, every micro-batch — so each micro-batch adds its
*sums* divided by the global response-token count of its mini-batch. DDP averages gradients over ranks, so the
loss is multiplied by the world size to turn that average back into the global sum. The loss is configured by the
learner's own `LossSettings` (`loss.policy` is the policy-loss mode with its hyperparameters) and the sampling
temperature. The per-token maths is `aerplane.core.losses` (token means, k3) and `aerplane.core.policy_losses` (the
ratio, clipping, Clip-Cov / KL-Cov); entropy and logprobs are `aerplane.core.entropy`.

Old log-probs (the ratio's denominator): with one optimizer update per step the learner's own forward *is* the
old policy, so its detached logprobs are used and no extra pass is needed (the ratio is 1, clipping inactive — the
on-policy case); with several mini-batches a no-grad pass before the first update recomputes them; with
`old_logprobs = "sampler"` the generation engine's logprobs are used (importance ratio against the policy version
that actually sampled, which corrects the bounded staleness).

Under FSDP every forward and backward is a collective, so every rank must make the same number of passes. A rank
with fewer micro-batches in a mini-batch than another (groups of unequal size) repeats its last one with the loss
multiplied by 0 and its statistics left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from aerplane.core import losses
from aerplane.learner.batching import (
    MicroBatch,
    TrainSample,
    collate,
    global_token_counts,
    micro_batches,
    rank_mini_batches,
)
from aerplane.learner.distributed import Dist, all_reduce_sum
from aerplane.learner.parallel import is_sharded, local_float, no_sync
from aerplane.learner.policy import token_stats
from aerplane.learner.settings import LossSettings


@dataclass
class StepResult:
    """Statistics of one step over all ranks (identical on every rank)."""

    mean_entropy: float
    num_tokens: int
    entropy_by_difficulty: dict[str, float]
    pg_loss: float
    entropy_loss: float
    kl: float
    sampler_kl: float
    clip_fraction: float
    grad_norm: float | None
    lr: float | None
    updates: int
    tokens_total: int  # prompt + response tokens of the batch (all ranks)
    skipped_updates: int = 0  # mini-batch updates skipped for a zero gradient (no learning signal)


_SUMS = ("entropy", "weighted_entropy", "pg", "kl", "sampler_kl", "clipped", "tokens")


def micro_batch_loss(
    entropy: torch.Tensor,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    mb: MicroBatch,
    loss: LossSettings,
    *,
    alpha: float,
    denominator: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the global token-mean loss, and its statistics as *sums* (for all-reduce)."""
    total, stats = losses.compute_loss(
        logprobs,
        old_logprobs,
        mb.advantages,
        entropy,
        alpha=alpha,
        prompt_weights=mb.weights,
        eps_low=loss.eps_low,
        eps_high=loss.eps_high,
        policy=loss.policy,
        ref_logprobs=ref_logprobs,
        kl_coef=loss.kl_coef,
        num_tokens=denominator,
    )
    sums = {
        "pg": stats["pg_loss"] * denominator,
        "weighted_entropy": stats["weighted_entropy"] * denominator,
        "entropy": stats["mean_entropy"] * denominator,
        "clipped": stats["clip_fraction"] * denominator,
        "kl": stats["kl"] * denominator,
        "sampler_kl": float(losses.k3_kl(mb.sampler_logprobs, logprobs.detach()).sum()),  # KL(sampler ‖ learner)
        "tokens": float(entropy.numel()),
    }
    return total, sums


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    samples: list[TrainSample],
    *,
    num_prompts: int,
    ctx: Dist,
    alpha: float,
    loss: LossSettings,
    temperature: float,
    micro_batch_size: int,
    mini_batches: int = 1,
    pad_id: int = 0,
    grad_clip: float = 0.0,
    ref_model: torch.nn.Module | None = None,
    update: bool = True,
) -> StepResult:
    """Train on this rank's share of `samples` (the whole step's batch, identical on every rank) with the learner's
    `loss` settings and the sampling `temperature`. `update=False` only measures (no backward, no optimizer step):
    the anchoring steps before any update.
    """
    parts = rank_mini_batches(samples, num_prompts, ctx.rank, ctx.world_size, mini_batches)
    denominators = global_token_counts(samples, num_prompts, mini_batches)
    buckets = sorted({s.difficulty for s in samples})
    collated, real = _collate(model, parts, samples, num_prompts, ctx, mini_batches, micro_batch_size, pad_id)

    recomputed = _old_logprobs(model, collated, loss, temperature) if update and mini_batches > 1 else {}
    totals = dict.fromkeys(_SUMS, 0.0)
    by_bucket = {b: [0.0, 0.0] for b in buckets}  # entropy sum, tokens
    grad_norms: list[float] = []
    skipped = 0
    lr_used: float | None = None
    for m, mbs in enumerate(collated):
        denom = max(denominators[m], 1)
        for i, mb in enumerate(mbs):
            last = i == len(mbs) - 1
            padding = i >= real[m]
            grad = torch.enable_grad() if update else torch.no_grad()
            with no_sync(model, skip=update and not last), grad:
                entropy, logprobs = token_stats(model, mb, temperature=temperature, chunk_size=loss.entropy_chunk_size)
                if loss.old_logprobs == "sampler":
                    old = mb.sampler_logprobs
                else:
                    old = recomputed.get((m, i), logprobs.detach())
                ref = None
                if ref_model is not None:
                    with torch.no_grad():
                        ref = token_stats(ref_model, mb, temperature=temperature, chunk_size=loss.entropy_chunk_size)[1]
                share, sums = micro_batch_loss(entropy, logprobs, old, ref, mb, loss, alpha=alpha, denominator=denom)
                if update:
                    (share * (0 if padding else ctx.world_size)).backward()
            if padding:
                continue
            for key in _SUMS:
                totals[key] += sums[key]
            ent = entropy.detach()
            for b, sample in enumerate(mb.samples):
                sel = mb.sample_of_token == b
                by_bucket[sample.difficulty][0] += float(ent[sel].sum())
                by_bucket[sample.difficulty][1] += float(sel.sum())
        if update and optimizer is not None:
            norm, lr_used, applied = _optimizer_step(model, optimizer, scheduler, grad_clip)
            grad_norms.append(norm)
            skipped += 0 if applied else 1

    # --- all ranks' statistics -------------------------------------------------------------------------------------
    local = [totals[k] for k in _SUMS] + [x for b in buckets for x in by_bucket[b]]
    local.append(float(sum(s.length for part in parts for s in part)))
    summed = all_reduce_sum(local, ctx)
    updates = {
        "grad_norm": max(grad_norms) if grad_norms else None,
        "lr": lr_used,
        "updates": len(grad_norms),
        "skipped_updates": skipped,
    }
    return _step_result(summed, buckets, alpha, updates)


def _step_result(summed: list[float], buckets: list[str], alpha: float, updates: dict[str, Any]) -> StepResult:
    """The step's figures from the all-reduced sums (`_SUMS`, then entropy and tokens per bucket, then the tokens of
    every sample), as token means over the whole global batch."""
    g = dict(zip(_SUMS, summed[: len(_SUMS)], strict=True))
    tokens = max(g["tokens"], 1.0)
    bucket_vals = summed[len(_SUMS) : len(_SUMS) + 2 * len(buckets)]
    entropy_by = {b: bucket_vals[2 * j] / max(bucket_vals[2 * j + 1], 1.0) for j, b in enumerate(buckets)}
    return StepResult(
        mean_entropy=g["entropy"] / tokens,
        num_tokens=int(g["tokens"]),
        entropy_by_difficulty=entropy_by,
        pg_loss=g["pg"] / tokens,
        entropy_loss=alpha * g["weighted_entropy"] / tokens,
        kl=g["kl"] / tokens,
        sampler_kl=g["sampler_kl"] / tokens,
        clip_fraction=g["clipped"] / tokens,
        tokens_total=int(summed[-1]),
        **updates,
    )


def _collate(
    model: torch.nn.Module,
    parts: list[list[TrainSample]],
    samples: list[TrainSample],
    num_prompts: int,
    ctx: Dist,
    mini_batches: int,
    micro_batch_size: int,
    pad_id: int,
) -> tuple[list[list[Any]], list[int]]:
    """This rank's micro-batches per mini-batch, and how many of each are real: under FSDP every rank makes the same
    number of passes (collectives must match), so a rank with fewer repeats its last micro-batch as padding."""
    collated = [[collate(c, pad_id, ctx.device) for c in micro_batches(part, micro_batch_size)] for part in parts]
    real = [len(mbs) for mbs in collated]
    if is_sharded(model):
        for m, passes in enumerate(max_passes(samples, num_prompts, ctx.world_size, mini_batches, micro_batch_size)):
            collated[m] += [collated[m][-1]] * (passes - real[m])
    return collated, real


def _old_logprobs(
    model: torch.nn.Module, collated: list[list[Any]], loss: LossSettings, temperature: float
) -> dict[tuple[int, int], Any]:
    """Behaviour log-probs of every micro-batch under the model before this step's updates (`recompute` with more
    than one mini-batch; with one, the detached forward of the update itself is the same)."""
    if loss.old_logprobs != "recompute":
        return {}
    out: dict[tuple[int, int], torch.Tensor] = {}
    with torch.no_grad():
        for m, mbs in enumerate(collated):
            for i, mb in enumerate(mbs):
                out[m, i] = token_stats(model, mb, temperature=temperature, chunk_size=loss.entropy_chunk_size)[1]
    return out


def _optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, grad_clip: float
) -> tuple[float, float, bool]:
    """Clip, step and zero the gradients of one mini-batch; returns (global grad norm, lr used, whether applied).

    With no learning signal anywhere in the (global) mini-batch — every group's rewards equal and no entropy term
    applied — the gradient is exactly zero. AdamW would still move every weight by its momentum, an lr-sized step in
    a stale direction, so the update is skipped (the schedule and the policy version still advance)."""
    params = [p for p in model.parameters() if p.requires_grad]
    norm = local_float(torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf))
    lr = float(optimizer.param_groups[0]["lr"])
    applied = norm > 0.0
    if applied:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm, lr, applied


def max_passes(
    samples: list[TrainSample], num_prompts: int, world_size: int, mini_batches: int, micro_batch_size: int
) -> list[int]:
    """Micro-batches of each mini-batch on the busiest rank (every rank computes it from the same `samples`)."""
    most = [0] * mini_batches
    for r in range(world_size):
        for m, part in enumerate(rank_mini_batches(samples, num_prompts, r, world_size, mini_batches)):
            most[m] = max(most[m], len(micro_batches(part, micro_batch_size)))
    return most
