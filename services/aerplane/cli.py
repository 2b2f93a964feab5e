"""The `aerplane` console script: one subcommand per service, heavy imports late.

Each command lives in a light `entry` module with `register(subparsers)`: its flags come from the service's settings
class (pydantic, `aerplane.common.flags`), and the handler it sets imports torch / vLLM / FastAPI only when that
command runs, so `aerplane --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import aerplane

# Light modules that register subcommands, in the order `aerplane --help` lists them.
COMMAND_MODULES = (
    "aerplane.launcher.entry",  # up, report, simulate
    "aerplane.coefficient.entry",  # coefficient serve
    "aerplane.reward.entry",  # reward serve
    "aerplane.generation.entry",  # generation serve, model prepare|tiny
    "aerplane.learner.entry",  # learner train
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aerplane",
        description="Training control plane for RLVR with Adaptive Entropy Regularization (AER).",
    )
    parser.add_argument("--version", action="version", version=f"aerplane {aerplane.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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


if __name__ == "__main__":
    sys.exit(main())
