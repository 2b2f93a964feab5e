"""Shared fixtures: tier markers by folder, a real redis-server per session, GPU skipping.

Tiers (STYLE §9): tests/unit → `unit`, tests/integration → `integration`, tests/e2e → `e2e`. A test marked `gpu`
is skipped when torch sees no CUDA device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aerplane.common.process import free_port
from aerplane.common.redis_server import LocalRedis

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_gpu: bool | None = None
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
        if item.get_closest_marker("gpu") is not None:
            if has_gpu is None:
                has_gpu = _cuda_available()
            if not has_gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


_TABLES: dict[str, tuple[list[str], list[list[Any]]]] = {}


@pytest.fixture
def report_table() -> Callable[[str, list[str], list[Any]], None]:
    """`report_table(title, header, row)`: add a row to a table printed at the end of the test session (figures a
    test measured, e.g. the fault tests' time to recover), so CI logs show them next to the results."""

    def add(title: str, header: list[str], row: list[Any]) -> None:
        _TABLES.setdefault(title, (header, []))[1].append(row)

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for title, (header, rows) in _TABLES.items():
        terminalreporter.section(title)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
        for line in (header, ["-" * w for w in widths], *rows):
            terminalreporter.write_line("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """A real redis-server on a free loopback port for the whole session (stopped by PID at the end)."""
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    server = LocalRedis(log_path=log).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> Iterator[str]:
    """The session Redis, flushed before each test so tests do not see each other's keys."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(autouse=True)
def _no_global_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set AERPLANE_* variables explicitly; a developer's shell must not leak into them."""
    for key in list(os.environ):
        if key.startswith("AERPLANE_"):
            monkeypatch.delenv(key)
