"""Policy-loss modes: the per-token policy-gradient term of DESIGN §1, one registered class per mode.

A mode is one class: a frozen pydantic model whose fields are its hyperparameters (type, default, bounds, one line
of doc) and whose `pg` computes its per-token term, registered under its name by `@register_policy_loss("name")`
(verl's `register_policy_loss` is the model). What lists or checks modes derives from `REGISTRY`: the learner's
`loss.policy_loss` choices and `--policy-loss` flag (`POLICY_LOSS_NAMES`), and the check of
`loss.policy_loss_params` when the settings are built (`build_policy_loss`). Importing this module does not import
torch, so settings validate without it; the methods that compute import it.

    from aerplane.core.policy_losses import build_policy_loss
    mode = build_policy_loss("clip_cov", {"clip_cov_ratio": 1e-3})  # ValueError naming a bad key
    pg, affected = mode.tokens(logprobs, old_logprobs, advantages, eps_low=0.2, eps_high=0.28, mask=mask)

Modes, with the ratio r = exp(log π_θ − log π_old):

- ``vanilla``: the clipped surrogate with asymmetric clip ("clip-higher", DAPO):
  pg = max(−A·r, −A·clip(r, 1 − eps_low, 1 + eps_high)).
- ``clip_cov`` (Clip-Cov, "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
  Cui et al. 2025): as vanilla, then a random ``clip_cov_ratio`` fraction of the tokens (at least one) whose
  centred covariance cov_i = (log π_i − mean log π)·(A_i − mean A) lies strictly within (clip_cov_lb, clip_cov_ub)
  and that the ratio clip has not already cut get their gradient detached (their value still counts).
- ``kl_cov`` (KL-Cov, same paper): no ratio clipping, pg = −A·r; the top ``kl_cov_ratio`` fraction of tokens by
  cov_i (at least one) get a penalty kl_cov_coef·|log π_θ − log π_old|.

Means in cov_i run over the valid (masked-in) tokens of the call, so call it on the whole batch where you can.
Defaults follow verl (clip_cov_ratio 2e-4, bounds (1, 5), kl_cov_ratio 2e-4, kl_cov_coef 0.1).

Adding a mode is one `PolicyLoss` subclass (its hyperparameters as float fields, its `pg`) with
`@register_policy_loss("name")`, here or in a module imported before `aerplane.learner.settings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    import torch

# log-ratios are clamped before exp() so one wild token cannot produce inf (verl uses the same bound).
MAX_LOG_RATIO = 20.0

# Every registered mode by name, in registration order (`register_policy_loss`).
REGISTRY: dict[str, type[PolicyLoss]] = {}

M = TypeVar("M", bound="type[PolicyLoss]")


@dataclass(frozen=True)
class Ratios:
    """What every mode's `pg` reads, computed once per call by `PolicyLoss.tokens`."""

    logprobs: torch.Tensor  # log π_θ, with its gradient
    advantages: torch.Tensor  # A, detached, broadcast to the tokens
    valid: torch.Tensor  # bool: the tokens that count
    log_ratio: torch.Tensor  # log π_θ − log π_old, clamped to ±MAX_LOG_RATIO
    ratio: torch.Tensor  # exp(log_ratio)
    eps_low: float
    eps_high: float
    generator: torch.Generator | None  # seeds a mode's random choice


class PolicyLoss(BaseModel):
    """A policy-loss mode: its hyperparameters are the fields, its per-token term is `pg`.

    Fields are floats (the settings carry `policy_loss_params` as numbers); values must be finite, and unknown names
    are refused."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, use_attribute_docstrings=True
    )
    name: ClassVar[str]

    def tokens(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        *,
        eps_low: float = 0.2,
        eps_high: float = 0.28,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token policy-gradient loss and a bool mask of the tokens the mode cut or penalised.

        `advantages` broadcast to `logprobs`' shape (e.g. [B, 1] per sample). Tokens outside `mask` get loss 0.
        `generator` seeds a mode's random choice (Clip-Cov's)."""
        import torch

        if not (eps_low >= 0 and eps_high >= 0):
            raise ValueError(f"eps_low/eps_high: must be >= 0, got {eps_low!r}/{eps_high!r}")
        log_ratio = (logprobs - old_logprobs.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        t = Ratios(
            logprobs=logprobs,
            advantages=torch.broadcast_to(advantages.detach(), logprobs.shape).to(logprobs.dtype),
            valid=torch.ones_like(logprobs, dtype=torch.bool) if mask is None else mask.bool(),
            log_ratio=log_ratio,
            ratio=log_ratio.exp(),
            eps_low=eps_low,
            eps_high=eps_high,
            generator=generator,
        )
        pg, affected = self.pg(t)
        return pg.masked_fill(~t.valid, 0.0), affected

    def pg(self, t: Ratios) -> tuple[torch.Tensor, torch.Tensor]:
        """This mode's per-token loss (masked by `tokens` afterwards) and the tokens it cut or penalised."""
        raise NotImplementedError


def register_policy_loss(name: str) -> Callable[[M], M]:
    """Class decorator: make a `PolicyLoss` subclass the mode `name`, a choice of `loss.policy_loss` (and of
    `--policy-loss`) whose fields are the keys `loss.policy_loss_params` accepts."""

    def register(cls: M) -> M:
        if name in REGISTRY:
            raise ValueError(f"policy loss {name!r} is registered twice")
        not_float = [f for f, info in cls.model_fields.items() if info.annotation is not float]
        if not_float:
            raise TypeError(f"policy loss {name!r}: hyperparameters must be floats: {', '.join(not_float)}")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return register


def policy_loss_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def build_policy_loss(name: str, params: Mapping[str, Any] | None = None) -> PolicyLoss:
    """The registered mode `name` with `params` over its defaults.

    Raises ValueError, one line naming the mode or the parameter: an unknown mode or parameter, a value that is not
    a finite number or is out of bounds, a failed check across parameters."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"policy_loss: unknown mode {name!r} (expected one of {', '.join(REGISTRY)})")
    try:
        return cls.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise ValueError(_first_problem(cls, exc)) from None


def _first_problem(cls: type[PolicyLoss], exc: ValidationError) -> str:
    """The first error of `exc` as one line that starts with the parameter's name."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(cls.model_fields) or "none"
        return f"{key}: unknown parameter for policy_loss {cls.name!r} (allowed: {allowed})"
    if err["type"] == "value_error":  # a check across parameters: its message starts with the parameter's name
        return str(err["ctx"]["error"])
    return f"{key}: {err['msg'].replace('Input should be', 'must be')}, got {err['input']!r}"


def covariance(logprobs: torch.Tensor, advantages: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """cov_i = (log π_i − mean log π)(A_i − mean A) over valid tokens (detached); −inf elsewhere."""
    lp = logprobs.detach()
    n = valid.sum().clamp_min(1)
    lp_mean = (lp * valid).sum() / n
    adv_mean = (advantages * valid).sum() / n
    cov = (lp - lp_mean) * (advantages - adv_mean)
    return cov.masked_fill(~valid, -math.inf)


# --- the modes ------------------------------------------------------------------------------------------------------
@register_policy_loss("vanilla")
class Vanilla(PolicyLoss):
    """The clipped surrogate with asymmetric clip ("clip-higher"); no hyperparameters beyond eps_low/eps_high."""

    def pg(self, t: Ratios) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        unclipped = -t.advantages * t.ratio
        surrogate = -t.advantages * t.ratio.clamp(1.0 - t.eps_low, 1.0 + t.eps_high)
        return torch.maximum(unclipped, surrogate), (surrogate > unclipped) & t.valid


@register_policy_loss("clip_cov")
class ClipCov(Vanilla):
    """Clip-Cov: the clipped surrogate, with the gradient of a few high-covariance tokens detached."""

    clip_cov_ratio: float = Field(2e-4, ge=0, le=1)
    """Fraction of the valid tokens (at least one) drawn among the candidates to have their gradient detached."""
    clip_cov_lb: float = 1.0
    """A candidate's covariance is above this (exclusive)."""
    clip_cov_ub: float = 5.0
    """A candidate's covariance is below this (exclusive)."""

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ClipCov:
        if self.clip_cov_lb >= self.clip_cov_ub:
            raise ValueError(f"clip_cov_lb: must be < clip_cov_ub ({self.clip_cov_ub!r}), got {self.clip_cov_lb!r}")
        return self

    def pg(self, t: Ratios) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        pg, affected = super().pg(t)
        n_valid = int(t.valid.sum())
        cov = covariance(t.logprobs, t.advantages, t.valid)
        candidates = (cov > self.clip_cov_lb) & (cov < self.clip_cov_ub) & t.valid & ~affected
        idx = candidates.reshape(-1).nonzero().squeeze(-1)
        if n_valid > 0 and idx.numel() > 0 and self.clip_cov_ratio > 0:
            k = min(max(1, int(self.clip_cov_ratio * n_valid)), idx.numel())
            pick = idx[torch.randperm(idx.numel(), generator=t.generator, device="cpu")[:k].to(idx.device)]
            detach = torch.zeros_like(t.valid)
            detach.view(-1)[pick] = True
            pg = torch.where(detach, pg.detach(), pg)
            affected = affected | detach
        return pg, affected


@register_policy_loss("kl_cov")
class KlCov(PolicyLoss):
    """KL-Cov: the unclipped surrogate, with a KL penalty on the highest-covariance tokens."""

    kl_cov_ratio: float = Field(2e-4, ge=0, le=1)
    """Fraction of the valid tokens (at least one), those of the largest covariance, that get the penalty."""
    kl_cov_coef: float = Field(0.1, ge=0)
    """Weight of the penalty |log π_θ − log π_old| on those tokens."""

    def pg(self, t: Ratios) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        pg = -t.advantages * t.ratio
        affected = torch.zeros_like(t.valid)
        n_valid = int(t.valid.sum())
        if n_valid > 0 and self.kl_cov_ratio > 0:
            k = max(1, int(n_valid * self.kl_cov_ratio))
            top = torch.topk(covariance(t.logprobs, t.advantages, t.valid).reshape(-1), k).indices
            affected.view(-1)[top] = True
            pg = pg + torch.where(affected, self.kl_cov_coef * t.log_ratio.abs(), torch.zeros_like(pg))
        return pg, affected


def __getattr__(name: str) -> Any:
    """`POLICY_LOSS_NAMES`, the registered modes when imported, so a mode registered before the settings import the
    name is among their choices."""
    if name == "POLICY_LOSS_NAMES":
        return policy_loss_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
