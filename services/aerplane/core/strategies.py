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

Strategies, each one class with its `parameters` and `@register` (the registry `REGISTRY`; `STRATEGY_DEFAULTS`,
`STRATEGY_NAMES`, `PARAM_BOUNDS`, `OPTION_VALUES` and `PARAM_HELP` are derived from it):

- ``none``: α ≡ 0, λ ≡ 1.
- ``fixed``: α ≡ ``alpha``, λ ≡ 1.
- ``skywork`` (Skywork-OR1): α ← clip(α + δ, ...) if H_t < H_target else clip(α − δ, ...); the coefficient used
  is α while the last measured H < H_target, 0 otherwise, and α_0 before any measurement. λ ≡ 1.
- ``aer``: H_0 = mean entropy of the first ``anchor_steps`` observations (the initial policy); target
  H* = ρ·H_0, or the absolute ``target_entropy`` when that parameter is set (the anchoring observations are then
  still recorded as H_0 and α still waits for them); after anchoring each observation updates α by DESIGN §1.3:
  the integral α ← clip(α + η·(H* − H_t)/H*, α_min, α_max) when ``kp`` = ``kd`` = ``smoothing`` = 0 (the defaults,
  bit for bit), and with them P = kp·e, D = −kd·ΔH̃/H* on the filtered measurement H̃, conditional integration,
  α = clip(P + I + D). λ_q from the prompt accuracy: ``threshold`` (1 if acc ≤ τ else 0), ``linear`` (1 − acc) or
  ``uniform`` (1).

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


@dataclass(frozen=True)
class ParamBounds:
    """The range of one numeric parameter: `low` (exclusive when `low_open`) to `high`; `integer` for counts."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Param:
    """One strategy parameter: its name, default (None = not set), one line of doc, and either numeric `bounds` or
    the string `choices` it takes. A strategy declares its parameters as a tuple of these (`Strategy.parameters`)."""

    name: str
    default: float | str | None
    doc: str
    bounds: ParamBounds | None = None
    choices: tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        return not self.choices


# Parameters more than one strategy takes are declared once, so their bounds and doc cannot drift apart.
ALPHA_MIN = Param("alpha_min", 0.0, "lower bound of α", ParamBounds(low=0.0))
TARGET_BOUNDS = ParamBounds(low=0.0, low_open=True)
ALPHA_INIT = Param("alpha_init", 0.0, "α_0, the coefficient before any observation", ParamBounds(low=0.0))

# Every registered strategy class by name, in registration order (`register`).
REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy buildable by its `name` (`build_strategy`) and list it everywhere strategies
    are listed — the settings' choices, the REST schema, the Helm schema, the command lines' help and flags."""
    if cls.name in REGISTRY:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    for param in cls.parameters:
        twin = next((p for other in REGISTRY.values() for p in other.parameters if p.name == param.name), None)
        if twin is not None and (twin.bounds, twin.choices) != (param.bounds, param.choices):
            raise ValueError(f"parameter {param.name!r} of strategy {cls.name!r} has other bounds than elsewhere")
    REGISTRY[cls.name] = cls
    return cls


def strategy_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def all_params() -> dict[str, Param]:
    """Every parameter of every strategy by name (the first declaration of a shared one)."""
    out: dict[str, Param] = {}
    for cls in REGISTRY.values():
        for param in cls.parameters:
            out.setdefault(param.name, param)
    return out


def param_owners(name: str) -> tuple[str, ...]:
    """The strategies that take parameter `name`."""
    return tuple(s for s, cls in REGISTRY.items() if any(p.name == name for p in cls.parameters))


def param_help(name: str) -> str:
    """`skywork, aer: upper bound of α`: the owners and their docs (and a string parameter's choices), for
    command-line help."""
    owners = param_owners(name)
    declared = [p for s in owners for p in REGISTRY[s].parameters if p.name == name]
    docs = " / ".join(dict.fromkeys(p.doc for p in declared))
    choices = f" ({' | '.join(declared[0].choices)})" if declared and declared[0].choices else ""
    return f"{', '.join(owners)}: {docs}{choices}"


def parse_param(text: str) -> tuple[str, float | str | None]:
    """One `KEY=VALUE` parameter as every command line spells it (the `:`-separated parts of a spec after its name,
    and the old spellings `--param` and `--strategy-param`): a number is a float, `none`/`null` is None (the
    strategy's default), anything else a string. `-` in the key reads as `_`. Raises ValueError for text without
    `=` or a key."""
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


def parse_params(items: Iterable[str], flag: str) -> dict[str, Any]:
    """`KEY=VALUE` items (the old `--param` and `--strategy-param`) as one map, later items winning; a bad item
    raises ValueError naming `flag`."""
    out: dict[str, Any] = {}
    for text in items:
        try:
            key, value = parse_param(text)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None
        out[key] = value
    return out


def parse_spec(text: str) -> tuple[str, dict[str, float | str | None]]:
    """A strategy and its parameters as every command line spells them (`--strategy`, `compare --strategies`,
    `simulate --baseline`): `aer:rho=0.8:weighting=uniform` → ("aer", {"rho": 0.8, "weighting": "uniform"}).
    Raises ValueError for an empty name or a bad `KEY=VALUE` (the strategy itself is checked by `build_strategy`)."""
    name, *pairs = text.strip().split(":")
    if not name:
        raise ValueError(f"empty strategy name in {text!r}")
    return name, dict(parse_param(pair) for pair in pairs)


def format_param(key: str, value: float | str | None) -> str:
    """The `KEY=VALUE` text that `parse_param` reads back as (key, value), floats exactly (repr)."""
    if value is None:
        return f"{key}=none"
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def format_spec(name: str, params: Mapping[str, float | str | None] | None = None) -> str:
    """The spec that `parse_spec` reads back as (name, params): ("aer", {"eta": 0.01}) → `aer:eta=0.01`."""
    return ":".join([name, *(format_param(key, value) for key, value in (params or {}).items())])


def split_params(params: Mapping[str, float | str | None]) -> tuple[dict[str, float | None], dict[str, str | None]]:
    """Numeric and string parameters apart, as settings and gRPC carry them (`params`, `options`); a None (the
    strategy's default, e.g. `target_entropy=none`) goes into both, so that it clears either."""
    numeric: dict[str, float | None] = {}
    options: dict[str, str | None] = {}
    for key, value in params.items():
        if value is None or isinstance(value, str):
            options[key] = value
        if value is None or not isinstance(value, str):
            numeric[key] = None if value is None else float(value)
    return numeric, options


def resolve_strategy(
    spec: str,
    given: Mapping[str, float | str | None] | None = None,
    *,
    defaults: Mapping[str, Mapping[str, float | str]] | None = None,
) -> Strategy:
    """The strategy a command line asks for: `spec` (`NAME[:KEY=VALUE...]`), then `given` over its parameters (the
    old spellings, `--eta 0.01` and `--param eta=0.01`), then `defaults[NAME]` for the parameters neither gave (a
    launcher's own regime: `aerplane up`'s demo η and α_max); a None value counts as not given. Raises ValueError
    naming the parameter."""
    name, params = parse_spec(spec)
    params = {key: value for key, value in {**params, **(given or {})}.items() if value is not None}
    for key, value in (defaults or {}).get(name, {}).items():
        params.setdefault(key, value)
    return build_strategy(name, **params)


def _range_text(param: Param) -> str:
    if param.choices:
        return " | ".join(param.choices)
    b = param.bounds or ParamBounds()
    low = None if b.low is None else f"{'>' if b.low_open else '>='} {b.low:g}"
    if b.integer:
        return f"integer {low}" if low else "integer"
    if low and b.high is not None:
        return f"in {'(' if b.low_open else '['}{b.low:g}, {b.high:g}]"
    return low or (f"<= {b.high:g}" if b.high is not None else "any number")


def parameter_table() -> list[str]:
    """Every strategy, then each of its parameters as `KEY=DEFAULT  (range) doc`, one line each: the parameter
    reference of the command lines' `--help`."""
    width = max((len(format_param(p.name, p.default)) for p in all_params().values()), default=0)
    lines = []
    for name, cls in REGISTRY.items():
        lines.append(f"  {name}: {cls.summary}")
        for p in cls.parameters:
            lines.append(f"    {format_param(p.name, p.default):<{width}}  ({_range_text(p)}) {p.doc}")
    return lines


@dataclass(frozen=True)
class StrategyState:
    """Where a strategy stands after `step` observations.

    alpha: the controller's coefficient (skywork's gate is applied in `Strategy.coefficient`, not here).
    step: observations so far.
    initial_entropy: H_0; None until anchored.
    target_entropy: H*; None until anchored (aer) or for strategies without a target.
    last_entropy: the latest observation; None before the first.
    anchor_sum: sum of the anchoring observations seen so far (aer with anchor_steps > 1).
    integral: aer's integral term I_t (DESIGN §1.3); None until the first post-anchor observation (I starts at α_0).
    filtered_entropy: aer's filtered measurement H̃_t, whose change the derivative term sees; None before it.
    p_term, i_term, d_term: aer's last update split into kp·e_t, I_t and D_t (α_{t+1} is their clipped sum).
    """

    alpha: float
    step: int = 0
    initial_entropy: float | None = None
    target_entropy: float | None = None
    last_entropy: float | None = None
    anchor_sum: float = 0.0
    integral: float | None = None
    filtered_entropy: float | None = None
    p_term: float | None = None
    i_term: float | None = None
    d_term: float | None = None

    @property
    def terms(self) -> tuple[float, float, float] | None:
        """(P, I, D) of the last update, or None before one (or for strategies without them)."""
        if self.p_term is None or self.i_term is None or self.d_term is None:
            return None
        return self.p_term, self.i_term, self.d_term

    def held_at(self, alpha: float) -> StrategyState:
        """This state with α held at `alpha` (a pin or a freeze), the integral with it where there is one, so that
        the controller continues from the held value on release without a jump."""
        return replace(self, alpha=alpha, integral=None if self.integral is None else alpha)

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-safe dict (floats, ints and None)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StrategyState:
        """Inverse of `to_dict`; raises ValueError naming the bad or unknown field. A record written before the PID
        fields existed reads with them unset."""
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
        values["alpha"] = check_finite("state.alpha", data["alpha"])
        values["anchor_sum"] = check_finite("state.anchor_sum", data.get("anchor_sum", 0.0))
        for key in ("initial_entropy", "target_entropy", "last_entropy", "integral", "filtered_entropy"):
            value = data.get(key)
            if value is not None:
                value = check_finite(f"state.{key}", value)
                if value < 0:
                    raise ValueError(f"state.{key}: must be >= 0, got {value!r}")
            values[key] = value
        for key in ("p_term", "i_term", "d_term"):
            value = data.get(key)
            values[key] = None if value is None else check_finite(f"state.{key}", value)
        return cls(**values)


def check_finite(name: str, value: Any) -> float:
    """`value` as a float; ValueError naming `name` unless it is a finite number (a bool is not one)."""
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
    value = check_finite("entropy", entropy)
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
        value = check_finite(f"accuracies[{i}]", acc)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"accuracies[{i}]: must be within [0, 1], got {value!r}")
        out.append(value)
    return out


class Strategy:
    """Base class: validated parameters plus the pure update. Build instances with `build_strategy`.

    A strategy is one subclass with its `name`, its `parameters` and the `@register` decorator; everything that lists
    strategies or their parameters (settings, REST schema, Helm schema, command lines, `simulate`) derives from the
    registry."""

    name: ClassVar[str]
    parameters: ClassVar[tuple[Param, ...]] = ()
    summary: ClassVar[str] = ""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params = dict(params)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {p.name: p.default for p in cls.parameters}

    @classmethod
    def validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        """`params` (every parameter present) checked against the declared bounds and choices, then `_check`."""
        p = dict(params)
        for param in cls.parameters:
            value = p[param.name]
            if value is None:
                continue
            if param.choices:
                if value not in param.choices:
                    raise ValueError(f"{param.name}: must be one of {', '.join(param.choices)}, got {value!r}")
            elif param.bounds is not None and param.bounds.integer:
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                low = param.bounds.low or 0
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ValueError(f"{param.name}: must be an integer >= {low:g}, got {p[param.name]!r}")
                p[param.name] = value
            else:
                b = param.bounds or ParamBounds()
                p[param.name] = _number(param.name, value, low=b.low, high=b.high, low_open=b.low_open)
        cls._check(p)
        return p

    @classmethod
    def _check(cls, p: dict[str, Any]) -> None:
        """Checks across parameters (hook)."""

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

    def anchor_steps(self) -> int:
        """How many first steps only measure the initial policy (no update before the last of them)."""
        return 1

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


def _check_alpha_range(p: dict[str, Any]) -> None:
    if p["alpha_min"] > p["alpha_max"]:
        raise ValueError(f"alpha_min: must be <= alpha_max ({p['alpha_max']!r}), got {p['alpha_min']!r}")
    if not p["alpha_min"] <= p["alpha_init"] <= p["alpha_max"]:
        raise ValueError(
            f"alpha_init: must be within [alpha_min, alpha_max] = [{p['alpha_min']!r}, {p['alpha_max']!r}], "
            f"got {p['alpha_init']!r}"
        )


@register
class NoneStrategy(Strategy):
    name = "none"
    summary = "α ≡ 0"

    def coefficient(self, state: StrategyState) -> float:
        return 0.0


@register
class FixedStrategy(Strategy):
    name = "fixed"
    summary = "α ≡ alpha, λ ≡ 1"
    parameters = (Param("alpha", 1e-3, "the constant α", ParamBounds(low=0.0)),)

    def initial_state(self) -> StrategyState:
        return StrategyState(alpha=self._params["alpha"])

    def coefficient(self, state: StrategyState) -> float:
        return self._params["alpha"]

    def reconcile(self, state: StrategyState) -> StrategyState:
        return replace(state, alpha=self._params["alpha"])


@register
class SkyworkStrategy(Strategy):
    name = "skywork"
    summary = "Skywork-OR1: α ± δ by whether H < H_target, applied only below the target"
    parameters = (
        Param("target_entropy", 0.2, "H_target", TARGET_BOUNDS),
        Param("delta", 1e-4, "the α step", ParamBounds(low=0.0)),
        ALPHA_MIN,
        Param("alpha_max", 5e-3, "upper bound of α", ParamBounds(low=0.0)),
        ALPHA_INIT,
    )

    @classmethod
    def _check(cls, p: dict[str, Any]) -> None:
        if p["target_entropy"] is None:
            raise ValueError("target_entropy: required for strategy 'skywork'")
        _check_alpha_range(p)

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


@register
class AERStrategy(Strategy):
    name = "aer"
    summary = "adaptive entropy regularization: difficulty-weighted λ, anchored H*, PID on α (DESIGN §1)"
    parameters = (
        Param("rho", 0.5, "target H* = rho·H_0", ParamBounds(low=0.0, low_open=True, high=1.0)),
        Param("tau", 0.4, "accuracy threshold of the threshold weighting", ParamBounds(low=0.0, high=1.0)),
        Param("eta", 1e-3, "integral gain: the step of α per unit relative error", ParamBounds(low=0.0)),
        Param("kp", 0.0, "proportional gain on the relative error (H* − H̃)/H*", ParamBounds(low=0.0)),
        Param("kd", 0.0, "derivative gain on the filtered measurement's change, relative to H*", ParamBounds(low=0.0)),
        Param(
            "smoothing",
            0.0,
            "β of the measurement filter H̃ ← β·H̃ + (1 − β)·H (0: none)",
            ParamBounds(low=0.0, high=0.99),
        ),
        ALPHA_MIN,
        Param("alpha_max", 1e-2, "upper bound of α", ParamBounds(low=0.0)),
        ALPHA_INIT,
        Param("anchor_steps", 1, "observations averaged into H_0", ParamBounds(low=1.0, integer=True)),
        Param("weighting", "threshold", "per-prompt weight λ_q", choices=WEIGHTINGS),
        Param("target_entropy", None, "an absolute H* instead of rho·H_0 (unset: anchored)", TARGET_BOUNDS),
    )

    @classmethod
    def _check(cls, p: dict[str, Any]) -> None:
        _check_alpha_range(p)

    def initial_state(self) -> StrategyState:
        return StrategyState(alpha=self._params["alpha_init"])

    def anchor_steps(self) -> int:
        return int(self._params["anchor_steps"])

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
        integral = None if state.integral is None else _clip(state.integral, p["alpha_min"], p["alpha_max"])
        return replace(
            state,
            alpha=_clip(state.alpha, p["alpha_min"], p["alpha_max"]),
            integral=integral,
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
        low, high = p["alpha_min"], p["alpha_max"]
        # DESIGN §1.3. The integral starts at the controller's α: α_0, or where a pin or a record written before the
        # PID terms existed left it. With kp = kd = smoothing = 0 this is clip(α + η·e, α_min, α_max), bit for bit.
        integral = state.alpha if state.integral is None else state.integral
        previous = state.filtered_entropy
        beta = p["smoothing"]
        filtered = h if beta == 0 or previous is None else beta * previous + (1 - beta) * h
        error = _relative_error(target, filtered)
        p_term = p["kp"] * error if p["kp"] > 0 else 0.0
        if p_term == -math.inf:  # a zero target's infinite error: −α_max holds α at its floor and stays storable
            p_term = -high
        d_term = 0.0
        if p["kd"] > 0 and previous is not None and target > 0:
            d_term = -p["kd"] * (filtered - previous) / target
        output = p_term + d_term + integral
        if p["eta"] > 0 and not ((output >= high and error > 0) or (output <= low and error < 0)):
            integral = _clip(integral + p["eta"] * error, low, high)
        else:
            integral = _clip(integral, low, high)
        alpha = _clip(p_term + integral + d_term, low, high)
        return replace(
            state,
            step=step,
            last_entropy=h,
            alpha=alpha,
            target_entropy=target,
            integral=integral,
            filtered_entropy=filtered,
            p_term=p_term,
            i_term=integral,
            d_term=d_term,
        )


def _relative_error(target: float, h: float) -> float:
    """(H* − H)/H*; a zero target (H_0 = 0) makes any positive entropy infinitely far above it → α goes to α_min."""
    if target > 0:
        return (target - h) / target
    return 0.0 if h == 0 else -math.inf


# --- parameter validation
def _number(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    value = check_finite(name, value)
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ValueError(f"{name}: must be {bound}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name}: must be <= {high:g}, got {value!r}")
    return value


def build_strategy(name: str, **params: Any) -> Strategy:
    """The registered strategy `name` (none | fixed | skywork | aer) with `params` over its defaults.

    Raises ValueError naming the parameter for an unknown name or parameter, NaN/inf, or an out-of-range value.
    Numeric parameters may be given as int or float (gRPC carries them as floats: anchor_steps=1.0 is fine);
    `weighting` is a string.
    """
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"strategy: unknown strategy {name!r} (expected one of {', '.join(REGISTRY)})")
    defaults = cls.defaults()
    for key in params:
        if key not in defaults:
            allowed = ", ".join(defaults) or "none"
            raise ValueError(f"{key}: unknown parameter for strategy {name!r} (allowed: {allowed})")
    return cls(cls.validate({**defaults, **params}))


# --- views derived from the registry --------------------------------------------------------------------------------
def _views() -> dict[str, Any]:
    params = all_params()
    return {
        # Every parameter each strategy accepts, with its default. `None` means "not set" (aer's absolute target).
        "STRATEGY_DEFAULTS": {name: cls.defaults() for name, cls in REGISTRY.items()},
        "STRATEGY_NAMES": strategy_names(),
        # The range of each numeric parameter: the coefficient service's REST schema is derived from it.
        "PARAM_BOUNDS": {name: p.bounds or ParamBounds() for name, p in params.items() if p.numeric},
        # The string parameters and their values.
        "OPTION_VALUES": {name: p.choices for name, p in params.items() if not p.numeric},
        # One line on each parameter: the help of the command lines that take them as flags (`up`, `simulate`).
        "PARAM_HELP": {name: param_help(name) for name in params},
    }


def __getattr__(name: str) -> Any:
    """STRATEGY_DEFAULTS, STRATEGY_NAMES, PARAM_BOUNDS, OPTION_VALUES and PARAM_HELP, computed from the registry when
    imported, so a strategy registered before its users import them is in every list they build."""
    views = _views()
    if name in views:
        return views[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
