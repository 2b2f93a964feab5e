"""`aerplane simulate`: replay an entropy-control strategy over an entropy trace, before spending GPU hours.

    aerplane simulate                                          # AER defaults on a synthetic collapsing-entropy run
    aerplane simulate --strategy aer --rho 0.6 --eta 2e-3 --steps 80
    aerplane simulate --strategy skywork --param target_entropy=0.4 --param delta=5e-4
    aerplane simulate --from-metrics runs/r1/metrics.jsonl --strategy aer --tau 0.5

Per step it prints the measured entropy H_t, the target H*, the coefficient α_t the learner would use for that step
and the mean prompt weight λ. The strategy code is the one the coefficient service runs (`aerplane.core.strategies`).

Synthetic trace: the policy's entropy collapses geometrically, H_{t+1} = H_t·(1 − decay) + response·α_t·mean λ_t
+ noise·ε_t (ε ~ N(0, 1), H floored at 0), so a positive α visibly slows the collapse and the controller's
effect shows; per-prompt accuracies come from prompts of random difficulty p ~ U(0, 1), each with G samples.
This toy model is for intuition about the controller, not a prediction of a real run.

Recorded trace (`--from-metrics`): each line's `mean_entropy` is H_t and the per-prompt accuracies come from
`prompt_accuracies` (a list) when the learner recorded them, else the step's mean `accuracy` stands in for every
prompt. The recorded entropies do not react to the simulated α (open loop).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from aerplane.common.flags import Flag
from aerplane.core.strategies import (
    PARAM_HELP,
    Strategy,
    StrategyState,
    build_strategy,
    check_accuracies,
    check_entropy,
    parse_param,
)


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


def strategy_from_args(args: argparse.Namespace) -> Strategy:
    """The strategy of the strategy flags (`launcher.entry.add_strategy_flags`): the named ones, then `--param`."""
    params = {name: getattr(args, name) for name in PARAM_HELP if getattr(args, name, None) is not None}
    for text in args.param or []:
        try:
            key, value = parse_param(text)
        except ValueError as exc:
            raise SimulateError(f"--param: {exc}") from None
        params[key] = value
    return build_strategy(args.strategy, **params)


def main(args: argparse.Namespace) -> int:
    from aerplane.common.flags import settings_from_args

    trace = settings_from_args(SyntheticTrace, args, args.trace_flags, section="simulate")
    try:
        strategy = strategy_from_args(args)
        if args.every < 1:
            raise SimulateError(f"--every: must be >= 1, got {args.every}")
        if args.from_metrics:
            steps, entropies, accuracies, per_prompt = load_metrics(Path(args.from_metrics))
            rows = replay(strategy, entropies, accuracies, steps)
            title = f"{args.strategy} replayed over {args.from_metrics} ({len(rows)} steps, open loop)"
            if not per_prompt:
                title += " — λ from the mean accuracy (no prompt_accuracies recorded)"
        else:
            rows = run_synthetic(strategy, trace)
            title = (
                f"{args.strategy} on a synthetic trace "
                f"(H0={trace.initial_entropy}, decay={trace.decay}, seed={trace.seed})"
            )
    except ValueError as exc:  # SimulateError and the strategy's own parameter errors
        print(f"aerplane simulate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
    else:
        print_table(rows, strategy, title, every=args.every)
    return 0
