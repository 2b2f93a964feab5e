"""`aerplane reward serve`: CLI registration only (flags from `RewardSettings`; FastAPI and the pool load in `_serve`).

    aerplane reward serve --run-id exp1 --redis-url redis://127.0.0.1:6379/0 --workers 4
    aerplane reward serve --no-consume --http-port 8001      # POST /v1/verify only, no run or Redis

Settings come from `AERPLANE_*` variables (see `aerplane.reward.settings`); a flag given on the command line wins.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reward", help="the reward verification service")
    sub = parser.add_subparsers(dest="reward_command", metavar="COMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="score generated rollouts (Redis stream) and serve POST /v1/verify",
        description="Verifies answers in a pool of killable worker processes. Flags override AERPLANE_* variables.",
    )
    from aerplane.common.flags import add_settings_flags
    from aerplane.reward.settings import RewardSettings

    serve.set_defaults(func=_serve, flags=add_settings_flags(serve, RewardSettings))


def _serve(args: argparse.Namespace) -> int:
    from aerplane.common.flags import settings_from_args
    from aerplane.common.logs import setup_logging
    from aerplane.reward.settings import RewardSettings

    settings = settings_from_args(RewardSettings, args, args.flags, section="reward")
    setup_logging("reward")

    import uvicorn

    from aerplane.reward.api import build_app

    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 1,
    )
    return 0
