"""Launcher subcommands (`aerplane up`, `aerplane report`, `aerplane simulate`): argument parsing only; the work is
imported when a command runs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_up(subparsers)
    _add_compare(subparsers)
    _add_report(subparsers)
    _add_simulate(subparsers)


def _add_up(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "up",
        help="run a whole AER training run on this machine (Redis, all services, learner, eval, report)",
        description="Start Redis, the coefficient, reward and generation services and the learner as local "
        "processes, train, evaluate the final policy on a held-out split, and write a report into the run "
        "directory. Ctrl-C stops everything.",
        epilog="The defaults are a CPU demo regime (docs/results/README.md): SmolLM2-135M at lr 2e-4, where entropy "
        "collapses within the run and AER engages; with --strategy aer, η = 0.01 and α_max = 0.03 unless given "
        "(the services' own defaults are DESIGN's 1e-3 and 1e-2, placed for GPU-scale learning rates).",
    )
    from aerplane.common.flags import add_settings_flags
    from aerplane.launcher.settings import UpSettings

    flags = add_settings_flags(p, UpSettings)
    p.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
    _add_strategy_flags(p)
    p.set_defaults(func=_up, flags=flags)


def _up(args: argparse.Namespace) -> int:
    import sys

    from aerplane.common.flags import settings_from_args
    from aerplane.launcher.settings import SECTION, Ports, UpSettings
    from aerplane.launcher.simulate import SimulateError, strategy_from_args
    from aerplane.launcher.up import UP_AER_PARAMS

    if args.strategy == "aer":  # the CPU demo regime's η and α_max unless given (up.UP_AER_PARAMS)
        for name, value in UP_AER_PARAMS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    try:
        strategy = strategy_from_args(args)
    except (ValueError, SimulateError) as exc:
        print(f"aerplane up: invalid strategy parameters: {exc}", file=sys.stderr)
        return 2

    from aerplane.launcher.up import run_up

    extra = {
        "strategy": args.strategy,
        "params": {k: float(v) for k, v in strategy.numeric_params.items()},
        "options": dict(strategy.options),
        "ports": Ports.free().model_dump() if args.free_ports else {},
    }
    return run_up(settings_from_args(UpSettings, args, args.flags, section=SECTION, extra=extra))


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="run a matrix of entropy-control configurations × seeds on one setup and compare them",
        description="Run every configuration (a strategy plus parameters) once per seed on one shared setup, one run "
        "after another on a shared Redis and coefficient service; each run is a normal run directory under "
        "OUT/runs/. Writes OUT/report.md, OUT/results.json and overlaid plots. Rerunning the same command (or "
        "`aerplane compare --out OUT`) continues an interrupted comparison; finished runs are never redone.",
        epilog="example: aerplane compare --strategies none,fixed:alpha=1e-3,fixed:alpha=1e-2,skywork,aer --seeds 0,1",
    )
    m = p.add_argument_group("matrix")
    m.add_argument(
        "--strategies",
        help="comma-separated configurations: NAME[:KEY=VALUE[:KEY=VALUE...]], "
        "e.g. none,fixed:alpha=1e-3,aer:rho=0.8:weighting=uniform",
    )
    m.add_argument("--seeds", help="comma-separated seeds for every configuration (default 0)")
    m.add_argument("--matrix", metavar="FILE", help="TOML or YAML file with setup, seeds and [[config]] tables")
    m.add_argument("--out", help="comparison folder (default runs/compare-<date>-<time>); reuse it to continue")
    from aerplane.common.flags import add_settings_flags
    from aerplane.launcher.settings import SETUP_FIELDS, UpSettings

    s = p.add_argument_group("shared setup (default: the matrix file's setup, else the `aerplane up` defaults)")
    p.set_defaults(setup_flags=add_settings_flags(s, UpSettings, only=SETUP_FIELDS))
    o = p.add_argument_group("services and view")
    o.add_argument(
        "--coefficient-http-port",
        type=int,
        default=None,
        help="REST port of the shared coefficient service (default: a free port)",
    )
    o.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live terminal view per run (default: when stdout is a terminal)",
    )
    o.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep finished runs' checkpoints and every weights version (default: only the final "
        "weights stay; a SmolLM2 run's checkpoints take GBs)",
    )
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from aerplane.launcher.compare import main_from_args

    return main_from_args(args)


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write (again) the plots and report.md of a run directory",
        description="Reads RUN_DIR/metrics.jsonl (and eval.json, run.json) and writes RUN_DIR/plots/*.png and "
        "RUN_DIR/report.md. Needs no running service.",
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        nargs="+",
        help="a run directory (`aerplane up`) or a comparison folder (`aerplane compare`); with --config, one or more "
        "comparison folders",
    )
    p.add_argument(
        "--config",
        action="append",
        metavar="LABEL",
        help="print, instead, the per-seed tracking and held-out table of these configurations across the given "
        "comparison folders, with the mean over every seed (repeatable)",
    )
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from aerplane.launcher.report import ReportError, write_report

    try:
        if args.config:
            from aerplane.launcher.compare_report import seed_table

            print("\n".join(seed_table([Path(d) for d in args.run_dir], args.config)))
            return 0
        if len(args.run_dir) > 1:
            raise ReportError("one RUN_DIR at a time (several comparison folders go with --config)")
        run_dir = Path(args.run_dir[0])
        if (run_dir / "compare.json").exists():
            from aerplane.launcher.compare_report import write_compare_report

            path = write_compare_report(run_dir)
        else:
            path = write_report(run_dir)
    except ReportError as exc:
        print(f"aerplane report: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _add_strategy_flags(p: argparse.ArgumentParser) -> None:
    """--strategy, one flag per strategy parameter (`core.strategies.PARAM_HELP`, dest = the parameter's name) and
    the repeatable `--param KEY=VALUE`; `simulate.strategy_from_args` reads them back."""
    from aerplane.core.strategies import OPTION_VALUES, PARAM_HELP, STRATEGY_NAMES

    # No argparse choices: build_strategy's error names the parameter and its allowed values, in one line.
    names = " | ".join(STRATEGY_NAMES)
    p.add_argument("--strategy", default="aer", help=f"{names} (default aer)")
    g = p.add_argument_group("strategy parameters (defaults: DESIGN §1; only those of the chosen strategy apply)")
    for name, text in PARAM_HELP.items():
        kind = {"metavar": "NAME"} if name in OPTION_VALUES else {"type": float, "metavar": "X"}
        g.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=text, **kind)
    g.add_argument("--param", action="append", metavar="KEY=VALUE", help="any strategy parameter (repeatable)")


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="replay an entropy-control strategy over a synthetic or recorded entropy trace",
        description="Print per step the entropy H, target H*, coefficient α and mean prompt weight λ that a "
        "strategy would give, on a synthetic collapsing-entropy trace (closed loop: α slows the collapse) or on a "
        "recorded run's metrics.jsonl (open loop). Tune parameters here before spending GPU hours.",
    )
    _add_strategy_flags(p)
    from aerplane.common.flags import add_settings_flags
    from aerplane.launcher.simulate import SyntheticTrace

    t = p.add_argument_group("trace")
    t.add_argument("--from-metrics", metavar="PATH", help="replay a recorded run's metrics.jsonl instead")
    p.set_defaults(trace_flags=add_settings_flags(t, SyntheticTrace))
    f = p.add_argument_group("fitted plant (closed loop, Monte Carlo; docs/results/README.md → 'The fitted plant')")
    f.add_argument(
        "--plant",
        metavar="FILE",
        help="a plant file written by --fit, or a preset: reference-cpu (fitted on docs/results), synthetic (the toy "
        "trace above)",
    )
    f.add_argument("--fit", nargs="+", metavar="RUN_DIR", help="fit a plant to recorded run directories")
    f.add_argument("--out", metavar="FILE", help="with --fit: write the fitted plant here")
    f.add_argument("--description", help="with --fit: a line saved in the plant file")
    f.add_argument(
        "--lag-variant",
        type=float,
        action="append",
        metavar="BETA",
        help="with --fit: one more variant per seed refitted at this input lag β (repeatable)",
    )
    f.add_argument("--draws", type=int, default=400, help="noise draws per variant (default 400)")
    f.add_argument("--horizons", default="20,200", help="comma-separated run lengths in steps (default 20,200)")
    f.add_argument("--variant", action="append", metavar="NAME", help="only this variant (repeatable)")
    f.add_argument("--baseline", metavar="SPEC", help="a strategy to compare against, e.g. aer:eta=0.01:alpha_max=0.03")
    f.add_argument("--sweep", action="append", metavar="KEY=LO:HI:N", help="sweep a parameter (repeatable: a grid)")
    f.add_argument("--max-error", type=float, help="with --sweep: the worst-variant error a point must not exceed")
    f.add_argument("--top", type=int, default=20, help="with --sweep: rows to print (default 20)")
    f.add_argument("--plot", metavar="PNG", help="percentile bands of H per variant over the last horizon")
    o = p.add_argument_group("output")
    o.add_argument("--every", type=int, default=1, help="print every N-th step (and the last)")
    o.add_argument("--json", action="store_true", help="one JSON object per step instead of a table")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from aerplane.launcher.simulate import main

    return main(args)
