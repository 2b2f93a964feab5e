"""Scorer registry: a task name → a function that turns (response, ground truth) into a `Score`.

Adding a task is one small module here that calls `register("name")` on its scoring function; the registry is
filled when this package is imported. Scorer modules import their heavy libraries (math-verify, sympy,
reasoning-gym) inside the functions, so the service's parent process can list task names cheaply; the functions
themselves run inside the worker pool (`aerplane.reward.pool`), never in the service's event loop.

A scorer returns reward in [0, 1], one of `REASONS`, the answer it read and how it found it (`METHODS`); the pool
adds `timeout`, `too_long` and `error`.

Extraction modes (`EXTRACTION_MODES`, the service's `extraction` setting): `math_verify` (the default) hands the whole
response to math-verify, which finds the answer itself (boxed first, then LaTeX, then plain expressions); `boxed`,
`last_number` and `boxed_or_last_number` cut the answer out first with our own rules (`scorers.extract`), for
datasets that want exactly that. reasoning-gym tasks keep their own extraction; `math_verify` means their default
there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

REASONS = ("match", "mismatch", "no_answer", "timeout", "too_long", "error")
EXTRACTION_MODES = ("math_verify", "boxed", "last_number", "boxed_or_last_number")
DEFAULT_EXTRACTION = "math_verify"
# How the answer was found: a `\boxed{}`, math-verify's LaTeX or plain-expression reading, the last number,
# reasoning-gym's `<answer>` tag, or the plain text compared as a string.
METHODS = ("boxed", "latex", "expr", "last_number", "answer_tag", "string")


@dataclass(frozen=True, slots=True)
class Score:
    reward: float
    reason: str
    answer: str | None = None  # what was extracted from the response (truncated), for logs and /v1/verify
    detail: str = ""  # why an `error`, `timeout` or `too_long`, for logs
    method: str | None = None  # how `answer` was found: one of METHODS (None when nothing was read)


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
