"""`aerplane simulate`: run an entropy-control strategy against a model of entropy, before spending GPU hours.

    aerplane simulate --plant reference-cpu --strategy aer:kp=0.06:eta=0.002:kd=0.05:smoothing=0.5:alpha_max=0.05 \
        --baseline aer:eta=0.01:alpha_max=0.03                           # Monte Carlo on the fitted plant
    aerplane simulate --plant reference-cpu --strategy aer:alpha_max=0.05 \
        --baseline aer:eta=0.01:alpha_max=0.03 --sweep kp=0:0.1:6          # the gains that work on every variant
    aerplane simulate --fit runs/r1 runs/r2 --out plant.json                # fit a plant to recorded runs
    aerplane simulate --strategy skywork:target_entropy=0.4                # the synthetic toy trace
    aerplane simulate --from-metrics runs/r1/metrics.jsonl --strategy aer  # a recorded run, open loop

The strategy code is the one the coefficient service runs (`aerplane.core.strategies`); `--strategy` is spelled
as on every command line (`NAME[:KEY=VALUE...]`; the old `--eta X` and `--param KEY=VALUE` still work). The options
are the fields of `SimulateOptions` and `SyntheticTrace`.

Fitted plant (`--plant FILE` or a preset, `--fit`): the log-entropy model of `aerplane.launcher.plant`, closed loop,
`--draws` noise draws on every variant, a table per horizon with the tracking error (and its 10–90 % range), the
share within ±20 % of H*, the lowest H/H* and the ratio to `--baseline`; `--sweep KEY=LO:HI:N` (repeatable: a grid)
reports the points whose worst-variant error beats the baseline's (or `--max-error`) at every horizon.

Synthetic trace (the default, or `--plant synthetic`): a toy model, H_{t+1} = H_t·(1 − decay) + response·α_t·mean
λ_t + noise·ε_t (ε ~ N(0, 1), H floored at 0), with per-prompt accuracies from prompts of random difficulty
p ~ U(0, 1), G samples each. It is immediate, additive and 10–40× less noisy than real runs: it shows every
controller in band, so it is for intuition about the controller, not a prediction of a real run.

Recorded trace (`--from-metrics`): each line's `mean_entropy` is H_t and the per-prompt accuracies come from
`prompt_accuracies` (a list) when the learner recorded them, else the step's mean `accuracy` stands in for every
prompt. The recorded entropies do not react to the simulated α (open loop).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aerplane.common.flags import STRATEGY_FLAG, Flag
from aerplane.core.strategies import (
    STRATEGY_DEFAULTS,
    Strategy,
    StrategyState,
    build_strategy,
    check_accuracies,
    check_entropy,
    resolve_strategy,
)
from aerplane.core.strategies import parse_spec as parse_strategy


class SimulateError(ValueError):
    """Bad input: one clear line for the user."""


@dataclass(frozen=True)
class StepRow:
    step: int
    entropy: float  # H_t measured in this step
    alpha: float  # α_t the learner uses in this step
    mean_weight: float | None  # mean λ_q over this step's prompts
    target_entropy: float | None  # H* after this step's observation
    initial_entropy: float | None  # H_0 after this step's observation
    next_alpha: float  # α_{t+1}
    accuracy: float | None  # mean prompt accuracy of this step


class SyntheticTrace(BaseModel):
    """The toy entropy model of the module docstring; `aerplane simulate`'s trace flags come from these fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    steps: int = Field(60, ge=1)
    """synthetic: steps"""
    initial_entropy: Annotated[float, Flag("--h0")] = Field(1.5, ge=0, allow_inf_nan=False)
    """synthetic: initial entropy in nats"""
    decay: float = Field(0.04, ge=0, le=1)
    """synthetic: entropy lost per step, as a fraction"""
    response: float = Field(10.0, ge=0, allow_inf_nan=False)
    """synthetic: entropy gained per unit α·λ"""
    noise: float = Field(0.01, ge=0, allow_inf_nan=False)
    """synthetic: standard deviation of the per-step noise"""
    prompts: int = Field(16, ge=1)
    """synthetic: prompts per step"""
    group_size: int = Field(8, ge=1)
    """synthetic: samples per prompt"""
    seed: int = 0
    """synthetic: random seed"""


class SimulateOptions(BaseModel):
    """`aerplane simulate`'s options besides the synthetic trace's (`SyntheticTrace`); their flags come from here."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    strategy: Annotated[str, STRATEGY_FLAG] = "aer"
    """The entropy-control strategy to simulate."""
    from_metrics: Annotated[Path | None, Flag(metavar="PATH")] = None
    """Replay a recorded run's metrics.jsonl instead."""
    plant: Annotated[str | None, Flag(metavar="FILE")] = None
    """A plant file written by --fit, or a preset: reference-cpu (fitted on docs/results), synthetic (the toy trace
    above)."""
    fit: Annotated[list[str], Flag(metavar="RUN_DIR", nargs="+")] = Field(default_factory=list)
    """Fit a plant to recorded run directories."""
    out: Annotated[str | None, Flag(metavar="FILE")] = None
    """With --fit: write the fitted plant here."""
    description: str | None = None
    """With --fit: a line saved in the plant file."""
    lag_variant: Annotated[list[float], Flag(metavar="BETA")] = Field(default_factory=list)
    """With --fit: one more variant per seed refitted at this input lag β (repeatable)."""
    draws: int = Field(400, ge=1)
    """Noise draws per variant."""
    horizons: str = "20,200"
    """Comma-separated run lengths in steps."""
    variant: Annotated[list[str], Flag(metavar="NAME")] = Field(default_factory=list)
    """Only this variant (repeatable)."""
    baseline: Annotated[str | None, Flag(metavar="SPEC")] = None
    """A strategy to compare against, e.g. aer:eta=0.01:alpha_max=0.03."""
    sweep: Annotated[list[str], Flag(metavar="KEY=LO:HI:N")] = Field(default_factory=list)
    """Sweep a parameter (repeatable: a grid)."""
    max_error: float | None = None
    """With --sweep: the worst-variant error a point must not exceed."""
    top: int = Field(20, ge=0)
    """With --sweep: rows to print."""
    plot: Annotated[str | None, Flag(metavar="PNG")] = None
    """Percentile bands of H per variant over the last horizon."""
    every: int = Field(1, ge=1)
    """Print every N-th step (and the last)."""
    as_json: Annotated[bool, Flag("--json")] = False
    """One JSON object per step instead of a table."""

    @field_validator("strategy", "baseline")
    @classmethod
    def _spec_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            parse_strategy(value)  # the name and the values are checked with the strategy, in one line
        return value


def step_row(
    strategy: Strategy, state: StrategyState, step: int, entropy: float, accuracies: list[float]
) -> tuple[StepRow, StrategyState]:
    """One step: the α and λ the learner would use, then the observation. Returns (row, new state)."""
    alpha = strategy.coefficient(state)
    weights = strategy.prompt_weights(state, accuracies)
    new = strategy.observe(state, entropy=entropy)
    row = StepRow(
        step=step,
        entropy=entropy,
        alpha=alpha,
        mean_weight=sum(weights) / len(weights) if weights else None,
        target_entropy=new.target_entropy,
        initial_entropy=new.initial_entropy,
        next_alpha=strategy.coefficient(new),
        accuracy=sum(accuracies) / len(accuracies) if accuracies else None,
    )
    return row, new


def replay(
    strategy: Strategy, entropies: list[float], accuracies: list[list[float]], steps: list[int] | None = None
) -> list[StepRow]:
    """Open loop: the recorded entropies, whatever α the strategy picks."""
    state = strategy.initial_state()
    rows = []
    for i, (h, accs) in enumerate(zip(entropies, accuracies, strict=True)):
        row, state = step_row(strategy, state, steps[i] if steps else i, h, accs)
        rows.append(row)
    return rows


def run_synthetic(strategy: Strategy, trace: SyntheticTrace) -> list[StepRow]:
    """Closed loop on the toy entropy model of the module docstring."""
    rng = random.Random(trace.seed)
    state = strategy.initial_state()
    h = trace.initial_entropy
    rows = []
    for step in range(trace.steps):
        accs = []
        for _ in range(trace.prompts):
            p = rng.random()
            accs.append(sum(rng.random() < p for _ in range(trace.group_size)) / trace.group_size)
        row, state = step_row(strategy, state, step, h, accs)
        rows.append(row)
        bonus = trace.response * row.alpha * (row.mean_weight or 0.0)
        h = max(0.0, h * (1.0 - trace.decay) + bonus + trace.noise * rng.gauss(0.0, 1.0))
    return rows


def load_metrics(path: Path) -> tuple[list[int], list[float], list[list[float]], bool]:
    """(steps, entropies, per-step prompt accuracies, whether per-prompt accuracies were recorded)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SimulateError(f"--from-metrics: cannot read {path}: {exc.strerror or exc}") from None
    by_step: dict[int, dict[str, Any]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(text.splitlines()):
                continue  # a last line cut short by a crash
            raise SimulateError(f"{path}:{n}: not a JSON object") from None
        if not isinstance(record, dict):
            raise SimulateError(f"{path}:{n}: not a JSON object")
        step = record.get("step", len(by_step))
        if isinstance(step, bool) or not isinstance(step, int):
            raise SimulateError(f"{path}:{n}: step: must be an integer, got {step!r}")
        by_step[step] = {**record, "_line": n}  # the last record of a step wins (a resumed run)
    if not by_step:
        raise SimulateError(f"{path}: no steps recorded")
    steps, entropies, accuracies, per_prompt = [], [], [], True
    for step in sorted(by_step):
        record = by_step[step]
        where = f"{path}:{record['_line']}"
        try:
            entropies.append(check_entropy(record.get("mean_entropy")))
        except ValueError as exc:
            raise SimulateError(f"{where}: mean_{exc}") from None
        raw = record.get("prompt_accuracies")
        if raw is None:
            per_prompt = False
            raw = [] if record.get("accuracy") is None else [record["accuracy"]]
        if not isinstance(raw, list):
            raise SimulateError(f"{where}: prompt_accuracies: must be a list")
        try:
            accuracies.append(check_accuracies(raw))
        except ValueError as exc:
            raise SimulateError(f"{where}: {exc}") from None
        steps.append(step)
    return steps, entropies, accuracies, per_prompt


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def print_table(rows: list[StepRow], strategy: Strategy, title: str, every: int = 1) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=repr(strategy))
    for col in ("step", "H", "H*", "α", "mean λ", "acc"):
        table.add_column(col, justify="right")
    for i, row in enumerate(rows):
        if i % every and i != len(rows) - 1:
            continue
        table.add_row(
            str(row.step),
            _fmt(row.entropy),
            _fmt(row.target_entropy),
            f"{row.alpha:.3e}",
            _fmt(row.mean_weight, 3),
            _fmt(row.accuracy, 3),
        )
    console = Console()
    console.print(table)
    last = rows[-1]
    console.print(
        f"H_0 = {_fmt(last.initial_entropy)}, H* = {_fmt(last.target_entropy)}, final H = {_fmt(last.entropy)}, "
        f"next α = {last.next_alpha:.3e}"
    )


def strategy_from_args(options: SimulateOptions, args: argparse.Namespace) -> Strategy:
    """The strategy of `--strategy`, with the old spellings' parameters over its own (`--eta X`, `--param
    KEY=VALUE`: `common.flags.add_old_strategy_flags`; they log their replacement once the strategy is valid)."""
    from aerplane.common.flags import old_strategy_params, warn_old_strategy_flags

    strategy = resolve_strategy(options.strategy, old_strategy_params(args))
    warn_old_strategy_flags(args, strategy.name)
    return strategy


def describe(strategy: Strategy | None) -> str:
    """`aer(eta=0.002, kp=0.06)`: the strategy with the parameters that differ from its defaults."""
    if strategy is None:
        return "none given"
    defaults = STRATEGY_DEFAULTS[strategy.name]
    changed = [f"{k}={v!r}" for k, v in strategy.params.items() if v != defaults.get(k)]
    return f"{strategy.name}({', '.join(changed)})"


def parse_spec(text: str, flag: str) -> Strategy:
    """`aer:eta=0.01:alpha_max=0.03` (compare's spelling) as a strategy."""
    try:
        name, params = parse_strategy(text)
        return build_strategy(name, **params)
    except ValueError as exc:
        raise SimulateError(f"{flag} {text!r}: {exc}") from None


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """`KEY=LO:HI:N` → (key, N evenly spaced values from LO to HI)."""
    key, sep, spec = text.partition("=")
    parts = spec.split(":")
    try:
        if not sep or len(parts) != 3:
            raise ValueError
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise SimulateError(f"--sweep: expected KEY=LO:HI:N, got {text!r}") from None
    if n < 1 or (n == 1 and lo != hi):
        raise SimulateError(f"--sweep {text!r}: N must be >= 1 (and 1 only with LO = HI)")
    values = [lo] if n == 1 else [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    return key.strip().replace("-", "_"), [round(v, 12) for v in values]


def parse_horizons(text: str) -> list[int]:
    try:
        horizons = [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise SimulateError(f"--horizons: expected comma-separated step counts, got {text!r}") from None
    if not horizons or any(h < 2 for h in horizons):
        raise SimulateError(f"--horizons: every horizon must be >= 2 steps, got {text!r}")
    return horizons


def fit_main(args: SimulateOptions) -> int:
    from aerplane.launcher.plant import fit_plant

    plant = fit_plant([Path(d) for d in args.fit], description=args.description or "", lag_variants=args.lag_variant)
    f = plant.fit
    print(f"fitted on {len(f['runs'])} runs, {f['transitions']} transitions (z = log H, m = lagged α·λ̄)")
    print(f"  k = {plant.k:.4f}  (drift toward each seed's floor exp(a/k))")
    print(f"  g = {plant.g:.3f}  (Δ log H per unit of lagged α·λ̄)")
    profile = f["beta_profile"]
    worst_beta = max(profile, key=profile.get)
    print(
        f"  β = {plant.beta:g}   (input lag; residual sum of squares {profile[f'{plant.beta:g}']:.3f}, against "
        f"{profile[worst_beta]:.3f} at the worst β on the grid, {worst_beta}: the closer, the less the runs say)"
    )
    print(f"  noise σ(z) = max({plant.sigma0:.4f} + {plant.sigma1:.4f}·z, 0.02) at {plant.reference_samples} samples")
    print(f"  residual SD {f['residual_sd']:.4f}, explained variance of Δ log H {f['explained_variance']:.3f}")
    for v in plant.variants:
        own = f" (k {v.k:.3f}, g {v.g:.2f}, β {v.beta:g})" if v.beta is not None else ""
        floor = math.exp(v.a / (v.k or plant.k)) if (v.k or plant.k) > 0 else math.nan
        print(f"  {v.name}: a = {v.a:.4f}, floor H = {floor:.3f}, H_0 = {v.h0:.3f}, accuracy {v.accuracy:.2f}{own}")
    if args.out:
        plant.save(Path(args.out))
        print(f"wrote {args.out}")
    return 0


def plant_main(args: SimulateOptions, strategy: Strategy, seed: int) -> int:
    """Closed loop on a fitted plant: Monte Carlo table per variant and horizon, with the baseline beside it."""
    from aerplane.launcher.plant import PlantModel, evaluate, with_variants

    if "target_entropy" not in STRATEGY_DEFAULTS[strategy.name]:
        raise SimulateError(
            f"--plant: strategy {strategy.name!r} has no target entropy to track; use aer or skywork (for the "
            "uncontrolled plant: --strategy aer --alpha-max 0)"
        )
    plant = PlantModel.load(Path(args.plant))
    if args.variant:
        plant = with_variants(plant, args.variant)
    horizons = parse_horizons(args.horizons)
    baseline = parse_spec(args.baseline, "--baseline") if args.baseline else None
    if args.sweep:
        return sweep_main(args, plant, strategy, baseline, horizons, seed)
    rows = []
    traces = {}
    for horizon in horizons:
        mine, traces[horizon] = evaluate(plant, strategy, horizon, draws=args.draws, seed=seed)
        base = evaluate(plant, baseline, horizon, draws=args.draws, seed=seed)[0] if baseline else None
        rows.append((horizon, mine, base))
    if args.as_json:
        for _, mine, base in rows:
            for i, score in enumerate(mine):
                record = {"strategy": strategy.name, "params": strategy.params, **asdict(score)}
                if base:
                    record["baseline"] = asdict(base[i])
                print(json.dumps(record))
    else:
        print_plant_table(plant, strategy, baseline, rows, args.draws)
    if args.plot:
        plot_bands(traces[horizons[-1]], Path(args.plot), f"{describe(strategy)} on {args.plant}")
        print(f"wrote {args.plot}")
    return 0


def print_plant_table(plant: Any, strategy: Strategy, baseline: Strategy | None, rows: list[Any], draws: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from aerplane.launcher.plant import worst

    console = Console(width=200)
    title = f"{describe(strategy)} on the fitted plant ({draws} noise draws per variant)"
    table = Table(title=title, caption=f"baseline: {describe(baseline)}" if baseline else None)
    cols = ["steps", "variant", "track err (p10–p90)", "in ±20 %", "err / in ±20 % from α>0", "min H/H*"]
    if baseline:
        cols += ["baseline err", "baseline in ±20 %", "err ratio"]
    for col in cols:
        table.add_column(col, justify="right")
    for horizon, mine, base in rows:
        for i, s in enumerate(mine):
            cells = [
                str(horizon),
                s.variant,
                f"{s.error:.3f} ({s.error_p10:.2f}–{s.error_p90:.2f})",
                f"{s.in_band:.2f}",
                f"{s.error_alpha:.3f} / {s.in_band_alpha:.2f}",
                f"{s.min_ratio:.2f}",
            ]
            if base:
                b = base[i]
                cells += [f"{b.error:.3f}", f"{b.in_band:.2f}", f"{s.error / b.error:.2f}"]
            table.add_row(*cells)
        worst_mine = worst(mine)
        cells = [str(horizon), "worst variant", f"{worst_mine:.3f}", f"{min(s.in_band for s in mine):.2f}", "", ""]
        if base:
            worst_base = worst(base)
            cells += [f"{worst_base:.3f}", f"{min(b.in_band for b in base):.2f}", f"{worst_mine / worst_base:.2f}"]
        table.add_row(*cells, style="bold")
    console.print(table)
    console.print(
        "track err: mean |H − H*|/H* from the first step where H ≤ 1.2·H*; 'from α>0': the compare report's "
        "definition (from α's first positive step)."
    )


def sweep_main(
    args: SimulateOptions,
    plant: Any,
    strategy: Strategy,
    baseline: Strategy | None,
    horizons: list[int],
    seed: int,
) -> int:
    """Every point of the product of the `--sweep` ranges on every variant; a point *works* when its worst-variant
    tracking error is at most `--max-error` at every horizon, or, without it, the baseline's worst-variant error."""
    import itertools

    from aerplane.launcher.plant import evaluate, worst

    grid = [parse_sweep(text) for text in args.sweep]
    keys = [k for k, _ in grid]
    bound: dict[int, float] = {}
    for horizon in horizons:
        if args.max_error is not None:
            bound[horizon] = args.max_error
        elif baseline is not None:
            bound[horizon] = worst(evaluate(plant, baseline, horizon, draws=args.draws, seed=seed)[0])
        else:
            raise SimulateError("--sweep: give --baseline or --max-error (what a point must beat to work)")
    results = []
    points = list(itertools.product(*(values for _, values in grid)))
    for n, values in enumerate(points, start=1):
        changes = dict(zip(keys, values, strict=True))
        if "alpha_min" in changes and "alpha_init" not in changes:  # α_0 follows a floor swept above it
            changes["alpha_init"] = max(strategy.params.get("alpha_init", 0.0), changes["alpha_min"])
        try:
            candidate = strategy.with_params(**changes)
        except ValueError as exc:
            raise SimulateError(f"--sweep {changes}: {exc}") from None
        errors = {h: worst(evaluate(plant, candidate, h, draws=args.draws, seed=seed)[0]) for h in horizons}
        works = all(errors[h] <= bound[h] for h in horizons)
        score = max(errors[h] / bound[h] for h in horizons)
        results.append({"params": changes, "worst_error": errors, "works": works, "score": score})
        if not args.as_json and sys.stderr.isatty():
            print(f"\r{n}/{len(points)}", end="", file=sys.stderr, flush=True)
    results.sort(key=lambda r: r["score"])
    if args.as_json:
        for r in results:
            print(json.dumps({**r, "worst_error": {str(h): e for h, e in r["worst_error"].items()}}))
        return 0
    print_sweep(results, keys, horizons, bound, baseline, args)
    return 0


def print_sweep(
    results: list[dict[str, Any]],
    keys: list[str],
    horizons: list[int],
    bound: dict[int, float],
    baseline: Strategy | None,
    args: SimulateOptions,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    against = f"--max-error {args.max_error}" if args.max_error is not None else f"the baseline {describe(baseline)}"
    table = Table(
        title=f"sweep: {len(results)} points × every variant, {args.draws} draws; works = worst-variant tracking error "
        f"≤ {against}'s at every horizon ({', '.join(f'{h}: {bound[h]:.3f}' for h in horizons)})"
    )
    for col in [*keys, *(f"worst err {h}" for h in horizons), "score", "works"]:
        table.add_column(col, justify="right")
    for r in results[: args.top]:
        table.add_row(
            *(f"{r['params'][k]:g}" for k in keys),
            *(f"{r['worst_error'][h]:.3f}" for h in horizons),
            f"{r['score']:.3f}",
            "yes" if r["works"] else "no",
        )
    console.print(table)
    working = [r for r in results if r["works"]]
    console.print(f"{len(working)} of {len(results)} points work on every variant.")
    for k in keys:
        values = sorted({r["params"][k] for r in working})
        if values:
            console.print(f"  {k}: works from {values[0]:g} to {values[-1]:g} ({', '.join(f'{v:g}' for v in values)})")
    console.print("score: the largest ratio of worst-variant error to the bound over the horizons (lower is better).")


def plot_bands(traces: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """H per step with its 10–90 % and 25–75 % bands over the draws, one panel per variant, H* dashed."""
    import numpy as np

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SimulateError("--plot needs matplotlib (pip install 'aerplane[train]')") from None
    names = list(traces)
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names, strict=False):
        h, target = traces[name]["H"], traces[name]["target"]
        steps = np.arange(h.shape[1])
        p10, p25, p50, p75, p90 = np.nanpercentile(h, [10, 25, 50, 75, 90], axis=0)
        ax.fill_between(steps, p10, p90, alpha=0.2, color="C0", label="10–90 %")
        ax.fill_between(steps, p25, p75, alpha=0.35, color="C0", label="25–75 %")
        ax.plot(steps, p50, color="C0", label="median H")
        star = np.nanmedian(target, axis=0)
        ax.plot(steps, star, "k--", lw=1, label="H*")
        ax.fill_between(steps, 0.8 * star, 1.2 * star, color="k", alpha=0.08, label="±20 % of H*")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("H (nats)")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    from aerplane.common.flags import settings_from_args
    from aerplane.launcher.plant import PlantError

    trace = settings_from_args(SyntheticTrace, args, args.trace_flags, section="simulate")
    options = settings_from_args(SimulateOptions, args, args.option_flags, section="simulate")
    try:
        if options.fit:
            return fit_main(options)
        strategy = strategy_from_args(options, args)
        if options.sweep and not options.plant:
            raise SimulateError("--sweep: runs on a fitted plant; give --plant FILE (or the preset reference-cpu)")
        if options.plant and options.plant != "synthetic":
            return plant_main(options, strategy, trace.seed)
        if options.from_metrics:
            steps, entropies, accuracies, per_prompt = load_metrics(options.from_metrics)
            rows = replay(strategy, entropies, accuracies, steps)
            title = f"{strategy.name} replayed over {options.from_metrics} ({len(rows)} steps, open loop)"
            if not per_prompt:
                title += " — λ from the mean accuracy (no prompt_accuracies recorded)"
        else:
            rows = run_synthetic(strategy, trace)
            title = (
                f"{strategy.name} on the synthetic toy trace (H0={trace.initial_entropy}, decay={trace.decay}, "
                f"seed={trace.seed}; immediate, additive and far less noisy than real runs: for intuition, not a "
                "prediction — use --plant reference-cpu for the plant fitted to real runs)"
            )
    except (ValueError, PlantError) as exc:  # SimulateError, PlantError and the strategy's own parameter errors
        print(f"aerplane simulate: {exc}", file=sys.stderr)
        return 2
    if options.as_json:
        for row in rows:
            print(json.dumps(asdict(row)))
    else:
        print_table(rows, strategy, title, every=options.every)
    return 0
