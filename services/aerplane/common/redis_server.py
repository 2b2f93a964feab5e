"""A private `redis-server` on a free loopback port, for `aerplane up` and the tests. How every aerplane process
opens a Redis client (`connect`) is redis_client.py.

Redis ≥ 6.2 is required (XAUTOCLAIM). Persistence is off unless a directory is given: the launcher passes the run
directory so a restarted `aerplane up --resume` finds its streams and coefficient state again.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from aerplane.common.process import ManagedProcess, free_port

MIN_VERSION = (6, 2)


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
