"""`aerplane learner train`: launch the learner (DDP or FSDP2) under torchrun (light module: stdlib imports only).

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

STRATEGY_PARAM_FLAG = "--strategy-param"


def add_worker_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags shared by `aerplane learner train` and `python -m aerplane.learner`: one per `LearnerSettings`
    option (common.flags), plus `--strategy-param` for the strategy's parameter map."""
    from aerplane.common.flags import add_settings_flags
    from aerplane.learner.settings import LearnerSettings

    parser.set_defaults(worker_flags=add_settings_flags(parser, LearnerSettings))
    parser.add_argument(
        STRATEGY_PARAM_FLAG,
        dest="strategy_param",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="a strategy parameter, e.g. rho=0.5 or weighting=linear (repeatable)",
    )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as a nested dict for `load_settings` (flags not given are left out)."""
    from aerplane.common.flags import given_overrides, set_dotted
    from aerplane.common.settings import SettingsError
    from aerplane.core.strategies import parse_param

    out = given_overrides(args, args.worker_flags)
    for item in getattr(args, "strategy_param", None) or []:
        try:
            name, value = parse_param(item)
        except ValueError as exc:
            raise SettingsError(f"learner.strategy: {STRATEGY_PARAM_FLAG}: {exc}") from None
        if value is None:  # `none`: the strategy's default, over whatever the environment set (either kind)
            set_dotted(out, f"strategy.params.{name}", None)
            set_dotted(out, f"strategy.options.{name}", None)
            continue
        group = "options" if isinstance(value, str) else "params"
        set_dotted(out, f"strategy.{group}.{name}", value)
    return out


def worker_argv(args: argparse.Namespace) -> list[str]:
    """Re-emit the worker flags the user gave, for the torchrun command line."""
    from aerplane.common.flags import given_argv

    argv = given_argv(args, args.worker_flags)
    for item in getattr(args, "strategy_param", None) or []:
        argv += [STRATEGY_PARAM_FLAG, item]
    return argv


def torchrun_argv(args: argparse.Namespace) -> list[str]:
    """The full torchrun command for `aerplane learner train`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc_per_node)]
    if args.nnodes == 1 and not args.rdzv_endpoint:
        cmd.append("--standalone")
    else:
        cmd += ["--nnodes", str(args.nnodes), "--rdzv_backend", "c10d"]
        cmd += ["--rdzv_endpoint", args.rdzv_endpoint or "127.0.0.1:29400"]
        cmd += ["--rdzv_id", args.rdzv_id or "aerplane"]
    if args.max_restarts:
        cmd += ["--max_restarts", str(args.max_restarts)]
    return [*cmd, "-m", "aerplane.learner", *worker_argv(args)]


def register(subparsers: argparse._SubParsersAction) -> None:
    learner = subparsers.add_parser(
        "learner",
        help="the learner (DDP or FSDP2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = learner.add_subparsers(dest="learner_command", metavar="COMMAND", required=True)
    train = sub.add_parser("train", help="train under torchrun (launches the worker processes)")
    launch = train.add_argument_group("launcher (torchrun)")
    launch.add_argument("--nproc-per-node", type=int, default=1, help="worker processes on this node (default 1)")
    launch.add_argument("--nnodes", type=int, default=1, help="nodes taking part (default 1)")
    launch.add_argument("--rdzv-endpoint", default=None, help="c10d rendezvous host:port (multi-node)")
    launch.add_argument("--rdzv-id", default=None, help="rendezvous id shared by the nodes (default aerplane)")
    launch.add_argument("--max-restarts", type=int, default=0, help="torchrun worker-group restarts")
    launch.add_argument("--dry-run", action="store_true", help="print the torchrun command and exit")
    add_worker_flags(train.add_argument_group("learner"))  # type: ignore[arg-type]
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    import subprocess

    from aerplane.common.flags import flag_labels
    from aerplane.common.settings import load_settings
    from aerplane.learner.settings import SECTION, LearnerSettings

    if args.nproc_per_node < 1 or args.nnodes < 1:
        from aerplane.common.settings import SettingsError

        raise SettingsError("learner: --nproc-per-node and --nnodes must be at least 1")
    settings = load_settings(
        LearnerSettings, overrides_from_args(args), section=SECTION, labels=flag_labels(args.worker_flags)
    )
    settings.check_world(args.nproc_per_node * args.nnodes)
    settings.check_runtime()
    cmd = torchrun_argv(args)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    # torchrun forwards SIGTERM/SIGINT to the workers; exec keeps our PID so supervisors signal torchrun directly.
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(cmd[0], cmd)
    return subprocess.call(cmd)  # pragma: no cover - non-POSIX


def main_worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aerplane.learner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_worker_flags(parser)
    return parser


def parse_worker_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return main_worker_parser().parse_args(argv)
