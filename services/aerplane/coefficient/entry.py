"""`aerplane coefficient serve`: CLI registration only (stdlib imports; the servers load in `_serve`)."""

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
    serve.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default 50051)")
    serve.add_argument("--http-port", type=int, default=None, help="REST/metrics port (default 8000)")
    serve.add_argument("--host", default=None, help="bind address (default 0.0.0.0)")
    serve.add_argument("--redis-url", default=None, help="Redis URL (default $AERPLANE_REDIS_URL)")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from aerplane.coefficient.settings import CoefficientSettings
    from aerplane.common.logs import setup_logging
    from aerplane.common.settings import load_settings

    settings = load_settings(
        CoefficientSettings,
        {"grpc_port": args.grpc_port, "http_port": args.http_port, "host": args.host, "redis_url": args.redis_url},
        section="coefficient",
    )
    setup_logging("coefficient")
    from aerplane.coefficient.server import serve

    return serve(settings)
