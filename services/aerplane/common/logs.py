"""Logging set-up shared by the services: one line per record, service name and pid in every line.

Records go to stderr by default (a command's stdout may carry its result, e.g. `aerplane model prepare` prints the
model folder); `AERPLANE_LOG_STREAM=stdout` sends them to stdout instead, which the container images set so that
`docker logs` and Kubernetes see every service's log on its standard output. The level and the stream are
settings every service shares (`common.settings.ServiceSettings`: `log_level`, `log_stream`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def setup_logging(service: str, settings: Any = None, *, stream: str | None = None) -> logging.Logger:
    """Log lines of `service` at `settings`' level to its stream (a `ServiceSettings`; default: one built from the
    environment). `stream` forces one (a command whose stdout is its result)."""
    from aerplane.common.settings import ServiceSettings, SettingsError, load_settings

    if settings is None:
        try:
            settings = load_settings(ServiceSettings)
        except SettingsError as exc:
            raise ValueError(f"logging: {exc} (AERPLANE_LOG_LEVEL, AERPLANE_LOG_STREAM)") from None
    level = settings.log_level
    stream = stream or settings.log_stream
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
