"""`aerplane coefficient serve`: CLI registration (flags from `CoefficientSettings`; `server.serve` runs it)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from aerplane.coefficient.settings import CoefficientSettings
    from aerplane.common.flags import add_service_command

    # Tokens have no flags (a command line is visible in `ps`): they come from the environment only.
    add_service_command(
        subparsers,
        "coefficient",
        CoefficientSettings,
        command="serve",
        serve="aerplane.coefficient.server:serve",
        help="the AER coefficient service (gRPC + REST)",
        command_help="serve aerplane.v1.CoefficientService (gRPC) and the REST API",
        description="Owns every run's entropy-control state in Redis.",
    )
