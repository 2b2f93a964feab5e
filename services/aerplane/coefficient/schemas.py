"""REST request and response bodies. Field names are the proto's (RunState, OverrideRequest).

Requests are strict, and their schema is the validator: unknown fields or parameters, wrong types (a string where
a number goes, 1 for a bool), NaN, ±inf, out-of-range values and a body that changes nothing are refused with 422
before any handler runs. Parameter ranges come from `aerplane.core.strategies.PARAM_BOUNDS`, the table
`build_strategy` checks, so a body the OpenAPI schema accepts passes those checks too. What only the run can
decide — a parameter its strategy does not have, α outside its [alpha_min, alpha_max], alpha_min above its
alpha_max, a target for a strategy without one — is a conflict with the run's state: 409.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator, with_config
from typing_extensions import TypedDict

from aerplane.coefficient.runs import MAX_REASON_CHARS, Override
from aerplane.core.strategies import OPTION_VALUES, PARAM_BOUNDS, STRATEGY_DEFAULTS, STRATEGY_NAMES, ParamBounds

_STRICT = ConfigDict(extra="forbid", strict=True)


def _param_type(name: str, bounds: ParamBounds) -> Any:
    limits: dict[str, Any] = {"allow_inf_nan": False}
    if bounds.low is not None:
        limits["gt" if bounds.low_open else "ge"] = bounds.low
    if bounds.high is not None:
        limits["le"] = bounds.high
    if bounds.integer:
        limits["multiple_of"] = 1  # a number, not an integer type: gRPC carries parameters as doubles (2.0 is fine)
    owners = ", ".join(s for s, defaults in STRATEGY_DEFAULTS.items() if name in defaults)
    return Annotated[float, Field(description=f"Parameter of: {owners}.", **limits)]


# Every numeric strategy parameter with its range; all optional, none nullable (TypedDict: absent means unchanged).
StrategyParams = with_config(_STRICT)(
    TypedDict(  # type: ignore[misc]
        "StrategyParams", {name: _param_type(name, b) for name, b in PARAM_BOUNDS.items()}, total=False
    )
)
StrategyOptions = with_config(_STRICT)(
    TypedDict(  # type: ignore[misc]
        "StrategyOptions", {name: Literal[values] for name, values in OPTION_VALUES.items()}, total=False
    )
)
StrategyName = Literal[STRATEGY_NAMES]  # type: ignore[valid-type]

# The schema's form of "change something" (`Override.is_empty`), one branch per way to change a run.
_SOMETHING_TO_CHANGE = [
    {"required": ["alpha"], "properties": {"alpha": {"type": "number"}}},
    {"required": ["target_entropy"], "properties": {"target_entropy": {"type": "number"}}},
    {"required": ["params"], "properties": {"params": {"minProperties": 1}}},
    {"required": ["options"], "properties": {"options": {"minProperties": 1}}},
    {"required": ["strategy"], "properties": {"strategy": {"type": "string"}}},
    {"required": ["frozen"], "properties": {"frozen": {"type": "boolean"}}},
    {"required": ["release"], "properties": {"release": {"const": True}}},
]


def _override_schema(schema: dict[str, Any]) -> None:
    schema["anyOf"] = _SOMETHING_TO_CHANGE
    schema["examples"] = [{"alpha": 0.002, "reason": "entropy collapsing on hard prompts"}]


class OverrideBody(BaseModel):
    """`PATCH /v1/runs/{run_id}/coefficients`: any subset of these (at least one change); `release` first drops
    pin, target and freeze."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_override_schema)

    alpha: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False, description="Pin α to this value.")
    target_entropy: float | None = Field(
        None, gt=0.0, le=1000.0, allow_inf_nan=False, description="Replace ρ·H_0 (aer) or H_target (skywork)."
    )
    params: StrategyParams = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="Strategy parameters to change; each must be one of the run's strategy (after a switch in the "
        "same request: of the new one), else 409.",
    )
    options: StrategyOptions = Field(  # type: ignore[valid-type]
        default_factory=dict, description="Non-numeric parameters to change (aer's weighting)."
    )
    strategy: StrategyName | None = Field(None, description="Switch strategy.")  # type: ignore[valid-type]
    frozen: bool | None = Field(None, description="Stop (true) or restart (false) the controller moving α.")
    reason: str = Field("", max_length=MAX_REASON_CHARS, description="Why; recorded in the audit log.")
    release: bool = Field(False, description="Drop the α pin, the target override and the freeze.")

    @model_validator(mode="after")
    def _changes_something(self) -> OverrideBody:
        if self.to_override().is_empty():
            raise ValueError(
                "nothing to change: give alpha, target_entropy, params, options, strategy, frozen or release=true"
            )
        return self

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


class ErrorOut(BaseModel):
    """An error: what went wrong, in words (never echoing a token)."""

    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="Where: body, query or path, then the field.")
    msg: str
    type: str


class InvalidRequestOut(BaseModel):
    """422: the request's problems, one per field, or one message (an oversized or unreadable body)."""

    detail: list[ValidationIssue] | str


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
    p_term: float | None = Field(None, description="aer: kp·e of the last update (null before one).")
    i_term: float | None = Field(None, description="aer: the integral term I after the last update.")
    d_term: float | None = Field(None, description="aer: the derivative term D of the last update.")
    total_steps: int | None = Field(None, description="The steps the run is set to train, as its learner reported.")
    finished: bool = Field(False, description="True once the run's last step (total_steps - 1) is applied.")
    reported_at: float | None = Field(
        None, description="Unix seconds of the last applied entropy report (updated_at moves on overrides too)."
    )


class OverridesOut(BaseModel):
    alpha: float | None = Field(description="Pinned α, or null.")
    target_entropy: float | None = Field(description="Target override, or null.")
    frozen: bool


class RunSummaryOut(RunStateOut):
    """RunState plus the means of the run's latest GetCoefficients batch (the runs list)."""

    mean_prompt_weight: float | None = Field(None, description="Mean λ_q of the latest batch (null before one).")
    mean_accuracy: float | None = Field(None, description="Mean prompt accuracy of the latest batch.")


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
    p_term: float | None = Field(None, description="aer: kp·e of this step's update (α_next = clip(P + I + D)).")
    i_term: float | None = Field(None, description="aer: the integral term I after this step's update.")
    d_term: float | None = Field(None, description="aer: the derivative term D of this step's update.")
    accuracy_by_difficulty: dict[str, float] | None = Field(
        None, description="Mean reward per difficulty bucket, as the learner reported it with H (null if not)."
    )
    response_length: float | None = Field(
        None, description="Mean response length in tokens, as the learner reported it with H (null if not)."
    )


class AuditEntry(BaseModel):
    at: str
    ts: float
    actor: str
    action: str
    transport: str
    reason: str
    changes: dict[str, dict[str, Any]]
    version: int
