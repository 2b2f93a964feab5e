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
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aerplane.core.strategies import Strategy, StrategyState, build_strategy, check_accuracies, check_entropy

# flag dest -> build_strategy parameter name
PARAM_FLAGS = {
    "rho": "rho",
    "tau": "tau",
    "eta": "eta",
    "alpha_min": "alpha_min",
    "alpha_max": "alpha_max",
    "alpha_init": "alpha_init",
    "anchor_steps": "anchor_steps",
    "weighting": "weighting",
    "target_entropy": "target_entropy",
    "alpha": "alpha",
    "delta": "delta",
}


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


@dataclass(frozen=True)
class SyntheticTrace:
    steps: int = 60
    initial_entropy: float = 1.5
    decay: float = 0.04
    response: float = 10.0
    noise: float = 0.01
    prompts: int = 16
    group_size: int = 8
    seed: int = 0

    def validate(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "h0": self.initial_entropy >= 0 and math.isfinite(self.initial_entropy),
            "decay": 0 <= self.decay <= 1,
            "response": self.response >= 0 and math.isfinite(self.response),
            "noise": self.noise >= 0 and math.isfinite(self.noise),
            "prompts": self.prompts >= 1,
            "group_size": self.group_size >= 1,
        }
        for flag, ok in checks.items():
            if not ok:
                value = {"h0": self.initial_entropy}.get(flag, getattr(self, flag, None))
                raise SimulateError(f"--{flag.replace('_', '-')}: out of range: {value!r}")


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings → parameters: numbers as float, `none` as None, anything else as the string."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise SimulateError(f"--param: expected key=value, got {pair!r}")
        raw = raw.strip()
        if raw.lower() in ("none", "null"):
            params[key] = None
            continue
        try:
            params[key] = float(raw)
        except ValueError:
            params[key] = raw
    return params


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
    trace.validate()
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
    params = {name: getattr(args, dest) for dest, name in PARAM_FLAGS.items() if getattr(args, dest, None) is not None}
    params.update(parse_params(args.param or []))
    return build_strategy(args.strategy, **params)


def main(args: argparse.Namespace) -> int:
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
            trace = SyntheticTrace(
                steps=args.steps,
                initial_entropy=args.h0,
                decay=args.decay,
                response=args.response,
                noise=args.noise,
                prompts=args.prompts,
                group_size=args.group_size,
                seed=args.seed,
            )
            rows = run_synthetic(strategy, trace)
            title = f"{args.strategy} on a synthetic trace (H0={args.h0}, decay={args.decay}, seed={args.seed})"
    except ValueError as exc:  # SimulateError and the strategy's own parameter errors
        print(f"aerplane simulate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
    else:
        print_table(rows, strategy, title, every=args.every)
    return 0
