"""How every aerplane process opens a Redis client: `connect(url)`, with the password from the environment
(`redis_password`) when the URL has none and the fast command packer (`CommandPacker`). Starting a private
redis-server (the launcher and the tests) is redis_server.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PASSWORD_ENV = "AERPLANE_REDIS_PASSWORD"
PASSWORD_FILE_ENV = "AERPLANE_REDIS_PASSWORD_FILE"


def redis_password() -> str | None:
    """The Redis password from the environment, for URLs that carry none: the file named by
    `AERPLANE_REDIS_PASSWORD_FILE` (a mounted secret; one trailing newline is dropped), else
    `AERPLANE_REDIS_PASSWORD`. Never logged."""
    path = os.environ.get(PASSWORD_FILE_ENV)
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise RuntimeError(f"{PASSWORD_FILE_ENV}={path}: cannot read the Redis password ({exc.strerror})") from None
        return text[:-1] if text.endswith("\n") else text
    return os.environ.get(PASSWORD_ENV) or None


class CommandPacker:
    """How aerplane's clients turn a command into bytes for the socket: hiredis' packer for ordinary commands, and
    redis-py's own Python packer for a command with an argument over `LARGE` bytes (a group entry's XADD, an
    EVALSHA carrying results). hiredis' `pack_command` copies every argument into one buffer, and slowly: 580 µs
    for a 384 KB EVALSHA with hiredis 3.5 on our CPU machine, against 6 µs for the Python packer, which hands
    large arguments to the socket as they are (bench/reward.py's stream round trip spent 15 % of its consumer's
    time there). Without hiredis, the Python packer does everything, as in redis-py."""

    LARGE = 6000  # redis-py's buffer cutoff: arguments above it are sent as their own buffers

    def __init__(self) -> None:
        from redis.connection import HIREDIS_AVAILABLE, Encoder, HiredisRespSerializer, PythonRespSerializer

        self._small = HiredisRespSerializer() if HIREDIS_AVAILABLE else None
        # Packing only encodes (str → UTF-8, numbers → their repr); decode_responses is a reply setting.
        self._large = PythonRespSerializer(self.LARGE, Encoder("utf-8", "strict", False).encode)

    def pack(self, *args: Any) -> list[bytes | memoryview]:
        if self._small is None or any(type(a) is bytes and len(a) > self.LARGE for a in args):
            return self._large.pack(*args)
        return self._small.pack(*args)


def connect(url: str, **kwargs: Any) -> Any:
    """`redis.Redis.from_url(url, **kwargs)`, with the password from `redis_password()` when the URL has none, and
    the `CommandPacker` unless the caller names another."""
    import redis

    if "password" not in kwargs and not urlparse(url).password:
        password = redis_password()
        if password is not None:
            kwargs["password"] = password
    kwargs.setdefault("command_packer", CommandPacker())
    return redis.Redis.from_url(url, **kwargs)
