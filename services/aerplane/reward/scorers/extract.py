"""Find the final answer in a model response: the last `\\boxed{...}`, else the last number.

Single linear passes, no recursion and no backtracking-prone patterns, so megabytes of text or thousands of nested
braces cost milliseconds (the pool's size cap and timeout still apply on top).
"""

from __future__ import annotations

import re

# `\boxed{` / `\fbox{` openers, TeX-escaped braces (`\{`, `\}`: literal, not grouping) and plain braces.
_BRACE_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[{}]|[{}]")
# Integers with optional thousands separators, decimals and a simple fraction: 42, -3.5, 1,000, 3/4.
_NUMBER = re.compile(r"(?<![\w.])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+)")
MAX_ANSWER_CHARS = 4096


def last_boxed(text: str) -> str | None:
    """Content of the last closed `\\boxed{...}` (balanced braces); an outer box wins over boxes inside it."""
    stack: list[tuple[int, bool]] = []  # (content start, is a box opener)
    best: tuple[int, int] | None = None  # (start, end) of the closed box that ends last
    for m in _BRACE_TOKENS.finditer(text):
        tok = m.group()
        if tok[0] == "\\" and len(tok) == 2:
            continue  # \{ or \}
        if tok.endswith("{"):
            stack.append((m.end(), tok != "{"))
        elif stack:
            start, is_box = stack.pop()
            if is_box:
                best = (start, m.start())
    if best is None:
        return None
    answer = text[best[0] : best[1]].strip()
    return answer or None


def last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last.group().replace(",", "") if last is not None else None


def extract_answer(text: str, mode: str = "boxed_or_last_number") -> str | None:
    """The answer by `mode`: `boxed_or_last_number` (default), `boxed` or `last_number`; None if there is none."""
    if mode == "boxed":
        answer = last_boxed(text)
    elif mode == "last_number":
        answer = last_number(text)
    elif mode == "boxed_or_last_number":
        answer = last_boxed(text)
        if answer is None:
            answer = last_number(text)
    else:
        raise ValueError(f"extraction: unknown mode {mode!r}")
    if answer is not None and len(answer) > MAX_ANSWER_CHARS:
        answer = answer[:MAX_ANSWER_CHARS]
    return answer
