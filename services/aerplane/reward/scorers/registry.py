"""The scorer registry: a task name → a function that turns (response, ground truth) into a `Score`.

Scorer modules (math.py, reasoning_gym.py) import `register` and `Score` from here and register themselves on
import; the package (`aerplane.reward.scorers`) imports them all and re-exports these names.
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
