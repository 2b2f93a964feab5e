"""`aerplane coefficient serve`: CLI registration only (flags from `CoefficientSettings`; servers load in `_serve`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("coefficient", help="the AER coefficient service (gRPC + REST)")
    sub = parser.add_subparsers(dest="coefficient_command", metavar="COMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve aerplane.v1.CoefficientService (gRPC) and the REST API",
        description="Owns every run's entropy-control state in Redis. Flags override AERPLANE_* variables.",
    )
    from aerplane.coefficient.settings import CoefficientSettings
    from aerplane.common.flags import add_settings_flags

    # Tokens have no flags (a command line is visible in `ps`): they come from the environment only.
    serve.set_defaults(func=_serve, flags=add_settings_flags(serve, CoefficientSettings))


def _serve(args: argparse.Namespace) -> int:
    from aerplane.coefficient.settings import CoefficientSettings
    from aerplane.common.flags import settings_from_args
    from aerplane.common.logs import setup_logging

    settings = settings_from_args(CoefficientSettings, args, args.flags, section="coefficient")
    setup_logging("coefficient")
    from aerplane.coefficient.server import serve

    return serve(settings)
