"""`aerplane reward serve`: CLI registration only (stdlib imports; FastAPI, the pool and scorers load in `_serve`).

    aerplane reward serve --run-id exp1 --redis-url redis://127.0.0.1:6379/0 --workers 4
    aerplane reward serve --no-consume --http-port 8001      # POST /v1/verify only, no run or Redis

Settings come from `AERPLANE_*` variables (see `aerplane.reward.settings`); a flag given on the command line wins.
"""

from __future__ import annotations

import argparse

# (flag, settings field, type, help)
FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--run-id", "run_id", str, "run whose rollout:generated stream to score ($AERPLANE_RUN_ID)"),
    ("--redis-url", "redis_url", str, "Redis URL ($AERPLANE_REDIS_URL)"),
    ("--host", "host", str, "bind address (default 0.0.0.0)"),
    ("--http-port", "http_port", int, "HTTP port for /v1/verify and ops (default 8001)"),
    ("--workers", "workers", int, "verification worker processes (default 2)"),
    ("--timeout", "timeout_s", float, "hard per-item time limit in seconds (default 5)"),
    ("--max-response-bytes", "max_response_bytes", int, "responses above this score too_long (default 65536)"),
    ("--worker-memory-mb", "worker_memory_mb", int, "address-space cap per worker in MiB (default 1024, 0: none)"),
    ("--max-nesting", "max_nesting", int, "responses whose brackets nest deeper score too_long (default 32)"),
    ("--extraction", "extraction", str, "math_verify (default) | boxed | last_number | boxed_or_last_number"),
    ("--math-tasks", "math_tasks", str, "extra task names scored like `math`, comma-separated"),
    ("--group", "group", str, "consumer group (default reward)"),
    ("--consumer", "consumer", str, "consumer name of this replica (default reward-<host>-<pid>)"),
    ("--batch-size", "batch_size", int, "entries read and scored at once (default 16)"),
    ("--claim-idle-ms", "claim_idle_ms", int, "reclaim entries pending this long with a dead consumer"),
    ("--max-deliveries", "max_deliveries", int, "dead-letter entries delivered more often than this"),
    ("--downstream-max-lag", "downstream_max_lag", int, "pause while the learner lags by more (0: off)"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reward", help="the reward verification service")
    sub = parser.add_subparsers(dest="reward_command", metavar="COMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="score generated rollouts (Redis stream) and serve POST /v1/verify",
        description="Verifies answers in a pool of killable worker processes. Flags override AERPLANE_* variables.",
    )
    for flag, dest, kind, text in FLAGS:
        serve.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    serve.add_argument(
        "--consume",
        dest="consume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="consume the run's stream (default); --no-consume serves HTTP only",
    )
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from aerplane.common.logs import setup_logging
    from aerplane.common.settings import load_settings
    from aerplane.reward.settings import RewardSettings

    overrides = {dest: getattr(args, dest) for _, dest, _, _ in FLAGS}
    overrides["consume"] = args.consume
    settings = load_settings(RewardSettings, overrides, section="reward")
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
