"""Logging set-up shared by the services: one line per record, service name and pid in every line.

Records go to stderr by default (a command's stdout may carry its result, e.g. `aerplane model prepare` prints the
model folder); `AERPLANE_LOG_STREAM=stdout` sends them to stdout instead, which the container images set so that
`docker logs` and Kubernetes see every service's log on its standard output.
"""

from __future__ import annotations

import logging
import os
import sys

LOG_STREAMS = ("stderr", "stdout")


def setup_logging(service: str, level: str | None = None, *, stream: str | None = None) -> logging.Logger:
    level = (level or os.environ.get("AERPLANE_LOG_LEVEL", "INFO")).upper()
    stream = stream or os.environ.get("AERPLANE_LOG_STREAM", "stderr").strip().lower()
    if stream not in LOG_STREAMS:
        raise ValueError(f"AERPLANE_LOG_STREAM: must be stderr or stdout, got {stream!r}")
    handler = logging.StreamHandler(sys.stdout if stream == "stdout" else sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s [{service} %(process)d] %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(f"aerplane.{service}")
