"""REST request and response bodies. Field names are the proto's (RunState, OverrideRequest).

Requests are strict: unknown fields, wrong types (a string where a number goes, 1 for a bool), NaN, ±inf and
out-of-range values are refused with 422 before any handler runs; the strategy then validates parameters exactly
like `build_strategy` (also 422).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from aerplane.coefficient.runs import MAX_REASON_CHARS, Override

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
ParamName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


class OverrideBody(BaseModel):
    """`PATCH /v1/runs/{run_id}/coefficients`: any subset of these; `release` first drops pin, target and freeze."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"alpha": 0.002, "reason": "entropy collapsing on hard prompts"}]},
    )

    alpha: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False, description="Pin α to this value.")
    target_entropy: float | None = Field(
        None, gt=0.0, le=1000.0, allow_inf_nan=False, description="Replace ρ·H_0 (aer) or H_target (skywork)."
    )
    params: dict[ParamName, FiniteFloat] = Field(
        default_factory=dict, max_length=32, description="Strategy parameters to change (rho, tau, eta, alpha_max…)."
    )
    options: dict[ParamName, Annotated[str, Field(max_length=64)]] = Field(
        default_factory=dict, max_length=8, description="Non-numeric parameters to change (weighting)."
    )
    strategy: str | None = Field(None, max_length=32, description="Switch strategy: none | fixed | skywork | aer.")
    frozen: bool | None = Field(None, description="Stop (true) or restart (false) the controller moving α.")
    reason: str = Field("", max_length=MAX_REASON_CHARS, description="Why; recorded in the audit log.")
    release: bool = Field(False, description="Drop the α pin, the target override and the freeze.")

    def to_override(self) -> Override:
        return Override(
            alpha=self.alpha,
            target_entropy=self.target_entropy,
            params=dict(self.params),
            options=dict(self.options),
            strategy=self.strategy,
            frozen=self.frozen,
            release=self.release,
            reason=self.reason,
        )


class RunStateOut(BaseModel):
    """The RunState fields."""

    run_id: str
    strategy: str
    step: int = Field(description="Last applied learner step (see has_step).")
    alpha: float = Field(description="α for the learner's next step, pin applied.")
    initial_entropy: float | None
    target_entropy: float | None
    last_entropy: float | None
    params: dict[str, float]
    alpha_pinned: bool
    frozen: bool
    options: dict[str, str]
    has_step: bool
    observations: int
    version: int
    target_overridden: bool
    updated_at: float


class OverridesOut(BaseModel):
    alpha: float | None = Field(description="Pinned α, or null.")
    target_entropy: float | None = Field(description="Target override, or null.")
    frozen: bool


class RunDetailOut(RunStateOut):
    """RunState plus the active overrides and when the run was created."""

    overrides: OverridesOut
    created_at: float


class HistoryRow(BaseModel):
    step: int
    alpha: float | None = Field(description="α answered for this step.")
    mean_entropy: float | None = Field(description="H_t reported for this step.")
    target_entropy: float | None = Field(description="H* after this step's report (before it: when answered).")
    mean_prompt_weight: float | None = Field(description="Mean λ_q over the step's prompts (all its requests).")
    mean_accuracy: float | None = Field(description="Mean prompt accuracy over the step's prompts.")
    num_prompts: int
    num_tokens: int | None
    alpha_next: float | None = Field(description="α after this step's entropy was applied.")


class AuditEntry(BaseModel):
    at: str
    ts: float
    actor: str
    action: str
    transport: str
    reason: str
    changes: dict[str, dict[str, Any]]
    version: int
