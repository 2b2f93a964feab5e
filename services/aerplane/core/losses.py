"""The entropy-regularised policy loss of DESIGN §1, per token and aggregated.

    L = token_mean[pg] − α · token_mean[λ_q · H] + kl_coef · token_mean[k3(π_θ ‖ π_ref)]

The per-token policy-gradient term pg is the policy-loss mode's (`aerplane.core.policy_losses`: vanilla, Clip-Cov,
KL-Cov, each one registered class with its hyperparameters); `compute_loss` takes the built mode as `policy`.

Token-mean aggregation divides the masked sum by the number of valid tokens of the whole batch (not per sequence),
so long responses are not down-weighted; pass `num_tokens` to use a global count across micro-batches and ranks.
"""

from __future__ import annotations

import math

import torch

from aerplane.core.policy_losses import MAX_LOG_RATIO, PolicyLoss, Vanilla


def token_mean(values: torch.Tensor, mask: torch.Tensor | None = None, num_tokens: float | None = None) -> torch.Tensor:
    """Σ values·mask / (number of valid tokens, or `num_tokens`); 0 for an empty batch."""
    if mask is None:
        total, count = values.sum(), values.numel()
    else:
        m = mask.to(values.dtype)
        total, count = (values * m).sum(), m.sum()
    denom = num_tokens if num_tokens is not None else count
    if isinstance(denom, torch.Tensor):
        return total / denom.clamp_min(1)
    return total / max(float(denom), 1.0)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π_θ ‖ π_ref): exp(d) − d − 1 with d = log π_ref − log π_θ (≥ 0)."""
    d = (ref_logprobs.detach() - logprobs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return d.exp() - d - 1.0


def _per_token(values: torch.Tensor | None, like: torch.Tensor, name: str) -> torch.Tensor:
    if values is None:
        return torch.ones_like(like)
    v = values if isinstance(values, torch.Tensor) else torch.as_tensor(values, dtype=like.dtype)
    v = v.to(device=like.device, dtype=like.dtype)
    if v.dim() == 1 and like.dim() == 2 and v.shape[0] == like.shape[0]:
        v = v.unsqueeze(-1)  # one value per sample → every token of the sample
    try:
        return torch.broadcast_to(v, like.shape)
    except RuntimeError:
        raise ValueError(f"{name}: shape {tuple(v.shape)} does not broadcast to tokens {tuple(like.shape)}") from None


def compute_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    alpha: float = 0.0,
    prompt_weights: torch.Tensor | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    policy: PolicyLoss | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    num_tokens: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss (scalar, differentiable) and its statistics.

    Tensors are per token, [B, T] (or flat [N]); `advantages` and `prompt_weights` (λ_q of each sample's prompt)
    may be per sample, [B], and are broadcast over tokens. `mask` marks response tokens. The entropy term is
    α · token_mean(λ·H); its gradient flows through `entropy` (from `aerplane.core.entropy`). `policy` is the
    policy-loss mode that computes pg (`aerplane.core.policy_losses`; vanilla when None), `generator` seeds its
    random choice.

    Stats: loss, pg_loss, entropy_loss (α·token_mean(λH)), mean_entropy (token_mean(H)), weighted_entropy
    (token_mean(λH)), clip_fraction (share of tokens the mode cut or penalised), kl (token_mean k3 to the
    reference, 0 without one), approx_kl (token_mean of log π_old − log π_θ), num_tokens.
    """
    if not (isinstance(alpha, int | float) and math.isfinite(alpha)):
        raise ValueError(f"alpha: must be a finite number, got {alpha!r}")
    if not (isinstance(kl_coef, int | float) and math.isfinite(kl_coef) and kl_coef >= 0):
        raise ValueError(f"kl_coef: must be a finite number >= 0, got {kl_coef!r}")
    for name, t in (("old_logprobs", old_logprobs), ("entropy", entropy), ("mask", mask), ("ref", ref_logprobs)):
        if t is not None and t.shape != logprobs.shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)} must equal logprobs' {tuple(logprobs.shape)}")
    adv = _per_token(advantages, logprobs.detach(), "advantages")
    lam = _per_token(prompt_weights, entropy.detach(), "prompt_weights")
    if prompt_weights is not None and not bool(((lam >= 0) & (lam <= 1)).all()):
        raise ValueError("prompt_weights: must be within [0, 1]")

    policy = policy if policy is not None else Vanilla()
    pg, affected = policy.tokens(
        logprobs, old_logprobs, adv, eps_low=eps_low, eps_high=eps_high, mask=mask, generator=generator
    )
    pg_loss = token_mean(pg, mask, num_tokens)
    weighted_entropy = token_mean(lam * entropy, mask, num_tokens)
    loss = pg_loss - alpha * weighted_entropy
    kl = torch.zeros((), dtype=pg_loss.dtype, device=pg_loss.device)
    if ref_logprobs is not None:
        kl = token_mean(k3_kl(logprobs, ref_logprobs), mask, num_tokens)
        if kl_coef:
            loss = loss + kl_coef * kl
    with torch.no_grad():
        count = float(mask.sum()) if mask is not None else float(logprobs.numel())
        stats = {
            "loss": float(loss),
            "pg_loss": float(pg_loss),
            "entropy_loss": float(alpha * weighted_entropy),
            "mean_entropy": float(token_mean(entropy.detach(), mask, num_tokens)),
            "weighted_entropy": float(weighted_entropy),
            "clip_fraction": float(token_mean(affected.to(pg.dtype), mask, num_tokens)),
            "kl": float(kl),
            "approx_kl": float(token_mean(old_logprobs.detach() - logprobs.detach(), mask, num_tokens)),
            "num_tokens": count,
        }
    return loss, stats
