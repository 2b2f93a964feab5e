"""Launcher subcommands (`aerplane up`, `aerplane compare`, `aerplane report`, `aerplane simulate`): argument parsing
only, every option generated from a settings field (`aerplane.common.flags`); the work is imported when a command
runs.

A strategy is `--strategy NAME[:KEY=VALUE...]`. Its old spellings still work and each logs its replacement: one flag
per strategy parameter (`--eta 0.01`) and the repeatable `--param KEY=VALUE` (`common.flags.add_old_strategy_flags`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from aerplane.common.flags import (  # light: pydantic, no service
    OLD_SPELLINGS,
    HelpFormatter,
    add_old_strategy_flags,
    add_settings_flags,
    strategy_epilog,
)

if TYPE_CHECKING:
    from aerplane.launcher.settings import UpSettings


# Each command's one-line help (in `aerplane --help`) and its description (in its own `--help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "up": (
        "run a whole AER training run on this machine (Redis, all services, learner, eval, report)",
        "Start Redis, the coefficient, reward and generation services and the learner as local "
        "processes, train, evaluate the final policy on a held-out split, and write a report into the run "
        "directory. Ctrl-C stops everything.",
    ),
    "compare": (
        "run a matrix of entropy-control configurations × seeds on one setup and compare them",
        "Run every configuration (a strategy plus parameters) once per seed on one shared setup, one run "
        "after another on a shared Redis and coefficient service; each run is a normal run directory under "
        "OUT/runs/. Writes OUT/report.md, OUT/results.json and overlaid plots. Rerunning the same command (or "
        "`aerplane compare --out OUT`) continues an interrupted comparison; finished runs are never redone.",
    ),
    "report": (
        "write (again) the plots and report.md of a run directory",
        "Reads RUN_DIR/metrics.jsonl (and eval.json, run.json) and writes RUN_DIR/plots/*.png and "
        "RUN_DIR/report.md. Needs no running service.",
    ),
    "simulate": (
        "replay an entropy-control strategy over a synthetic or recorded entropy trace",
        "Print per step the entropy H, target H*, coefficient α and mean prompt weight λ that a "
        "strategy would give, on a synthetic collapsing-entropy trace (closed loop: α slows the collapse) or on a "
        "recorded run's metrics.jsonl (open loop). Tune parameters here before spending GPU hours.",
    ),
}


def _parser(subparsers: argparse._SubParsersAction, name: str, **kw: Any) -> argparse.ArgumentParser:
    help_, description = COMMANDS[name]
    return subparsers.add_parser(name, help=help_, description=description, **kw)


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_up(subparsers)
    _add_compare(subparsers)
    _add_report(subparsers)
    _add_simulate(subparsers)


def _add_up(subparsers: argparse._SubParsersAction) -> None:
    from aerplane.launcher.settings import UpOptions, UpSettings, demo_defaults_text

    p = _parser(
        subparsers,
        "up",
        epilog="The defaults are a CPU demo regime (docs/results/README.md), where entropy collapses within the run "
        "and AER engages. Where they differ from the services' own (launcher.settings.UP_DEFAULTS): "
        f"{demo_defaults_text()}.\n\n" + strategy_epilog(OLD_SPELLINGS),
        formatter_class=HelpFormatter,
    )
    flags = add_settings_flags(p, UpSettings)
    p.set_defaults(func=_up, flags=flags, option_flags=add_settings_flags(p, UpOptions))
    add_old_strategy_flags(p)


def _up(args: argparse.Namespace) -> int:
    import sys

    from aerplane.common.settings import SettingsError

    try:
        cfg = up_settings(args)
    except SettingsError:
        raise  # a flag's or a variable's value: main() reports it, naming the flag
    except ValueError as exc:
        print(f"aerplane up: invalid strategy parameters: {exc}", file=sys.stderr)
        return 2

    from aerplane.launcher.up import run_up

    return run_up(cfg)


def up_settings(args: argparse.Namespace) -> UpSettings:
    """The settings `aerplane up` runs with: the environment, then the flags given (`settings_from_args`: a bad value
    raises SettingsError naming the flag), then the strategy resolved (`UpSettings.with_resolved_strategy`: the old
    spellings' parameters, up's demo ones; a bad parameter raises ValueError). An old spelling then logs its
    replacement."""
    from aerplane.common.flags import old_strategy_params, settings_from_args, warn_old_strategy_flags
    from aerplane.launcher.settings import SECTION, Ports, UpOptions, UpSettings

    options = settings_from_args(UpOptions, args, args.option_flags, section=SECTION)
    extra = {"ports": Ports.free().model_dump() if options.free_ports else {}}
    cfg = settings_from_args(UpSettings, args, args.flags, section=SECTION, extra=extra)
    cfg = cfg.with_resolved_strategy(old_strategy_params(args))
    warn_old_strategy_flags(args, cfg.strategy)
    return cfg


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    from aerplane.launcher.settings import SETUP_FIELDS, CompareOptions, UpSettings

    p = _parser(
        subparsers,
        "compare",
        epilog="example: aerplane compare --strategies none,fixed:alpha=1e-3,fixed:alpha=1e-2,skywork,aer --seeds 0,1",
    )
    matrix = add_settings_flags(
        p.add_argument_group("matrix"), CompareOptions, only=("strategies", "seeds", "matrix", "out")
    )
    s = p.add_argument_group("shared setup (default: the matrix file's setup, else the `aerplane up` defaults)")
    setup = add_settings_flags(s, UpSettings, only=SETUP_FIELDS)
    o = p.add_argument_group("services and view")
    view = add_settings_flags(o, CompareOptions, only=("coefficient_http_port", "live", "keep_checkpoints"))
    p.set_defaults(func=_compare, setup_flags=setup, option_flags=[*matrix, *view])


def _compare(args: argparse.Namespace) -> int:
    from aerplane.launcher.compare import main_from_args

    return main_from_args(args)


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    from aerplane.launcher.settings import ReportOptions

    p = _parser(subparsers, "report")
    p.set_defaults(func=_report, option_flags=add_settings_flags(p, ReportOptions))


def _report(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from aerplane.common.flags import settings_from_args
    from aerplane.launcher.report import ReportError, write_report
    from aerplane.launcher.settings import ReportOptions

    options = settings_from_args(ReportOptions, args, args.option_flags, section="report")
    try:
        if options.config:
            from aerplane.launcher.compare_report import seed_table

            print("\n".join(seed_table([Path(d) for d in options.run_dir], options.config)))
            return 0
        if len(options.run_dir) > 1:
            raise ReportError("one RUN_DIR at a time (several comparison folders go with --config)")
        run_dir = Path(options.run_dir[0])
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


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    from aerplane.launcher.simulate import SimulateOptions, SyntheticTrace

    p = _parser(
        subparsers,
        "simulate",
        epilog=strategy_epilog(OLD_SPELLINGS),
        formatter_class=HelpFormatter,
    )
    options = add_settings_flags(p, SimulateOptions, only=("strategy",))
    add_old_strategy_flags(p)
    t = p.add_argument_group("trace")
    options += add_settings_flags(t, SimulateOptions, only=("from_metrics",))
    trace = add_settings_flags(t, SyntheticTrace)
    f = p.add_argument_group("fitted plant (closed loop, Monte Carlo; docs/results/README.md → 'The fitted plant')")
    plant = ("plant", "fit", "out", "description", "lag_variant", "draws", "horizons", "variant", "baseline")
    options += add_settings_flags(f, SimulateOptions, only=(*plant, "sweep", "max_error", "top", "plot"))
    options += add_settings_flags(p.add_argument_group("output"), SimulateOptions, only=("every", "as_json"))
    p.set_defaults(func=_simulate, trace_flags=trace, option_flags=options)


def _simulate(args: argparse.Namespace) -> int:
    from aerplane.launcher.simulate import main

    return main(args)
