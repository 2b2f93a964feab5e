"""Our own cut-out extraction (the `boxed`, `last_number` and `boxed_or_last_number` modes) and the input guards.

The default `math_verify` mode does not use the cut-out: math-verify reads the whole response (`scorers.math`).
What it still uses from here: `last_box_start` (the last `\\boxed{}` counts when there are several) and
`nests_deeper_than` (the pool's nesting cap, checked before anything is parsed).

Single linear passes, no recursion and no backtracking-prone patterns, so megabytes of text or thousands of nested
braces cost milliseconds (the pool's size caps and timeout still apply on top).
"""

from __future__ import annotations

import re

CUT_OUT_MODES = ("boxed", "last_number", "boxed_or_last_number")

# `\boxed{` / `\fbox{` openers, TeX-escaped braces (`\{`, `\}`: literal, not grouping) and plain braces.
_BRACE_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[{}]|[{}]")
# Integers with optional thousands separators, decimals and a simple fraction: 42, -3.5, 1,000, 3/4.
_NUMBER = re.compile(r"(?<![\w.])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+)")
_BRACKETS = re.compile(r"[{}()\[\]]")
_OPENERS = "{(["
MAX_ANSWER_CHARS = 4096


def _last_box(text: str) -> tuple[int, int, int, int] | None:
    """(opener start, content start, content end, first box opener) of the last closed box; an outer box wins."""
    stack: list[tuple[int, int, bool]] = []  # (opener start, content start, is a box opener)
    best: tuple[int, int, int] | None = None  # the closed box that ends last
    first = -1
    for m in _BRACE_TOKENS.finditer(text):
        tok = m.group()
        if tok[0] == "\\" and len(tok) == 2:
            continue  # \{ or \}
        if tok.endswith("{"):
            is_box = tok != "{"
            if is_box and first < 0:
                first = m.start()
            stack.append((m.start(), m.end(), is_box))
        elif stack:
            opener, start, is_box = stack.pop()
            if is_box:
                best = (opener, start, m.start())
    return None if best is None else (*best, first)


def last_boxed(text: str) -> str | None:
    """Content of the last closed `\\boxed{...}` (balanced braces); an outer box wins over boxes inside it."""
    box = _last_box(text)
    if box is None:
        return None
    answer = text[box[1] : box[2]].strip()
    return answer or None


def last_box_start(text: str) -> int | None:
    """Where the last closed box starts when another box opens before it (else None: there is nothing to cut)."""
    box = _last_box(text)
    if box is None or box[0] == box[3]:
        return None
    return box[0]


def last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last.group().replace(",", "") if last is not None else None


def find_answer(text: str, mode: str = "boxed_or_last_number") -> tuple[str, str] | None:
    """(answer, how it was found: `boxed` or `last_number`) by a cut-out `mode`; None if there is none."""
    if mode not in CUT_OUT_MODES:
        raise ValueError(f"extraction: unknown mode {mode!r} (cut-out modes: {', '.join(CUT_OUT_MODES)})")
    answer, method = None, ""
    if mode in ("boxed", "boxed_or_last_number"):
        answer, method = last_boxed(text), "boxed"
    if answer is None and mode in ("last_number", "boxed_or_last_number"):
        answer, method = last_number(text), "last_number"
    if answer is None:
        return None
    return answer[:MAX_ANSWER_CHARS], method


def extract_answer(text: str, mode: str = "boxed_or_last_number") -> str | None:
    """The answer by a cut-out `mode`: `boxed_or_last_number`, `boxed` or `last_number`; None if there is none."""
    found = find_answer(text, mode)
    return None if found is None else found[0]


def nests_deeper_than(text: str, limit: int) -> bool:
    """Whether `{`, `(` and `[` (one count for all three) nest deeper than `limit` anywhere in `text`.

    Nesting is what makes LaTeX parsing slow (16 nested braces take math-verify seconds), so the pool refuses input
    nested deeper than its cap before any parsing. Unmatched closers do not go below zero.
    """
    if sum(text.count(c) for c in _OPENERS) <= limit:
        return False  # too few openers to get there: skip the scan
    depth = 0
    for m in _BRACKETS.finditer(text):
        if m.group() in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return False
