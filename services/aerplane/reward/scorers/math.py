"""`math`: math-verify equivalence between the extracted answer and the ground truth.

The answer is taken from the response by the configured extraction (`\\boxed{...}`, else the last number), then
both sides are parsed as LaTeX first (`$...$`, which also reads plain forms like `0.5`, `2^(n-1)`, `{1,2}`, `(0,1]`
and strips units and `\\text{}`), then as a plain expression, and compared with `math_verify.verify`. math-verify's
own SIGALRM timeouts are disabled: the pool arms one timer around the whole item instead.
"""

from __future__ import annotations

import logging
from typing import Any

from aerplane.reward.scorers import Score, register
from aerplane.reward.scorers.extract import extract_answer

_ANSWER_PREVIEW = 200


def _quiet() -> None:
    # math-verify warns once that its timeouts are off, and logs every parse failure at WARNING/DEBUG.
    logging.getLogger("math_verify").setLevel(logging.ERROR)


def parse_answer(text: str) -> list[Any]:
    """Parse an answer or ground truth: LaTeX first, then a plain expression; [] when neither reads it."""
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


def equivalent(answer: str, ground_truth: str) -> bool:
    from math_verify import verify

    gold = parse_answer(ground_truth)
    pred = parse_answer(answer)
    if not gold or not pred:
        # Not mathematics on one side (a word, a letter choice): compare the normalised strings.
        return " ".join(answer.split()).lower() == " ".join(ground_truth.split()).lower()
    return bool(verify(gold, pred, timeout_seconds=None))


@register("math")
def score_math(response: str, ground_truth: str, *, extraction: str = "boxed_or_last_number") -> Score:
    answer = extract_answer(response, extraction)
    if answer is None:
        return Score(0.0, "no_answer")
    ok = equivalent(answer, ground_truth)
    return Score(1.0 if ok else 0.0, "match" if ok else "mismatch", answer[:_ANSWER_PREVIEW])
