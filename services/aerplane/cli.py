"""The `aerplane` console script: one subcommand per service, heavy imports late.

Each command lives in a light `entry` module with `register(subparsers)`: its flags come from the service's settings
class (pydantic, `aerplane.common.flags`), and the handler it sets imports torch / vLLM / FastAPI only when that
command runs, so `aerplane --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

import aerplane
from aerplane.common.commands import SERVICES
from aerplane.common.flags import add_service_command

# Light modules that register subcommands of their own, listed by `aerplane --help` around the services' `serve`
# commands (common.commands.SERVICES).
LAUNCHER_MODULE = "aerplane.launcher.entry"  # up, compare, report, simulate
COMMAND_MODULES = (
    "aerplane.generation.entry",  # model prepare|tiny
    "aerplane.learner.entry",  # learner train (under torchrun)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aerplane",
        description="Training control plane for RLVR with Adaptive Entropy Regularization (AER).",
    )
    parser.add_argument("--version", action="version", version=f"aerplane {aerplane.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    importlib.import_module(LAUNCHER_MODULE).register(sub)
    for service in SERVICES.values():
        if service.serve is not None:
            add_service_command(sub, service)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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
