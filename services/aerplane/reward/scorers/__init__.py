"""Scorer registry: a task name → a function that turns (response, ground truth) into a `Score`.

Adding a task is one small module here that calls `register("name")` on its scoring function; the registry is
filled when this package is imported. Scorer modules import their heavy libraries (math-verify, sympy,
reasoning-gym) inside the functions, so the service's parent process can list task names cheaply; the functions
themselves run inside the worker pool (`aerplane.reward.pool`), never in the service's event loop.

A scorer returns reward in [0, 1] and one of `REASONS`; the pool adds `timeout`, `too_long` and `error`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

REASONS = ("match", "mismatch", "no_answer", "timeout", "too_long", "error")
EXTRACTION_MODES = ("boxed_or_last_number", "boxed", "last_number")


@dataclass(frozen=True, slots=True)
class Score:
    reward: float
    reason: str
    answer: str | None = None  # what was extracted from the response (truncated), for logs and /v1/verify
    detail: str = ""  # why an `error`, for logs


ScoreFn = Callable[..., Score]  # (response, ground_truth, *, extraction) -> Score


class UnknownTask(KeyError):
    """No scorer is registered under this task name."""

    def __str__(self) -> str:
        return f"unknown task {self.args[0]!r}"


_SCORERS: dict[str, ScoreFn] = {}


def register(*names: str) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator: score tasks `names` with the decorated function."""

    def wrap(fn: ScoreFn) -> ScoreFn:
        for name in names:
            _SCORERS[name] = fn
        return fn

    return wrap


def register_alias(alias: str, task: str) -> None:
    """Score task `alias` like the registered task `task` (e.g. `gsm8k` → `math`)."""
    _SCORERS[alias] = get_scorer(task)


def configure(math_aliases: Iterable[str] = ()) -> None:
    """Apply the service's settings to the registry (called in the parent and in each worker)."""
    for alias in math_aliases:
        register_alias(alias, "math")


def get_scorer(task: str) -> ScoreFn:
    try:
        return _SCORERS[task]
    except KeyError:
        raise UnknownTask(task) from None


def known_tasks() -> list[str]:
    return sorted(_SCORERS)


def is_known(task: str) -> bool:
    return task in _SCORERS


# Scorer modules register themselves on import.
from aerplane.reward.scorers import math, reasoning_gym  # noqa: E402, F401
