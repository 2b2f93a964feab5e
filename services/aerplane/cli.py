"""The `aerplane` console script: one subcommand per service, heavy imports late.

Every command comes from a light module imported here: the services' `serve` commands from
`aerplane.launcher.services.SERVICES` (each service's app.py `serve`; flags from each service's settings class, by
`aerplane.common.flags`), `up`, `compare`, `report` and `simulate` from `aerplane.launcher.entry`, `model
prepare|tiny` from `aerplane.data.model_commands` and `learner train` from `aerplane.learner.entry`. The handlers
import torch / vLLM / FastAPI only when their command runs, so `aerplane --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import aerplane
from aerplane.common.flags import add_service_command
from aerplane.data import model_commands
from aerplane.launcher import entry as launcher_commands
from aerplane.launcher.services import SERVICES
from aerplane.learner import entry as learner_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aerplane",
        description="Training control plane for RLVR with Adaptive Entropy Regularization (AER).",
    )
    parser.add_argument("--version", action="version", version=f"aerplane {aerplane.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    launcher_commands.register(sub)  # up, compare, report, simulate
    for service in SERVICES.values():
        if service.serve is not None:  # coefficient, reward, generation serve
            add_service_command(sub, service)
    model_commands.register(sub)  # model prepare|tiny
    learner_commands.register(sub)  # learner train (under torchrun)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    from aerplane.common.settings import SettingsError

    try:
        return int(func(args) or 0)
    except SettingsError as exc:
        print(f"aerplane {args.command}: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `aerplane simulate --json | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
