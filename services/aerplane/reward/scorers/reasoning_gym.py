"""reasoning-gym tasks, scored by the task's own `score_answer` (the training tasks of the embedded defaults).

The stream carries only the answer string as ground truth, so the entry is rebuilt as
`{"question": "", "answer": ground_truth, "metadata": {}}`. That is enough for the tasks listed here — each was
checked to give 1.0 for its own answer and less for a wrong one with such an entry (tests/unit/test_scorers.py
repeats the check); tasks whose scorer needs metadata (sudoku, countdown, ...) are left out rather than mis-scored.

The answer is extracted from the response first (the prompts ask for `\\boxed{}`): the last box, else
reasoning-gym's own `<answer>...</answer>` tag, else — numeric tasks only, by the configured extraction — the last
number. The service's default extraction, `math_verify`, means `boxed_or_last_number` here: these tasks keep their
own extraction and their own scorer. The task's score (some give partial credit, e.g. gsm_symbolic 0.01 for a wrong
number) is the reward; the reason is `match` at 1.0 and `mismatch` below; the method says where the answer came
from (`boxed`, `answer_tag` or `last_number`).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from aerplane.reward.scorers.extract import find_answer, last_boxed, last_number
from aerplane.reward.scorers.registry import DEFAULT_EXTRACTION, Score, register

# Tasks whose answers are numbers: the "last number" fallback applies.
NUMERIC_TASKS = (
    "aiw",
    "basic_arithmetic",
    "binary_alternation",
    "chain_sum",
    "circuit_logic",
    "coin_flip",
    "count_bits",
    "count_primes",
    "decimal_arithmetic",
    "decimal_chain_sum",
    "gcd",
    "gsm_symbolic",
    "largest_island",
    "lcm",
    "leg_counting",
    "letter_counting",
    "maze",
    "number_sequence",
    "products",
    "rectangle_count",
    "rotten_oranges",
    "self_reference",
    "simple_equations",
    "simple_geometry",
)
# Tasks with text/structured answers: box or <answer> tag only.
TEXT_TASKS = (
    "ab",
    "acre",
    "arc_1d",
    "base_conversion",
    "bf",
    "binary_matrix",
    "caesar_cipher",
    "codeio",
    "color_cube_rotation",
    "course_schedule",
    "dice",
    "emoji_mystery",
    "family_relationships",
    "figlet_font",
    "game_of_life",
    "isomorphic_strings",
    "knights_knaves",
    "letter_jumble",
    "list_functions",
    "mahjong_puzzle",
    "manipulate_matrix",
    "modulo_grid",
    "needle_haystack",
    "number_filtering",
    "path_star",
    "polynomial_equations",
    "polynomial_multiplication",
    "pool_matrix",
    "power_function",
    "puzzle24",
    "ransom_note",
    "rotate_matrix",
    "sentence_reordering",
    "spell_backward",
    "spiral_matrix",
    "string_insertion",
    "string_manipulation",
    "string_splitting",
    "string_synthesis",
    "syllogism",
    "tsumego",
    "word_sequence_reversal",
    "zebra_puzzles",
)
DEFAULT_TRAINING_TASKS = ("basic_arithmetic", "chain_sum", "gsm_symbolic")

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_ANSWER_PREVIEW = 200


@cache
def dataset(name: str) -> Any:
    """The task's dataset object (its generator is lazy: creating it costs microseconds once imported)."""
    import reasoning_gym

    return reasoning_gym.create_dataset(name, seed=0, size=1)


def _numeric_answer(response: str, extraction: str) -> tuple[str, str] | None:
    """The extracted answer reduced to a plain number where it holds one (`28,080` → `28080`, `x = 5` → `5`)."""
    found = find_answer(response, "last_number") if extraction == "last_number" else _tagged_answer(response)
    if found is None:
        found = find_answer(response, extraction)
    if found is None:
        return None
    answer, method = found
    plain = answer.strip().strip("$").replace(",", "").replace("\\,", "").strip()
    if _PLAIN_NUMBER.fullmatch(plain):
        return plain, method
    return last_number(answer) or answer, method


def _tagged_answer(response: str) -> tuple[str, str] | None:
    """The last box, else the last `<answer>...</answer>`."""
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed, "boxed"
    tagged = None
    for tagged in _ANSWER_TAG.finditer(response):  # noqa: B007 - the last tag counts
        pass
    answer = tagged.group(1).strip() if tagged is not None else ""
    return (answer, "answer_tag") if answer else None


def _score(task: str, response: str, ground_truth: str, extraction: str) -> Score:
    if extraction == "math_verify":  # math-verify is for `math`; these tasks keep their own extraction
        extraction = "boxed_or_last_number"
    found = _numeric_answer(response, extraction) if task in NUMERIC_TASKS else _tagged_answer(response)
    if found is None:
        return Score(0.0, "no_answer")
    answer, method = found
    entry = {"question": "", "answer": ground_truth, "metadata": {}}
    reward = float(dataset(task).score_answer(answer, entry))
    reward = min(max(reward, 0.0), 1.0)
    return Score(reward, "match" if reward >= 1.0 else "mismatch", answer[:_ANSWER_PREVIEW], method=method)


def _make(task: str) -> None:
    @register(task)
    def score(response: str, ground_truth: str, *, extraction: str = DEFAULT_EXTRACTION) -> Score:
        return _score(task, response, ground_truth, extraction)

    score.__name__ = f"score_{task}"


for _task in NUMERIC_TASKS + TEXT_TASKS:
    _make(_task)
