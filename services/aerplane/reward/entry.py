"""`aerplane reward serve`: CLI registration (flags from `RewardSettings`; `api.serve` runs the service).

    aerplane reward serve --run-id exp1 --redis-url redis://127.0.0.1:6379/0 --workers 4
    aerplane reward serve --no-consume --http-port 8001      # POST /v1/verify only, no run or Redis

Settings come from `AERPLANE_*` variables (see `aerplane.reward.settings`); a flag given on the command line wins.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from aerplane.common.flags import add_service_command
    from aerplane.reward.settings import RewardSettings

    add_service_command(
        subparsers,
        "reward",
        RewardSettings,
        command="serve",
        serve="aerplane.reward.api:serve",
        help="the reward verification service",
        command_help="score generated rollouts (Redis stream) and serve POST /v1/verify",
        description="Verifies answers in a pool of killable worker processes.",
    )
