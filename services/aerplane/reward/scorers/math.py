"""`math`: math-verify equivalence between the answer in a response and the ground truth.

Default mode, `math_verify` (what TRL, verl and prime-rl call): math-verify reads the whole response with its own
extraction, LaTeX (`\\boxed{}` first, then `$...$`, `\\(...\\)`, `\\[...\\]`, "final answer is ...") and then plain
expressions and numbers (thousands and decimal separators, percent, currency, units and `\\text{}` stripped). The
answer is the one math-verify picks; `read` reproduces `math_verify.parse(text)` with `LatexExtractionConfig(
boxed_match_priority=0)` and `ExprExtractionConfig()` — the configuration math-verify's own tests use — and records
which of its patterns found the answer (the `method`: `boxed`, `latex`, `expr` or `string`).

Reward hacking must not pay, and math-verify mostly sees to that itself; we add one rule for several boxes:

- several closed `\\boxed{}`: math-verify reads them all as one answer, a set (`\\boxed{1} and \\boxed{2}` is
  `{1, 2}`, right for a ground truth `{1, 2}`). A model that changes its mind (`\\boxed{3} ... wait ...
  \\boxed{5}`) would then never be right, so the last box counts too: math-verify also reads the text from the
  last box on, and either reading may match. Listing candidates gains nothing: `\\boxed{1}...\\boxed{50}` is the
  set of fifty (equal to no single answer) or its last box, right only when 50 is;
- a set or a list of candidates (`\\boxed{1, 2, 3}`, `$1$ or $2$ or $3$`) is a set to math-verify and scores 0
  against a single answer; a plain "1 or 2 or 3" is read as its last number, which pays only if that one is right;
- a response that repeats the question ("What is 12 + 30?") is read as its last number (30), not as the result.

The ground truth is read as math-verify reads it when it marks its mathematics (`$[0,1)$`, `\\boxed{...}`, a
solution text; several boxes there are one answer, a set). A bare answer (`10/9`, `2^(n-1)`, `\\{1,2\\}`, `(0,1]`)
is read as one LaTeX expression, `\\boxed{ground truth}`, as verl and prime-rl do, except plain numbers (`1000.99`,
`1 000`), which math-verify's number reading gets right. A number with a comma and no point (`1,22`, `-2,1`) is
ambiguous (a decimal comma, or a list): both readings count. A ground truth that is a plain word (`Evelyn`, `yes`)
also matches the same word in the response, `\\text{}` or not.

The cut-out modes (`boxed`, `last_number`, `boxed_or_last_number`) first cut the answer out with our own rules
(`scorers.extract`), then parse both sides as LaTeX, else as a plain expression, as before.

math-verify's own SIGALRM timeouts are disabled (`parsing_timeout=None`, `timeout_seconds=None`): the pool arms
its timers around the whole item instead, and the pool's byte and nesting caps run before any of this.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from itertools import groupby
from typing import Any

from aerplane.reward.scorers.extract import find_answer, last_box_start
from aerplane.reward.scorers.registry import DEFAULT_EXTRACTION, Score, register

_ANSWER_PREVIEW = 200
# math-verify's number formats, whole: thousands groups (`1,000.5`, `1 000`), a decimal point or comma, `.5`.
_PLAIN_NUMBER = re.compile(r"[-+]?(?:[1-9]\d{0,2}(?:[ ,]\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?|\.\d+)")
_MARKED_MATH = re.compile(r"\$|\\\(|\\\[|\\boxed")
_WORD = re.compile(r"[A-Za-z][A-Za-z '-]*")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textnormal|mathrm|mbox)\s*\{([^{}]*)\}")


def _quiet() -> None:
    # math-verify warns once that its timeouts are off, and logs every parse failure at WARNING/DEBUG.
    logging.getLogger("math_verify").setLevel(logging.ERROR)


@cache
def _patterns() -> list[tuple[re.Pattern[str], Any, int]]:
    """math-verify's extraction patterns for LaTeX (boxed first) and expressions, by priority: (pattern, config, p)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    from math_verify.parser import get_extraction_regexes

    config = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    return sorted(
        (
            (pattern, target, priority)
            for regexes, target in get_extraction_regexes(config)
            for pattern, priority in regexes
        ),
        key=lambda p: p[2],
    )


@dataclass(frozen=True, slots=True)
class Reading:
    """What math-verify made of a text: `parsed` is exactly what `math_verify.parse` returns."""

    parsed: list[Any]  # [value, first matched string] (or [string] when nothing parsed), for `verify`
    answer: str  # the text of the match that gave the value, as math-verify normalised it
    method: str  # boxed | latex | expr | string


def read(text: str) -> Reading | None:
    """`math_verify.parse(text)` (LaTeX, boxed first, then expressions), and which of its patterns found the answer."""
    # math_verify.parser.extract_target_from_pred (extraction_mode="any_match", fallback_mode="first_match"),
    # step for step, keeping track of which pattern won. tests/unit/test_scorers.py checks it against `parse`.
    from math_verify.parser import LatexExtractionConfig, extract_match

    _quiet()
    fallbacks: list[str] = []
    try:
        for _, group in groupby(_patterns(), key=lambda p: p[2]):
            matches = sorted(
                ((m, target) for pattern, target, _ in group for m in pattern.finditer(text)),
                key=lambda mt: (mt[0].end(), -mt[0].start()),
                reverse=True,
            )
            for m, target in matches:
                value, found = extract_match(m, target)
                if found:
                    fallbacks.append(found)
                if value is not None:
                    if not isinstance(target, LatexExtractionConfig):
                        method = "expr"
                    else:
                        method = "boxed" if "\\boxed" in m.group() else "latex"
                    return Reading([value, *fallbacks[:1]], found or str(value), method)
    except Exception:  # what `parse` does on any library error: no answer
        return None
    return Reading(fallbacks[:1], fallbacks[0], "string") if fallbacks else None


def read_ground_truth(text: str) -> list[Any]:
    """The ground truth's acceptable values for `verify` (see the module docstring); [] when none parses."""
    text = text.strip()
    if not text:
        return []
    number = _PLAIN_NUMBER.fullmatch(text) is not None
    if number or _MARKED_MATH.search(text):
        readings = [read(text)]
        if number and "," in text and "." not in text:
            readings.append(read(f"\\boxed{{{text}}}"))  # `1,22`: a decimal comma, or the list 1, 22
    else:
        readings = [read(f"\\boxed{{{text}}}")]
        if readings[0] is None or readings[0].method == "string":  # not LaTeX after all: as math-verify reads it
            as_is = read(text)
            if as_is is not None and (readings[0] is None or as_is.method != "string"):
                readings = [as_is]
    return [value for reading in readings if reading is not None for value in reading.parsed]


def _plain(text: str) -> str:
    return " ".join(_TEXT_WRAPPER.sub(r"\1", text).replace("$", "").split()).lower()


def _verify(gold: list[Any], pred: list[Any]) -> bool:
    from math_verify import verify

    return bool(verify(gold, pred, timeout_seconds=None))


def score_math_verify(response: str, ground_truth: str) -> Score:
    cut = last_box_start(response)
    readings = [read(response[cut:]) if cut is not None else None, read(response)]  # the last box, then the whole
    readings = [r for r in readings if r is not None]
    if not readings:
        return Score(0.0, "no_answer")
    gold = read_ground_truth(ground_truth)
    for reading in readings:
        answer = reading.answer[:_ANSWER_PREVIEW]
        if gold and _verify(gold, reading.parsed):
            return Score(1.0, "match", answer, method=reading.method)
        # A word (`Evelyn`, `yes`) or a ground truth math-verify cannot read: the same text, `\text{}` or not.
        if (not gold or _WORD.fullmatch(ground_truth.strip())) and _plain(reading.answer) == _plain(ground_truth):
            return Score(1.0, "match", answer, method="string")
    first = readings[0]
    return Score(0.0, "mismatch", first.answer[:_ANSWER_PREVIEW], method=first.method)


# --- the cut-out modes ------------------------------------------------------------------------------------------


def parse_answer(text: str) -> list[Any]:
    """Parse a cut-out answer or a ground truth: LaTeX first, then a plain expression; [] when neither reads it."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    _quiet()
    text = text.strip().strip("$").strip()
    if not text:
        return []
    parsed = parse(
        f"${text}$",
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
        fallback_mode="no_fallback",
        parsing_timeout=None,
    )
    if not parsed:
        parsed = parse(
            text, extraction_config=[ExprExtractionConfig()], fallback_mode="no_fallback", parsing_timeout=None
        )
    return parsed


def _normalised(text: str) -> str:
    return " ".join(text.split()).lower()


def equivalent(answer: str, ground_truth: str) -> bool:
    gold = parse_answer(ground_truth)
    pred = parse_answer(answer)
    if not gold or not pred:
        # Not mathematics on one side (a word, a letter choice): compare the normalised strings.
        return _normalised(answer) == _normalised(ground_truth)
    return _verify(gold, pred)


def score_cut_out(response: str, ground_truth: str, mode: str) -> Score:
    found = find_answer(response, mode)
    if found is None:
        return Score(0.0, "no_answer")
    answer, method = found
    ok = equivalent(answer, ground_truth)
    return Score(1.0 if ok else 0.0, "match" if ok else "mismatch", answer[:_ANSWER_PREVIEW], method=method)


@register("math")
def score_math(response: str, ground_truth: str, *, extraction: str = DEFAULT_EXTRACTION) -> Score:
    if extraction == "math_verify":
        return score_math_verify(response, ground_truth)
    return score_cut_out(response, ground_truth, extraction)
