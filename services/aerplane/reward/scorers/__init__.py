"""The scorers: a task name → a function that turns (response, ground truth) into a `Score`.

The registry and `Score` are in registry.py, re-exported here. Adding a task is one small module here that calls
`register("name")` on its scoring function, and one import below; the registry is filled when this package is
imported. Scorer modules import their heavy libraries (math-verify, sympy, reasoning-gym) inside the functions, so
the service's parent process can list task names cheaply; the functions themselves run inside the worker pool
(`aerplane.reward.pool`), never in the service's event loop.

A scorer returns reward in [0, 1], one of `REASONS`, the answer it read and how it found it (`METHODS`); the pool
adds `timeout`, `too_long` and `error`.

Extraction modes (`EXTRACTION_MODES`, the service's `extraction` setting): `math_verify` (the default) hands the whole
response to math-verify, which finds the answer itself (boxed first, then LaTeX, then plain expressions); `boxed`,
`last_number` and `boxed_or_last_number` cut the answer out first with our own rules (`scorers.extract`), for
datasets that want exactly that. reasoning-gym tasks keep their own extraction; `math_verify` means their default
there.
"""

from aerplane.reward.scorers import math, reasoning_gym  # noqa: F401  (each registers its tasks on import)
from aerplane.reward.scorers.registry import (
    DEFAULT_EXTRACTION,
    EXTRACTION_MODES,
    METHODS,
    REASONS,
    Score,
    ScoreFn,
    UnknownTask,
    configure,
    get_scorer,
    is_known,
    known_tasks,
    register,
    register_alias,
)

__all__ = [
    "DEFAULT_EXTRACTION",
    "EXTRACTION_MODES",
    "METHODS",
    "REASONS",
    "Score",
    "ScoreFn",
    "UnknownTask",
    "configure",
    "get_scorer",
    "is_known",
    "known_tasks",
    "register",
    "register_alias",
]
