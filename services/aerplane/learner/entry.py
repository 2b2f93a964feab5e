"""`aerplane learner train`: launch the learner (DDP or FSDP2) under torchrun (light: no torch until it runs).

One node, N processes (gloo on CPU, NCCL on GPUs)::

    aerplane learner train --nproc-per-node 2 --run-id exp1 --model smollm2-135m --steps 100
    aerplane learner train --nproc-per-node 8 --parallel fsdp --dtype bfloat16 --model /models/qwen2.5-7b ...

runs ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m aerplane.learner --run-id exp1 ...``.
The worker entrypoint, ``python -m aerplane.learner`` (or ``torchrun ... -m aerplane.learner``), takes the same
flags as `train` minus the launcher ones, and also runs as a single process without torchrun.

Several nodes use torchrun's c10d rendezvous: start the same command on every node with the same rendezvous
endpoint (host:port of any node reachable by all; its port free) and id, e.g. on each of 2 nodes with 8 GPUs::

    aerplane learner train --nnodes 2 --nproc-per-node 8 --rdzv-endpoint node0.example:29400 --rdzv-id exp1 ...

(equivalently ``torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint node0.example:29400
--rdzv_id exp1 -m aerplane.learner ...``). Rank 0 — wherever the rendezvous places it — talks to Redis and the
coefficient service and serves /metrics; every node must see the same checkpoint and weights folders (shared
volume) for `--resume`. The world size must divide `batch.prompts_per_step`; that is checked before launching.

Settings come from `AERPLANE_*` variables (see `aerplane.learner.settings`); a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aerplane.common.flags import STRATEGY_FLAG

FLAGS = {"strategy.name": STRATEGY_FLAG}  # LearnerSettings' flags spelled here: the strategy with its parameters
_STRATEGY_DEST = "setting__strategy__name"  # the dest of `--strategy` (common.flags: the key strategy.name)
STRATEGY_PARAM_FLAG = "--strategy-param"  # the old spelling of `--strategy NAME:KEY=VALUE`: still read, and logged
OLD_SPELLING = f"The old spelling {STRATEGY_PARAM_FLAG} eta=0.01 still works and logs its replacement."


def add_worker_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags shared by `aerplane learner train` and `python -m aerplane.learner`: one per `LearnerSettings`
    option (common.flags), `--strategy NAME[:KEY=VALUE...]` taking the strategy's parameters too (`FLAGS`), plus
    the old `--strategy-param KEY=VALUE`."""
    from aerplane.common.flags import add_settings_flags
    from aerplane.learner.settings import LearnerSettings

    flags = add_settings_flags(parser, LearnerSettings, flags=FLAGS)
    parser.set_defaults(worker_flags=flags)
    parser.add_argument(
        STRATEGY_PARAM_FLAG,
        dest="strategy_param",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="--strategy STRATEGY:NAME=VALUE in the old spelling (repeatable; it still works and logs the new one)",
    )


def _given_strategy(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """The strategy given on the command line: its name (None when only the environment or the default names it)
    and its parameters, `--strategy`'s and then the old `--strategy-param`'s. Raises SettingsError naming the flag
    of a bad KEY=VALUE."""
    from aerplane.common.settings import SettingsError
    from aerplane.core.strategies import parse_params, parse_spec

    spec = getattr(args, _STRATEGY_DEST, None)
    old = getattr(args, "strategy_param", None) or []
    try:
        name, params = parse_spec(spec) if spec else (None, {})
    except ValueError as exc:
        raise SettingsError(f"learner.strategy: --strategy: {exc}") from None
    try:
        params.update(parse_params(old, STRATEGY_PARAM_FLAG))
    except ValueError as exc:
        raise SettingsError(f"learner.strategy: {exc}") from None
    if old and name is None:  # the new spelling names the strategy: the one the environment (or the default) sets
        name = _configured_strategy()
    return name, params


def _configured_strategy() -> str:
    from aerplane.common.settings import SettingsError, load_settings
    from aerplane.learner.settings import LearnerSettings, StrategySettings

    try:
        return load_settings(LearnerSettings).strategy.name
    except SettingsError:  # reported when the settings are built
        return StrategySettings().name


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as a nested dict for `load_settings` (flags not given are left out). A strategy
    parameter set to `none` is the strategy's default, over whatever the environment set (either kind)."""
    from aerplane.common.flags import given_overrides, set_dotted, warn_old_spelling
    from aerplane.core.strategies import format_spec, split_params

    out = given_overrides(args, [spec for spec in args.worker_flags if spec.dest != _STRATEGY_DEST])
    name, params = _given_strategy(args)
    if getattr(args, "strategy_param", None):
        warn_old_spelling([STRATEGY_PARAM_FLAG], f"--strategy {format_spec(name or '', params)}")
    if name is not None:
        set_dotted(out, "strategy.name", name)
    numeric, options = split_params(params)
    for key, value in numeric.items():
        set_dotted(out, f"strategy.params.{key}", value)
    for key, value in options.items():
        set_dotted(out, f"strategy.options.{key}", value)
    return out


def worker_argv(args: argparse.Namespace) -> list[str]:
    """Re-emit the worker flags the user gave, for the torchrun command line (the strategy in its one spelling)."""
    from aerplane.common.flags import given_argv
    from aerplane.core.strategies import format_spec

    argv = given_argv(args, [spec for spec in args.worker_flags if spec.dest != _STRATEGY_DEST])
    name, params = _given_strategy(args)
    return argv + (["--strategy", format_spec(name, params)] if name is not None else [])


def launch_settings(args: argparse.Namespace) -> Torchrun:
    """The torchrun flags given to `aerplane learner train`, validated (SettingsError names the flag)."""
    from aerplane.common.flags import flag_labels, given_overrides
    from aerplane.common.settings import load_settings

    specs = args.launch_flags
    return load_settings(Torchrun, given_overrides(args, specs), section="learner", labels=flag_labels(specs))


def torchrun_argv(args: argparse.Namespace) -> list[str]:
    """The full torchrun command for `aerplane learner train`: its launch flags, then the worker flags given."""
    launch = launch_settings(args)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(launch.nproc_per_node)]
    if launch.nnodes == 1 and not launch.rdzv_endpoint:
        cmd.append("--standalone")
    else:
        cmd += ["--nnodes", str(launch.nnodes), "--rdzv_backend", "c10d"]
        cmd += ["--rdzv_endpoint", launch.rdzv_endpoint or "127.0.0.1:29400"]
        cmd += ["--rdzv_id", launch.rdzv_id or "aerplane"]
    if launch.max_restarts:
        cmd += ["--max_restarts", str(launch.max_restarts)]
    return [*cmd, "-m", "aerplane.learner", *worker_argv(args)]


class Torchrun(BaseModel):
    """How `aerplane learner train` starts torchrun (its flags; the learner's own settings are LearnerSettings)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    nproc_per_node: int = Field(1, ge=1)
    """Worker processes on this node."""
    nnodes: int = Field(1, ge=1)
    """Nodes taking part."""
    rdzv_endpoint: str | None = None
    """c10d rendezvous host:port (multi-node; default 127.0.0.1:29400 there)."""
    rdzv_id: str | None = None
    """Rendezvous id shared by the nodes (default aerplane)."""
    max_restarts: int = Field(0, ge=0)
    """torchrun worker-group restarts."""
    dry_run: bool = False
    """Print the torchrun command and exit."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from aerplane.common.flags import HelpFormatter, add_settings_flags, strategy_epilog

    learner = subparsers.add_parser(
        "learner",
        help="the learner (DDP or FSDP2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = learner.add_subparsers(dest="learner_command", metavar="COMMAND", required=True)
    train = sub.add_parser(
        "train",
        help="train under torchrun (launches the worker processes)",
        epilog=strategy_epilog(OLD_SPELLING),
        formatter_class=HelpFormatter,
    )
    train.set_defaults(launch_flags=add_settings_flags(train.add_argument_group("launcher (torchrun)"), Torchrun))
    add_worker_flags(train.add_argument_group("learner"))  # type: ignore[arg-type]
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    import subprocess

    from aerplane.common.flags import flag_labels
    from aerplane.common.settings import load_settings
    from aerplane.learner.settings import SECTION, LearnerSettings

    launch = launch_settings(args)
    settings = load_settings(
        LearnerSettings, overrides_from_args(args), section=SECTION, labels=flag_labels(args.worker_flags)
    )
    settings.check_world(launch.nproc_per_node * launch.nnodes)
    cmd = torchrun_argv(args)
    if launch.dry_run:
        print(" ".join(cmd))
        return 0
    # torchrun forwards SIGTERM/SIGINT to the workers; exec keeps our PID so supervisors signal torchrun directly.
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(cmd[0], cmd)
    return subprocess.call(cmd)  # pragma: no cover - non-POSIX


def main_worker_parser() -> argparse.ArgumentParser:
    from aerplane.common.flags import strategy_epilog

    parser = argparse.ArgumentParser(
        prog="python -m aerplane.learner",
        description=__doc__,
        epilog=strategy_epilog(OLD_SPELLING),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_worker_flags(parser)
    return parser


def parse_worker_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return main_worker_parser().parse_args(argv)
