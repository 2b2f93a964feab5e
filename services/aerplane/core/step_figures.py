"""What a learner's entropy report says of its step besides H_t: figures for people watching the run.

The learner sends them with ReportEntropy, the coefficient service keeps them in the run's history, and the console
charts them. None of them moves α. One record for both sides, checked once on the service's side:

    figures = StepFigures(accuracy_by_difficulty={"easy": 0.8, "hard": 0.1}, response_length=212.5, total_steps=20)
    figures.checked(step=7)  # ValueError naming the field unless every figure is sound (the service's check)
    figures.sound_part(step=7)  # (the sound ones, why the others were left out): what the learner sends
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aerplane.core.strategies import check_finite

MAX_DIFFICULTY_BUCKETS = 64
MAX_BUCKET_CHARS = 64


@dataclass(frozen=True)
class StepFigures:
    accuracy_by_difficulty: dict[str, float] | None = None  # mean reward per difficulty bucket, each in [0, 1]
    response_length: float | None = None  # mean response length of the step's samples, tokens
    total_steps: int | None = None  # the steps the run is set to train

    def checked(self, step: int) -> StepFigures:
        """These figures as plain floats and ints for step `step`; ValueError naming the field otherwise."""
        buckets = None if self.accuracy_by_difficulty is None else _check_buckets(self.accuracy_by_difficulty)
        length = None
        if self.response_length is not None:
            length = _number("response_length", self.response_length, high=math.inf)
        total = self.total_steps
        if total is not None:
            if isinstance(total, bool) or not isinstance(total, int) or total < 1:
                raise ValueError(f"total_steps: must be a positive integer, got {total!r}")
            if isinstance(step, int) and step >= total:  # a malformed step is the caller's to refuse
                raise ValueError(f"total_steps: step {step} is past the run's {total} steps (0 to {total - 1})")
        return StepFigures(buckets, length, total)

    def sound_part(self, step: int) -> tuple[StepFigures, list[str]]:
        """The figures that pass `checked`, each on its own, and why each of the others was left out: what a learner
        sends, so a figure that is only there to be watched (a dataset's 65th difficulty label, say) never costs it
        the report that moves α."""
        kept, why = {}, []
        for name in ("accuracy_by_difficulty", "response_length", "total_steps"):
            one = StepFigures(**{name: getattr(self, name)})
            try:
                kept[name] = getattr(one.checked(step), name)
            except ValueError as exc:
                why.append(str(exc))
        return StepFigures(**kept), why


NO_FIGURES = StepFigures()


def _check_buckets(accuracies: dict[str, Any]) -> dict[str, float]:
    if len(accuracies) > MAX_DIFFICULTY_BUCKETS:
        raise ValueError(f"accuracy_by_difficulty: at most {MAX_DIFFICULTY_BUCKETS} buckets, got {len(accuracies)}")
    checked = {}
    for name, value in accuracies.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_BUCKET_CHARS:
            raise ValueError(
                f"accuracy_by_difficulty: bucket names are 1 to {MAX_BUCKET_CHARS} characters, got {name!r}"
            )
        checked[name] = _number(f"accuracy_by_difficulty.{name}", value, high=1.0)
    return checked


def _number(name: str, value: Any, *, high: float) -> float:
    """`value` as a finite float within [0, high]."""
    value = check_finite(name, value)
    if not 0.0 <= value <= high:
        bound = ">= 0" if high == math.inf else f"within [0, {high:g}]"
        raise ValueError(f"{name}: must be {bound}, got {value!r}")
    return value
