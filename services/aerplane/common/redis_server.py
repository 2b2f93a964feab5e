"""A private `redis-server` on a free loopback port, for `aerplane up` and the tests; and `connect`, how every
aerplane process opens a Redis client.

Redis ≥ 6.2 is required (XAUTOCLAIM). Persistence is off unless a directory is given: the launcher passes the run
directory so a restarted `aerplane up --resume` finds its streams and coefficient state again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aerplane.common.process import ManagedProcess, free_port

MIN_VERSION = (6, 2)
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


class RedisNotFound(RuntimeError):
    pass


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisNotFound(
            "redis-server not found: run scripts/bootstrap.sh (installs it) or set AERPLANE_REDIS_URL to a Redis ≥ 6.2"
        )
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    version = next((tok.split("=", 1)[1] for tok in out.split() if tok.startswith("v=")), "0.0")
    major_minor = tuple(int(x) for x in version.split(".")[:2])
    if major_minor < MIN_VERSION:
        raise RedisNotFound(f"redis-server {version} is too old: aerplane needs ≥ 6.2 (XAUTOCLAIM)")
    return path


class LocalRedis:
    """`redis-server` as a child process on 127.0.0.1:<free port>."""

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        log_path: Path | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.password = password
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if password:
            argv += ["--requirepass", password]
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            argv += ["--dir", str(data_dir), "--appendonly", "yes"]
        else:
            argv += ["--appendonly", "no"]
        self.process = ManagedProcess("redis", argv, log_path=log_path)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        import redis

        self.process.start()
        client = redis.Redis.from_url(self.url, password=self.password)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited early:\n{self.process.log_tail()}")
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"redis-server on port {self.port} did not answer in {timeout}s") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def ping(self) -> bool:
        """Whether the server answers PING now."""
        import redis

        client = redis.Redis.from_url(self.url, password=self.password, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False  # down, or still loading its append-only file
        finally:
            client.close()

    def stop(self) -> None:
        self.process.stop(timeout=5)

    def kill(self) -> None:
        self.process.kill()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
