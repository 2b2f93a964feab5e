"""One run's coefficient record and the pure transitions on it (no I/O: the store persists what these return).

A run is its strategy configuration (name and every parameter, as `build_strategy` takes them), the strategy's
`StrategyState`, the operator overrides and the learner's last applied step. The maths is `aerplane.core.strategies`;
this module only decides which strategy object and state to hand it:

- **Pinned α** (`pin_alpha`): `coefficient()` returns the pin until it is released. While pinned the controller's
  own α (and aer's integral term) is held at the pin (entropy is still observed: H_0 anchoring and the last entropy
  keep updating), so on release the controller continues from the pinned value instead of jumping to a value it
  drifted to unseen.
- **Target override** (`target_override`): H* for strategies that have one (`aer`, `skywork`), passed to the
  strategy as its `target_entropy` parameter, so the core does the rest. Released with the pin.
- **Frozen**: observations still update H_0 and the last entropy, α does not move (nor aer's integral term).
- **Parameter / strategy changes** are configuration, not overrides: they stay after a release. A strategy switch
  keeps α, H_0, the last entropy and the observation count, then `reconcile` fits them to the new parameters.
- **Steps**: `last_step` is the learner's last applied step. Each step's entropy is applied once: a report for a
  step already applied (the last one, or an older one the store has a record of) changes nothing — a learner that
  resumes from a checkpoint re-trains steps it had reported before it died, and α must not move twice. An older
  step that was never applied is refused with `StaleStep` (applying it now would be out of order).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aerplane.core.strategies import (
    STRATEGY_DEFAULTS,
    Strategy,
    StrategyState,
    build_strategy,
    check_entropy,
    check_finite,
)

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_REASON_CHARS = 1000
FORMAT_VERSION = 1


class CoefficientError(Exception):
    """Base of the errors the transports map onto status codes."""


class InvalidValue(CoefficientError, ValueError):
    """A bad argument (gRPC INVALID_ARGUMENT, REST 422)."""


class RunNotFound(CoefficientError, KeyError):
    """No such run (NOT_FOUND, 404)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "run not found"


class RunExists(CoefficientError):
    """StartRun without resume for a run that exists (ALREADY_EXISTS, 409)."""


class StaleStep(CoefficientError):
    """A report for a step older than the last applied one that was never applied itself (FAILED_PRECONDITION)."""


class OverrideConflict(CoefficientError):
    """A well-formed REST change the run refuses as it is configured (409; over gRPC: INVALID_ARGUMENT)."""


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise InvalidValue(f"run_id: must match {RUN_ID_RE.pattern} (letters, digits, '.', '_', '-'), got {run_id!r}")
    return run_id


def _finite(name: str, value: Any, *, low: float | None = None, low_open: bool = False) -> float:
    try:
        value = check_finite(name, value)
    except ValueError as exc:
        raise InvalidValue(str(exc)) from None
    if low is not None and (value < low or (low_open and value == low)):
        raise InvalidValue(f"{name}: must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    return value


@functools.lru_cache(maxsize=256)
def _cached_strategy(name: str, items: tuple[tuple[str, Any], ...]) -> Strategy:
    return build_strategy(name, **dict(items))


def strategy_for(name: str, params: dict[str, Any]) -> Strategy:
    """`build_strategy(name, **params)`, cached (the hot path builds the same few configurations over and over)."""
    try:
        return _cached_strategy(name, tuple(sorted(params.items())))
    except ValueError as exc:
        raise InvalidValue(str(exc)) from None


def has_target(strategy_name: str) -> bool:
    return "target_entropy" in STRATEGY_DEFAULTS.get(strategy_name, {})


@dataclass(frozen=True)
class Override:
    """What one Override call asks for (None / empty = leave as is)."""

    alpha: float | None = None
    target_entropy: float | None = None
    params: dict[str, float] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    strategy: str | None = None
    frozen: bool | None = None
    release: bool = False
    reason: str = ""

    def is_empty(self) -> bool:
        return (
            self.alpha is None
            and self.target_entropy is None
            and not self.params
            and not self.options
            and self.strategy is None
            and self.frozen is None
            and not self.release
        )


@dataclass(frozen=True)
class Run:
    run_id: str
    strategy: str
    params: dict[str, Any]  # every parameter of the configured strategy (numbers, strings, None)
    state: StrategyState
    pin_alpha: float | None = None
    target_override: float | None = None
    frozen: bool = False
    last_step: int | None = None
    total_steps: int | None = None  # as the learner last reported it
    reported_at: float | None = None  # when the last report was applied (updated_at moves on overrides too)
    version: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0

    # --- the strategy as it applies now
    def configured(self) -> Strategy:
        return strategy_for(self.strategy, self.params)

    def effective(self) -> Strategy:
        """The configured strategy with the target override applied (what observe/prompt_weights use)."""
        if self.target_override is None:
            return self.configured()
        return strategy_for(self.strategy, {**self.params, "target_entropy": self.target_override})

    def coefficient(self) -> float:
        """α for the learner's next step."""
        if self.pin_alpha is not None:
            return self.pin_alpha
        return float(self.effective().coefficient(self.state))

    # --- views
    def view(self) -> dict[str, Any]:
        """The RunState fields, by their proto names."""
        configured = self.configured()
        return {
            "run_id": self.run_id,
            "strategy": self.strategy,
            "step": self.last_step if self.last_step is not None else 0,
            "alpha": self.coefficient(),
            "initial_entropy": self.state.initial_entropy,
            "target_entropy": self.state.target_entropy,
            "last_entropy": self.state.last_entropy,
            "params": configured.numeric_params,
            "alpha_pinned": self.pin_alpha is not None,
            "frozen": self.frozen,
            "options": configured.options,
            "has_step": self.last_step is not None,
            "observations": self.state.step,
            "version": self.version,
            "target_overridden": self.target_override is not None,
            "updated_at": self.updated_at,
            "p_term": self.state.p_term,
            "i_term": self.state.i_term,
            "d_term": self.state.d_term,
            "total_steps": self.total_steps,
            "finished": self.finished(),
            "reported_at": self.reported_at,
        }

    def finished(self) -> bool:
        """True once the last of the run's reported `total_steps` is applied."""
        return self.last_step is not None and self.total_steps is not None and self.last_step + 1 >= self.total_steps

    def overrides(self) -> dict[str, Any]:
        return {"alpha": self.pin_alpha, "target_entropy": self.target_override, "frozen": self.frozen}

    # --- persistence
    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "run_id": self.run_id,
                "strategy": self.strategy,
                "params": self.params,
                "state": self.state.to_dict(),
                "pin_alpha": self.pin_alpha,
                "target_override": self.target_override,
                "frozen": self.frozen,
                "last_step": self.last_step,
                "total_steps": self.total_steps,
                "reported_at": self.reported_at,
                "version": self.version,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
            },
            allow_nan=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Run:
        d = json.loads(raw)
        if d.get("format") != FORMAT_VERSION:
            raise ValueError(f"stored run has format {d.get('format')!r}, this service reads {FORMAT_VERSION}")
        return cls(
            run_id=d["run_id"],
            strategy=d["strategy"],
            params=d["params"],
            state=StrategyState.from_dict(d["state"]),
            pin_alpha=d["pin_alpha"],
            target_override=d["target_override"],
            frozen=d["frozen"],
            last_step=d["last_step"],
            total_steps=d.get("total_steps"),  # records from before these fields have none
            reported_at=d.get("reported_at"),
            version=d["version"],
            created_at=d["created_at"],
            updated_at=d["updated_at"],
        )


# --- transitions
def new_run(run_id: str, strategy: str, params: dict[str, float], options: dict[str, str], now: float) -> Run:
    """A fresh run; the parameters are validated exactly like `build_strategy`."""
    check_run_id(run_id)
    clash = sorted(set(params) & set(options))
    if clash:
        raise InvalidValue(f"{clash[0]}: given both as a numeric parameter and as an option")
    for key, value in params.items():
        _finite(f"params.{key}", value)
    s = strategy_for(strategy, {**params, **options})
    return Run(run_id=run_id, strategy=s.name, params=s.params, state=s.initial_state(), created_at=now, updated_at=now)


def apply_report(
    run: Run,
    step: int,
    entropy: float,
    num_tokens: int,
    now: float,
    *,
    applied: Callable[[int], bool] = lambda step: False,
    total_steps: int | None = None,
) -> tuple[Run, bool]:
    """The run after step `step` measured `entropy`; `(run, False)` when that step was already applied.

    `applied(step)` says whether an older step than the last one was applied (the store keeps a record per step).
    `total_steps` (checked by `StepFigures.checked`), when given, replaces the run's."""
    try:
        h = check_entropy(entropy)
    except ValueError as exc:
        raise InvalidValue(f"mean_entropy: {exc}") from None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidValue(f"step: must be a non-negative integer, got {step!r}")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens <= 0:
        raise InvalidValue(
            f"num_tokens: must be a positive integer (a mean over no tokens is undefined), got {num_tokens!r}"
        )
    if run.last_step is not None:
        if step == run.last_step:
            return run, False
        if step < run.last_step:
            if applied(step):
                return run, False
            raise StaleStep(
                f"step {step} is older than the last applied step {run.last_step} of run {run.run_id!r} and was "
                "never applied itself"
            )
    state = run.effective().observe(run.state, entropy=h)
    if run.pin_alpha is not None:
        state = state.held_at(run.pin_alpha)
    elif run.frozen:
        state = replace(state, alpha=run.state.alpha, integral=run.state.integral)
    total = run.total_steps if total_steps is None else total_steps
    after = replace(run, state=state, last_step=step, total_steps=total, reported_at=now, updated_at=now)
    return replace(after, version=run.version + 1), True


def apply_override(run: Run, change: Override, now: float) -> tuple[Run, dict[str, dict[str, Any]]]:
    """The run after `change`, and what changed as {field: {"old": ..., "new": ...}} for the audit log."""
    if change.is_empty():
        raise InvalidValue(
            "nothing to change: give alpha, target_entropy, params, options, strategy, frozen or release"
        )
    if len(change.reason) > MAX_REASON_CHARS:
        raise InvalidValue(f"reason: at most {MAX_REASON_CHARS} characters")
    before = run
    pin, target, frozen = run.pin_alpha, run.target_override, run.frozen
    if change.release:
        pin, target, frozen = None, None, False

    # configuration: strategy and parameters
    name, params = run.strategy, dict(run.params)
    for key, value in change.params.items():
        _finite(f"params.{key}", value)
    clash = sorted(set(change.params) & set(change.options))
    if clash:
        raise InvalidValue(f"{clash[0]}: given both in params and in options")
    if change.strategy is not None and change.strategy != run.strategy:
        name = change.strategy
        if name not in STRATEGY_DEFAULTS:
            raise InvalidValue(f"strategy: unknown strategy {name!r} (expected one of {', '.join(STRATEGY_DEFAULTS)})")
        shared = STRATEGY_DEFAULTS[name]
        params = {k: v for k, v in run.params.items() if k in shared and v is not None and k != "target_entropy"}
    configured = strategy_for(name, {**params, **change.params, **change.options})
    if target is not None and not has_target(name):
        target = None  # switched to a strategy without a target: the override has nothing to act on

    # overrides
    if change.target_entropy is not None:
        if not has_target(name):
            raise InvalidValue(f"target_entropy: strategy {name!r} has no target entropy")
        target = _finite("target_entropy", change.target_entropy, low=0.0, low_open=True)
    if change.alpha is not None:
        pin = _finite("alpha", change.alpha, low=0.0)
        p = configured.params
        if "alpha_min" in p and "alpha_max" in p and not p["alpha_min"] <= pin <= p["alpha_max"]:
            raise InvalidValue(
                f"alpha: must be within [alpha_min, alpha_max] = [{p['alpha_min']!r}, {p['alpha_max']!r}] "
                f"(raise alpha_max in the same override to go higher), got {pin!r}"
            )
    if change.frozen is not None:
        frozen = change.frozen

    after = replace(
        run,
        strategy=configured.name,
        params=configured.params,
        pin_alpha=pin,
        target_override=target,
        frozen=frozen,
    )
    state = run.state
    if name != run.strategy:
        state = replace(configured.initial_state(), **_carried(run.state))
    state = after.effective().reconcile(state)
    if pin is not None:
        state = state.held_at(pin)
    after = replace(after, state=state)

    changes = _diff(before, after)
    if changes:
        after = replace(after, version=run.version + 1, updated_at=now)
    return after, changes


def _carried(state: StrategyState) -> dict[str, Any]:
    """What a strategy switch keeps: α, H_0, the last entropy, the observation count."""
    return {
        "alpha": state.alpha,
        "step": state.step,
        "initial_entropy": state.initial_entropy,
        "last_entropy": state.last_entropy,
        "anchor_sum": state.anchor_sum,
    }


def _diff(before: Run, after: Run) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def note(key: str, old: Any, new: Any) -> None:
        if old != new:
            out[key] = {"old": old, "new": new}

    note("strategy", before.strategy, after.strategy)
    for key in sorted(set(before.params) | set(after.params)):
        note(f"params.{key}", before.params.get(key), after.params.get(key))
    note("alpha_pin", before.pin_alpha, after.pin_alpha)
    note("target_override", before.target_override, after.target_override)
    note("frozen", before.frozen, after.frozen)
    note("alpha", before.coefficient(), after.coefficient())
    note("target_entropy", before.state.target_entropy, after.state.target_entropy)
    return out
