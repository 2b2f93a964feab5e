"""Entropy-control strategies: the coefficient α_t and per-prompt weights λ_q of DESIGN §1.

A strategy is an immutable, validated set of parameters; its state is a small frozen record
(`StrategyState`) that serialises to a JSON-safe dict. Every update is a pure function
``observe(state, entropy) -> new state``, so the coefficient service can persist the state in Redis,
replay it, and a test can hold it to the invariants of DESIGN §1. No torch, no numpy, no I/O: the
coefficient service runs without the training extras.

    from aerplane.core.strategies import build_strategy
    s = build_strategy("aer", rho=0.5, tau=0.4, eta=1e-3)
    st = s.initial_state()
    alpha = s.coefficient(st)                       # α for the next step
    lam = s.prompt_weights(st, [0.0, 0.5, 1.0])     # λ_q per prompt accuracy
    st = s.observe(st, entropy=1.7)                 # after the step: its token-mean entropy

Strategies (parameters and defaults in `STRATEGY_DEFAULTS`):

- ``none``: α ≡ 0, λ ≡ 1.
- ``fixed``: α ≡ ``alpha``, λ ≡ 1.
- ``skywork`` (Skywork-OR1): α ← clip(α + δ, ...) if H_t < H_target else clip(α − δ, ...); the coefficient used
  is α while the last measured H < H_target, 0 otherwise, and α_0 before any measurement. λ ≡ 1.
- ``aer``: H_0 = mean entropy of the first ``anchor_steps`` observations (the initial policy); target
  H* = ρ·H_0, or the absolute ``target_entropy`` when that parameter is set (the anchoring observations are then
  still recorded as H_0 and α still waits for them); after anchoring each observation moves
  α ← clip(α + η·(H* − H_t)/H*, α_min, α_max). λ_q from the prompt accuracy: ``threshold`` (1 if acc ≤ τ else 0),
  ``linear`` (1 − acc) or ``uniform`` (1).

For strategies without anchoring, ``initial_entropy`` is the first observation (for display); ``target_entropy``
is the strategy's target where it has one (skywork's H_target), else None. A target of 0 (an initial policy with
zero entropy) is handled without dividing by zero: any positive entropy is then above target and pushes α down.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

WEIGHTINGS = ("threshold", "linear", "uniform")

# Every parameter each strategy accepts, with its default. `None` means "not set" (aer's absolute target).
STRATEGY_DEFAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "fixed": {"alpha": 1e-3},
    "skywork": {"target_entropy": 0.2, "delta": 1e-4, "alpha_min": 0.0, "alpha_max": 5e-3, "alpha_init": 0.0},
    "aer": {
        "rho": 0.5,
        "tau": 0.4,
        "eta": 1e-3,
        "alpha_min": 0.0,
        "alpha_max": 1e-2,
        "alpha_init": 0.0,
        "anchor_steps": 1,
        "weighting": "threshold",
        "target_entropy": None,
    },
}
STRATEGY_NAMES = tuple(STRATEGY_DEFAULTS)


@dataclass(frozen=True)
class ParamBounds:
    """The range of one numeric parameter: `low` (exclusive when `low_open`) to `high`; `integer` for counts."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False


# The one declaration of each numeric parameter's range: `build_strategy` checks it, and the coefficient service's
# REST schema is derived from it (so a request the schema accepts is one these checks accept).
PARAM_BOUNDS: dict[str, ParamBounds] = {
    "alpha": ParamBounds(low=0.0),
    "delta": ParamBounds(low=0.0),
    "eta": ParamBounds(low=0.0),
    "alpha_min": ParamBounds(low=0.0),
    "alpha_max": ParamBounds(low=0.0),
    "alpha_init": ParamBounds(low=0.0),
    "rho": ParamBounds(low=0.0, low_open=True, high=1.0),
    "tau": ParamBounds(low=0.0, high=1.0),
    "target_entropy": ParamBounds(low=0.0, low_open=True),
    "anchor_steps": ParamBounds(low=1.0, integer=True),
}
# The string parameters and their values.
OPTION_VALUES: dict[str, tuple[str, ...]] = {"weighting": WEIGHTINGS}
# One line on each parameter: the help of the command lines that take them as flags (`aerplane up`, `simulate`).
PARAM_HELP: dict[str, str] = {
    "rho": "aer: target H* = rho·H_0",
    "tau": "aer: accuracy threshold of the threshold weighting",
    "eta": "aer: step size of the α update",
    "alpha_min": "aer, skywork: lower bound of α",
    "alpha_max": "aer, skywork: upper bound of α",
    "alpha_init": "aer, skywork: α_0",
    "anchor_steps": "aer: observations averaged into H_0",
    "weighting": "aer: " + " | ".join(WEIGHTINGS),
    "target_entropy": "skywork: H_target; aer: absolute H*",
    "alpha": "fixed: the constant α",
    "delta": "skywork: α step",
}


def parse_param(text: str) -> tuple[str, float | str | None]:
    """One `KEY=VALUE` parameter as every command line spells it (`--param`, `--strategy-param`, compare's
    `aer:rho=0.8`): a number is a float, `none`/`null` is None (the strategy's default), anything else a string.
    `-` in the key reads as `_`. Raises ValueError for text without `=` or a key."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return key, None
    try:
        return key, float(raw)
    except ValueError:
        return key, raw


def format_param(key: str, value: float | str | None) -> str:
    """The `KEY=VALUE` text that `parse_param` reads back as (key, value), floats exactly (repr)."""
    if value is None:
        return f"{key}=none"
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


@dataclass(frozen=True)
class StrategyState:
    """Where a strategy stands after `step` observations.

    alpha: the controller's coefficient (skywork's gate is applied in `Strategy.coefficient`, not here).
    step: observations so far.
    initial_entropy: H_0; None until anchored.
    target_entropy: H*; None until anchored (aer) or for strategies without a target.
    last_entropy: the latest observation; None before the first.
    anchor_sum: sum of the anchoring observations seen so far (aer with anchor_steps > 1).
    """

    alpha: float
    step: int = 0
    initial_entropy: float | None = None
    target_entropy: float | None = None
    last_entropy: float | None = None
    anchor_sum: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-safe dict (floats, ints and None)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StrategyState:
        """Inverse of `to_dict`; raises ValueError naming the bad or unknown field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"state: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ValueError(f"state.{key}: unknown field (expected one of {', '.join(sorted(known))})")
        if "alpha" not in data:
            raise ValueError("state.alpha: missing")
        step = data.get("step", 0)
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state.step: must be a non-negative integer, got {step!r}")
        values: dict[str, Any] = {"step": step}
        values["alpha"] = _finite("state.alpha", data["alpha"])
        values["anchor_sum"] = _finite("state.anchor_sum", data.get("anchor_sum", 0.0))
        for key in ("initial_entropy", "target_entropy", "last_entropy"):
            value = data.get(key)
            if value is not None:
                value = _finite(f"state.{key}", value)
                if value < 0:
                    raise ValueError(f"state.{key}: must be >= 0, got {value!r}")
            values[key] = value
        return cls(**values)


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return value


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def check_entropy(entropy: Any) -> float:
    """A measured mean entropy as a float; ValueError unless finite and >= 0."""
    value = _finite("entropy", entropy)
    if value < 0:
        raise ValueError(f"entropy: must be >= 0, got {value!r}")
    return value


def check_accuracies(accuracies: Iterable[Any]) -> list[float]:
    """Prompt accuracies as floats; ValueError unless each is finite and within [0, 1]."""
    values = list(accuracies)
    # Fast path for the common case (the coefficient service checks 512 of these per request): plain floats in
    # range. NaN fails both comparisons and ±inf one, so they fall through to the loop that names the culprit.
    if all(type(a) is float for a in values) and all(0.0 <= a <= 1.0 for a in values):
        return values
    out = []
    for i, acc in enumerate(values):
        value = _finite(f"accuracies[{i}]", acc)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"accuracies[{i}]: must be within [0, 1], got {value!r}")
        out.append(value)
    return out


class Strategy:
    """Base class: validated parameters plus the pure update. Build instances with `build_strategy`."""

    name: ClassVar[str]

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params = dict(params)

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter, defaults filled in (a copy)."""
        return dict(self._params)

    @property
    def numeric_params(self) -> dict[str, float]:
        """The numeric parameters that are set (what gRPC's `params` map carries)."""
        return {k: float(v) for k, v in self._params.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    @property
    def options(self) -> dict[str, str]:
        """The string parameters (what gRPC's `options` map carries), e.g. aer's `weighting`."""
        return {k: v for k, v in self._params.items() if isinstance(v, str)}

    def with_params(self, **changes: Any) -> Strategy:
        """The same strategy with some parameters changed (validated like `build_strategy`)."""
        return build_strategy(self.name, **{**self._params, **changes})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"build_strategy({self.name!r}{', ' if args else ''}{args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Strategy) and (self.name, self._params) == (other.name, other._params)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self._params.items()))))

    # --- the API every strategy implements
    def initial_state(self) -> StrategyState:
        return StrategyState(alpha=0.0)

    def coefficient(self, state: StrategyState) -> float:
        """The α the learner uses for its next step."""
        return state.alpha

    def prompt_weights(self, state: StrategyState, accuracies: Iterable[Any]) -> list[float]:
        """λ_q for each prompt accuracy in [0, 1]."""
        return [1.0 for _ in check_accuracies(accuracies)]

    def observe(self, state: StrategyState, *, entropy: Any) -> StrategyState:
        """A new state after one step whose token-mean entropy was `entropy` (the old state is untouched)."""
        h = check_entropy(entropy)
        return self._observe(state, h)

    def reconcile(self, state: StrategyState) -> StrategyState:
        """`state` made consistent with this strategy's parameters (after an override changed them):
        α clipped into the current bounds and the target recomputed."""
        return state

    # --- hooks
    def _observe(self, state: StrategyState, h: float) -> StrategyState:
        initial = state.initial_entropy if state.initial_entropy is not None else h
        return replace(state, step=state.step + 1, last_entropy=h, initial_entropy=initial)


class NoneStrategy(Strategy):
    name = "none"

    def coefficient(self, state: StrategyState) -> float:
        return 0.0


class FixedStrategy(Strategy):
    name = "fixed"

    def initial_state(self) -> StrategyState:
        return StrategyState(alpha=self._params["alpha"])

    def coefficient(self, state: StrategyState) -> float:
        return self._params["alpha"]

    def reconcile(self, state: StrategyState) -> StrategyState:
        return replace(state, alpha=self._params["alpha"])


class SkyworkStrategy(Strategy):
    name = "skywork"

    def initial_state(self) -> StrategyState:
        return StrategyState(alpha=self._params["alpha_init"], target_entropy=self._params["target_entropy"])

    def coefficient(self, state: StrategyState) -> float:
        if state.last_entropy is None or state.last_entropy < self._params["target_entropy"]:
            return state.alpha
        return 0.0

    def reconcile(self, state: StrategyState) -> StrategyState:
        p = self._params
        return replace(
            state, alpha=_clip(state.alpha, p["alpha_min"], p["alpha_max"]), target_entropy=p["target_entropy"]
        )

    def _observe(self, state: StrategyState, h: float) -> StrategyState:
        p = self._params
        step = p["delta"] if h < p["target_entropy"] else -p["delta"]
        alpha = _clip(state.alpha + step, p["alpha_min"], p["alpha_max"])
        state = super()._observe(state, h)
        return replace(state, alpha=alpha, target_entropy=p["target_entropy"])


class AERStrategy(Strategy):
    name = "aer"

    def initial_state(self) -> StrategyState:
        return StrategyState(alpha=self._params["alpha_init"])

    def prompt_weights(self, state: StrategyState, accuracies: Iterable[Any]) -> list[float]:
        accs = check_accuracies(accuracies)
        weighting = self._params["weighting"]
        if weighting == "threshold":
            tau = self._params["tau"]
            return [1.0 if acc <= tau else 0.0 for acc in accs]
        if weighting == "linear":
            return [1.0 - acc for acc in accs]
        return [1.0 for _ in accs]

    def target_for(self, initial_entropy: float | None) -> float | None:
        """H* for an anchored H_0: the absolute target if set, else ρ·H_0 (None while H_0 is unknown)."""
        if initial_entropy is None:
            return None
        absolute = self._params["target_entropy"]
        return absolute if absolute is not None else self._params["rho"] * initial_entropy

    def reconcile(self, state: StrategyState) -> StrategyState:
        p = self._params
        return replace(
            state,
            alpha=_clip(state.alpha, p["alpha_min"], p["alpha_max"]),
            target_entropy=self.target_for(state.initial_entropy),
        )

    def _observe(self, state: StrategyState, h: float) -> StrategyState:
        p = self._params
        anchor_steps = p["anchor_steps"]
        step = state.step + 1
        if state.initial_entropy is None:  # still anchoring: this observation only feeds H_0
            anchor_sum = state.anchor_sum + h
            if step < anchor_steps:
                return replace(state, step=step, last_entropy=h, anchor_sum=anchor_sum)
            h0 = anchor_sum / step  # every observation so far was an anchoring one
            return replace(
                state,
                step=step,
                last_entropy=h,
                anchor_sum=anchor_sum,
                initial_entropy=h0,
                target_entropy=self.target_for(h0),
            )
        target = self.target_for(state.initial_entropy)
        assert target is not None
        alpha = state.alpha
        if p["eta"] > 0:
            # a zero target (H_0 = 0): any positive entropy is infinitely far above it → α goes to α_min
            relative = (target - h) / target if target > 0 else (0.0 if h == 0 else -math.inf)
            alpha = alpha + p["eta"] * relative
        alpha = _clip(alpha, p["alpha_min"], p["alpha_max"])
        return replace(state, step=step, last_entropy=h, alpha=alpha, target_entropy=target)


_CLASSES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (NoneStrategy, FixedStrategy, SkyworkStrategy, AERStrategy)
}


# --- parameter validation
def _number(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    value = _finite(name, value)
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ValueError(f"{name}: must be {bound}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name}: must be <= {high:g}, got {value!r}")
    return value


def _validate(name: str, params: dict[str, Any]) -> dict[str, Any]:
    p = dict(params)
    if name == "skywork" and p["target_entropy"] is None:
        raise ValueError("target_entropy: required for strategy 'skywork'")
    for key, bounds in PARAM_BOUNDS.items():
        if p.get(key) is None:
            continue
        if bounds.integer:
            value = p[key]
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < (bounds.low or 0):
                raise ValueError(f"{key}: must be an integer >= {bounds.low:g}, got {p[key]!r}")
            p[key] = value
        else:
            p[key] = _number(key, p[key], low=bounds.low, high=bounds.high, low_open=bounds.low_open)
    for key, allowed in OPTION_VALUES.items():
        if key in p and p[key] not in allowed:
            raise ValueError(f"{key}: must be one of {', '.join(allowed)}, got {p[key]!r}")
    if "alpha_min" in p and "alpha_max" in p:
        if p["alpha_min"] > p["alpha_max"]:
            raise ValueError(f"alpha_min: must be <= alpha_max ({p['alpha_max']!r}), got {p['alpha_min']!r}")
        if "alpha_init" in p and not p["alpha_min"] <= p["alpha_init"] <= p["alpha_max"]:
            raise ValueError(
                f"alpha_init: must be within [alpha_min, alpha_max] = [{p['alpha_min']!r}, {p['alpha_max']!r}], "
                f"got {p['alpha_init']!r}"
            )
    return p


def build_strategy(name: str, **params: Any) -> Strategy:
    """The strategy `name` (none | fixed | skywork | aer) with `params` over its defaults.

    Raises ValueError naming the parameter for an unknown name or parameter, NaN/inf, or an out-of-range value.
    Numeric parameters may be given as int or float (gRPC carries them as floats: anchor_steps=1.0 is fine);
    `weighting` is a string.
    """
    if name not in STRATEGY_DEFAULTS:
        raise ValueError(f"strategy: unknown strategy {name!r} (expected one of {', '.join(STRATEGY_NAMES)})")
    defaults = STRATEGY_DEFAULTS[name]
    for key in params:
        if key not in defaults:
            allowed = ", ".join(defaults) or "none"
            raise ValueError(f"{key}: unknown parameter for strategy {name!r} (allowed: {allowed})")
    return _CLASSES[name](_validate(name, {**defaults, **params}))
