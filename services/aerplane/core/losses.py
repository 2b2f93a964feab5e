"""The entropy-regularised policy loss of DESIGN §1, per token and aggregated.

    L = token_mean[pg] − α · token_mean[λ_q · H] + kl_coef · token_mean[k3(π_θ ‖ π_ref)]

Per-token policy-gradient terms (`policy_loss_tokens`), with ratio r = exp(log π_θ − log π_old):

- ``vanilla``: the clipped surrogate with asymmetric clip ("clip-higher", DAPO):
  pg = max(−A·r, −A·clip(r, 1 − eps_low, 1 + eps_high)).
- ``clip_cov`` (Clip-Cov, "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
  Cui et al. 2025): as vanilla, then a random ``clip_cov_ratio`` fraction of the tokens (at least one) whose
  centred covariance cov_i = (log π_i − mean log π)·(A_i − mean A) lies strictly within (clip_cov_lb, clip_cov_ub)
  and that the ratio clip has not already cut get their gradient detached (their value still counts).
- ``kl_cov`` (KL-Cov, same paper): no ratio clipping, pg = −A·r; the top ``kl_cov_ratio`` fraction of tokens by
  cov_i (at least one) get a penalty kl_cov_coef·|log π_θ − log π_old|.

Means in cov_i run over the valid (masked-in) tokens of the call, so call it on the whole batch where you can.
Defaults follow verl (clip_cov_ratio 2e-4, bounds (1, 5), kl_cov_ratio 2e-4, kl_cov_coef 0.1). Every constant is a
keyword; `POLICY_LOSS_PARAMS` lists them for configuration validation.

Token-mean aggregation divides the masked sum by the number of valid tokens of the whole batch (not per sequence),
so long responses are not down-weighted; pass `num_tokens` to use a global count across micro-batches and ranks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

POLICY_LOSS_MODES = ("vanilla", "clip_cov", "kl_cov")
POLICY_LOSS_PARAMS: dict[str, dict[str, float]] = {
    "vanilla": {},
    "clip_cov": {"clip_cov_ratio": 2e-4, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0},
    "kl_cov": {"kl_cov_ratio": 2e-4, "kl_cov_coef": 0.1},
}
# log-ratios are clamped before exp() so one wild token cannot produce inf (verl uses the same bound).
MAX_LOG_RATIO = 20.0


def validate_policy_loss(mode: str, params: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Check a policy-loss mode and its parameters; returns them with defaults filled in.

    Raises ValueError naming the mode or parameter (unknown name, NaN/inf, out of range).
    """
    if mode not in POLICY_LOSS_PARAMS:
        raise ValueError(f"policy_loss: unknown mode {mode!r} (expected one of {', '.join(POLICY_LOSS_MODES)})")
    allowed = POLICY_LOSS_PARAMS[mode]
    out = dict(allowed)
    for key, value in (params or {}).items():
        if key not in allowed:
            names = ", ".join(allowed) or "none"
            raise ValueError(f"{key}: unknown parameter for policy_loss {mode!r} (allowed: {names})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{key}: must be a finite number, got {value!r}")
        out[key] = float(value)
    for key in ("clip_cov_ratio", "kl_cov_ratio"):
        if key in out and not 0.0 <= out[key] <= 1.0:
            raise ValueError(f"{key}: must be within [0, 1], got {out[key]!r}")
    if "kl_cov_coef" in out and out["kl_cov_coef"] < 0:
        raise ValueError(f"kl_cov_coef: must be >= 0, got {out['kl_cov_coef']!r}")
    if "clip_cov_lb" in out and out["clip_cov_lb"] >= out["clip_cov_ub"]:
        raise ValueError(f"clip_cov_lb: must be < clip_cov_ub ({out['clip_cov_ub']!r}), got {out['clip_cov_lb']!r}")
    return out


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


def _covariance(logprobs: torch.Tensor, advantages: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """cov_i = (log π_i − mean log π)(A_i − mean A) over valid tokens (detached); −inf elsewhere."""
    lp = logprobs.detach()
    n = valid.sum().clamp_min(1)
    lp_mean = (lp * valid).sum() / n
    adv_mean = (advantages * valid).sum() / n
    cov = (lp - lp_mean) * (advantages - adv_mean)
    return cov.masked_fill(~valid, -math.inf)


def policy_loss_tokens(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    mode: str = "vanilla",
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **params: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token policy-gradient loss and a bool mask of the tokens the mode cut or penalised.

    `advantages` broadcast to `logprobs`' shape (e.g. [B, 1] per sample). The mask marks: ratio-clipped tokens
    (vanilla); ratio-clipped or covariance-detached tokens (clip_cov); KL-penalised tokens (kl_cov). Tokens
    outside `mask` get loss 0. `generator` seeds Clip-Cov's random choice. Mode parameters: see the module doc.
    """
    cfg = validate_policy_loss(mode, params)
    if not (eps_low >= 0 and eps_high >= 0):
        raise ValueError(f"eps_low/eps_high: must be >= 0, got {eps_low!r}/{eps_high!r}")
    adv = torch.broadcast_to(advantages.detach(), logprobs.shape).to(logprobs.dtype)
    valid = torch.ones_like(logprobs, dtype=torch.bool) if mask is None else mask.bool()
    log_ratio = (logprobs - old_logprobs.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = log_ratio.exp()
    unclipped = -adv * ratio

    if mode == "kl_cov":
        pg = unclipped
        affected = torch.zeros_like(valid)
        n_valid = int(valid.sum())
        if n_valid > 0 and cfg["kl_cov_ratio"] > 0:
            k = max(1, int(n_valid * cfg["kl_cov_ratio"]))
            cov = _covariance(logprobs, adv, valid).reshape(-1)
            top = torch.topk(cov, k).indices
            affected.view(-1)[top] = True
            pg = pg + torch.where(affected, cfg["kl_cov_coef"] * log_ratio.abs(), torch.zeros_like(pg))
    else:
        clipped_ratio = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
        surrogate = -adv * clipped_ratio
        pg = torch.maximum(unclipped, surrogate)
        affected = (surrogate > unclipped) & valid
        if mode == "clip_cov":
            n_valid = int(valid.sum())
            cov = _covariance(logprobs, adv, valid)
            candidates = (cov > cfg["clip_cov_lb"]) & (cov < cfg["clip_cov_ub"]) & valid & ~affected
            idx = candidates.reshape(-1).nonzero().squeeze(-1)
            if n_valid > 0 and idx.numel() > 0 and cfg["clip_cov_ratio"] > 0:
                k = min(max(1, int(cfg["clip_cov_ratio"] * n_valid)), idx.numel())
                pick = idx[torch.randperm(idx.numel(), generator=generator, device="cpu")[:k].to(idx.device)]
                detach = torch.zeros_like(valid)
                detach.view(-1)[pick] = True
                pg = torch.where(detach, pg.detach(), pg)
                affected = affected | detach
    pg = pg.masked_fill(~valid, 0.0)
    return pg, affected


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
    mode: str = "vanilla",
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    num_tokens: float | None = None,
    generator: torch.Generator | None = None,
    **mode_params: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss (scalar, differentiable) and its statistics.

    Tensors are per token, [B, T] (or flat [N]); `advantages` and `prompt_weights` (λ_q of each sample's prompt)
    may be per sample, [B], and are broadcast over tokens. `mask` marks response tokens. The entropy term is
    α · token_mean(λ·H); its gradient flows through `entropy` (from `aerplane.core.entropy`).

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

    pg, affected = policy_loss_tokens(
        logprobs,
        old_logprobs,
        adv,
        eps_low=eps_low,
        eps_high=eps_high,
        mode=mode,
        mask=mask,
        generator=generator,
        **mode_params,
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
