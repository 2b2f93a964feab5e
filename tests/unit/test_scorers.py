"""Answer extraction and the scorers, run in-process with the real math-verify and reasoning-gym.

The `math` cases (tests/reward_cases.py) also go through a real service's POST /v1/verify in
tests/integration/test_reward_service.py.
"""

from __future__ import annotations

import pytest
from reward_cases import HACK_CASES, MATH_CASES

from aerplane.reward import scorers
from aerplane.reward.pool import PoolConfig, WorkerPool, score_item
from aerplane.reward.scorers import math as math_scorer
from aerplane.reward.scorers import reasoning_gym as rg_scorers
from aerplane.reward.scorers.extract import (
    extract_answer,
    find_answer,
    last_box_start,
    last_boxed,
    last_number,
    nests_deeper_than,
)

# --- extraction -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (r"so the answer is \boxed{42}.", "42"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are literal, not grouping
        (r"\boxed{\boxed{3}}", r"\boxed{3}"),  # the outer box
        (r"\boxed {x^{2}}", "x^{2}"),
        (r"\fbox{7}", "7"),
        (r"\boxed{5} and later \boxed{6", "5"),  # the last box never closes: the last closed one
        (r"\boxed{", None),
        (r"\boxed{}", None),
        ("no box here", None),
    ],
)
def test_last_boxed(text: str, want: str | None) -> None:
    assert last_boxed(text) == want


def test_last_boxed_survives_deep_nesting_and_megabytes() -> None:
    deep = r"\boxed{" + "{" * 100_000 + "7" + "}" * 100_000 + "}"
    assert last_boxed(deep) == "{" * 100_000 + "7" + "}" * 100_000
    assert last_boxed(r"\boxed{" * 50_000) is None
    assert last_boxed("x" * 3_000_000 + r"\boxed{9}") == "9"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("I think 12 apples, so 15.", "15"),
        ("total: 1,234,567 dollars", "1234567"),
        ("it is -3", "-3"),
        ("from 5-3 we get", "3"),
        ("ratio 3/4", "3/4"),
        ("pi is about 3.14.", "3.14"),
        ("H2O", None),
        ("nothing", None),
    ],
)
def test_last_number(text: str, want: str | None) -> None:
    assert last_number(text) == want


def test_extraction_modes() -> None:
    text = r"\boxed{x+1} and 17"
    assert extract_answer(text) == "x+1"
    assert extract_answer(text, "boxed") == "x+1"
    assert extract_answer(text, "last_number") == "17"
    assert extract_answer("only 17", "boxed") is None
    assert extract_answer(r"unclosed \boxed{12", "boxed_or_last_number") == "12"
    assert find_answer(text) == ("x+1", "boxed") and find_answer("only 17") == ("17", "last_number")
    with pytest.raises(ValueError, match="extraction"):
        extract_answer(text, "first_word")
    with pytest.raises(ValueError, match="extraction"):
        extract_answer(text, "math_verify")  # not a cut-out: math-verify reads the whole response


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (r"\boxed{3} wait, \boxed{5}.", 16),
        (r"\boxed{\boxed{3}}", None),  # one outer box
        (r"only \boxed{3}", None),
        (r"\boxed{3} and \boxed{4", None),  # the second never closes
        ("no box", None),
    ],
)
def test_last_box_start_only_when_there_are_several(text: str, want: int | None) -> None:
    assert last_box_start(text) == want


def test_nesting_cap_counts_all_brackets_in_one_pass() -> None:
    assert not nests_deeper_than(r"\left(\frac{1}{[2]}\right)", 4)
    assert nests_deeper_than(r"\left(\frac{1}{[((2))]}\right)", 4)
    assert not nests_deeper_than(")))" + "(" * 3 + ")" * 3 + "(((", 3)  # unmatched closers never go below zero
    assert nests_deeper_than("{" * 30_000 + "1" + "}" * 30_000, 32)
    assert not nests_deeper_than("{}" * 30_000, 32)


# --- math, default mode (math-verify reads the whole response) -------------------------------------------------


def _assert_scores(response: str, truth: str, reward: float, method: str, score: scorers.Score) -> None:
    want = (reward, "match" if reward == 1.0 else "mismatch", method)
    assert (score.reward, score.reason, score.method) == want, (response, truth, score)
    assert score.answer, score


@pytest.mark.parametrize(("response", "truth", "reward", "method"), MATH_CASES)
def test_math_verify_reads_standard_answer_forms(response: str, truth: str, reward: float, method: str) -> None:
    _assert_scores(response, truth, reward, method, score_item("math", response, truth))


@pytest.mark.parametrize(("response", "truth", "reward", "method"), HACK_CASES)
def test_math_verify_reward_hacking_does_not_pay(response: str, truth: str, reward: float, method: str) -> None:
    _assert_scores(response, truth, reward, method, score_item("math", response, truth))


def test_math_verify_reports_what_it_read() -> None:
    score = score_item("math", r"First \boxed{3}. Wait, no: \boxed{\frac{10}{9}}.", "10/9")
    assert (score.answer, score.method) == (r"\frac{10}{9}", "boxed")
    assert score_item("math", "The total is 1 000 apples", "1000").answer == "1000"
    assert score_item("math", "I don't know", "5") == scorers.Score(0.0, "no_answer")
    assert score_item("math", r"\boxed{", "5").reason == "no_answer"


@pytest.mark.parametrize("response", sorted({case[0] for case in MATH_CASES + HACK_CASES}))
def test_read_is_math_verify_parse(response: str) -> None:
    """`read` repeats math-verify's own extraction step for step: the same result as `parse` with its configs."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    want = parse(
        response, [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()], parsing_timeout=None
    )
    got = math_scorer.read(response)
    assert (got.parsed if got is not None else []) == want


@pytest.mark.parametrize(
    ("response", "truth"),
    [
        (r"\frac{10}{9}", "10/9"),  # no box: the last number is 9
        ("Answer $ 9 $ (check: 3 squared)", "9"),
        ("$[0,1)$", "$[0,1)$"),
    ],
)
def test_cut_out_extraction_misses_what_math_verify_reads(response: str, truth: str) -> None:
    assert score_item("math", response, truth).reward == 1.0
    assert score_item("math", response, truth, "boxed_or_last_number").reward == 0.0


# --- math, cut-out modes (our own extraction first) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "truth"),
    [
        (r"\boxed{\frac{1}{2}}", "0.5"),
        (r"\boxed{0.5}", r"\frac{1}{2}"),
        (r"\boxed{\dfrac{1}{2}}", r"\frac12"),
        (r"\boxed{\tfrac{3}{4}}", "0.75"),
        ("The answer is 1/2.", "0.5"),
        (r"\boxed{2^{n-1}}", "2^(n-1)"),
        (r"\boxed{\{2, 1\}}", r"\{1,2\}"),
        (r"\boxed{(0, 1]}", r"\left(0,1\right]"),
        (r"\boxed{[-1, \infty)}", r"[-1,\infty)"),
        (r"\boxed{5\text{ cm}}", "5"),
        (r"\boxed{12 \text{ inches}}", r"12"),
        ("So she has 18 dollars left.", "18"),
        (r"\boxed{x = 3}", "3"),
        (r"\boxed{\sqrt{8}}", r"2\sqrt{2}"),
        (r"\boxed{50\%}", "50"),
        (r"\boxed{1,000}", "1000"),
        (r"$\boxed{-\frac{7}{3}}$", r"-\frac{7}{3}"),
    ],
)
def test_cut_out_equivalent_forms_match(response: str, truth: str) -> None:
    score = score_item("math", response, truth, "boxed_or_last_number")
    assert (score.reward, score.reason) == (1.0, "match"), score
    assert score.method == ("last_number" if "boxed" not in response else "boxed")


@pytest.mark.parametrize(
    ("response", "truth"),
    [
        (r"\boxed{\frac{1}{3}}", "0.5"),
        (r"\boxed{2^{n}}", "2^(n-1)"),
        (r"\boxed{\{1, 3\}}", r"\{1,2\}"),
        (r"\boxed{(0, 1)}", r"(0,1]"),
        ("So she has 17 dollars left.", "18"),
        (r"\boxed{4} though 5 is tempting", "5"),  # the box wins over a later number
    ],
)
def test_cut_out_wrong_answers_score_zero(response: str, truth: str) -> None:
    score = score_item("math", response, truth, "boxed_or_last_number")
    assert (score.reward, score.reason) == (0.0, "mismatch"), score


def test_cut_out_no_answer_and_boxed_only_mode() -> None:
    assert score_item("math", "I don't know", "5", "boxed_or_last_number").reason == "no_answer"
    assert score_item("math", "it is 5", "5", "boxed").reason == "no_answer"
    assert score_item("math", "it is 5", "5", "last_number") == scorers.Score(1.0, "match", "5", method="last_number")
    assert score_item("math", r"\boxed{", "5", "boxed_or_last_number").reason == "no_answer"


def test_nesting_and_size_caps_come_before_any_parsing() -> None:
    pool = WorkerPool(PoolConfig(max_nesting=8, max_response_bytes=1000))  # never started: precheck is the parent's
    deep = r"\boxed{" + r"\frac{1}{" * 8 + "2" + "}" * 9
    assert pool.precheck("math", deep, "1") == scorers.Score(
        0.0, "too_long", detail="response nests brackets deeper than 8"
    )
    assert pool.precheck("math", "1", "(" * 9).reason == "too_long"
    assert pool.precheck("math", "9" * 1001, "9").reason == "too_long"
    assert pool.precheck("math", r"\boxed{\frac{1}{\sqrt{2}}}", "1") is None
    with pytest.raises(ValueError, match="max_nesting"):
        PoolConfig(max_nesting=0)
    with pytest.raises(ValueError, match="extraction"):
        PoolConfig(extraction="first_word")
    assert PoolConfig().extraction == scorers.DEFAULT_EXTRACTION == "math_verify"


def test_unknown_task_is_an_error_not_an_exception() -> None:
    score = score_item("no_such_task", "1", "1", "boxed_or_last_number")
    assert (score.reward, score.reason) == (0.0, "error") and "unknown task" in score.detail
    with pytest.raises(scorers.UnknownTask):
        scorers.get_scorer("no_such_task")


def test_math_aliases_are_registered_explicitly() -> None:
    assert not scorers.is_known("gsm8k_test_alias")
    scorers.configure(["gsm8k_test_alias"])
    assert score_item("gsm8k_test_alias", r"\boxed{0.5}", "1/2", "boxed_or_last_number").reason == "match"
    assert score_item("gsm8k_test_alias", r"so it is $\frac{1}{2}$", "1/2").reason == "match"  # the default too


# --- reasoning-gym ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", rg_scorers.NUMERIC_TASKS + rg_scorers.TEXT_TASKS)
def test_reasoning_gym_scorer_accepts_own_answers_and_rejects_others(task: str) -> None:
    import reasoning_gym

    data = reasoning_gym.create_dataset(task, seed=3, size=3)
    for entry in (data[0], data[1]):
        truth = entry["answer"]
        right = score_item(task, f"Reasoning...\n<answer>{truth}</answer>", truth, "boxed_or_last_number")
        assert (right.reward, right.reason) == (1.0, "match"), (task, truth, right)
        wrong = score_item(task, "<answer>zzz qqq</answer>", truth, "boxed_or_last_number")
        assert wrong.reward < 1.0 and wrong.reason == "mismatch", (task, truth, wrong)


@pytest.mark.parametrize("task", rg_scorers.DEFAULT_TRAINING_TASKS)
def test_default_training_tasks_read_boxed_and_plain_numbers(task: str) -> None:
    import reasoning_gym

    entry = reasoning_gym.create_dataset(task, seed=5, size=1)[0]
    truth = entry["answer"]
    assert score_item(task, rf"Adding up, \boxed{{{truth}}}", truth, "boxed_or_last_number").reason == "match"
    assert score_item(task, f"so the result is {truth}", truth, "boxed_or_last_number").reason == "match"
    wrong = str(int(float(truth)) + 1)
    assert score_item(task, rf"\boxed{{{wrong}}}", truth, "boxed_or_last_number").reward < 1.0
    assert score_item(task, "no idea", truth, "boxed_or_last_number").reason == "no_answer"


@pytest.mark.parametrize("task", rg_scorers.DEFAULT_TRAINING_TASKS)
def test_reasoning_gym_keeps_its_own_extraction_under_the_default(task: str) -> None:
    import reasoning_gym

    truth = reasoning_gym.create_dataset(task, seed=7, size=1)[0]["answer"]
    for response, method in (
        (rf"so \boxed{{{truth}}}", "boxed"),
        (f"<answer>{truth}</answer>", "answer_tag"),
        (f"the result is {truth}", "last_number"),
    ):
        default = score_item(task, response, truth)
        assert default == score_item(task, response, truth, "boxed_or_last_number")
        assert (default.reward, default.reason, default.method) == (1.0, "match", method), (response, default)


def test_numeric_tasks_normalise_thousands_separators() -> None:
    assert score_item("gsm_symbolic", r"\boxed{28,080}", "28080", "boxed_or_last_number").reason == "match"
    assert score_item("chain_sum", r"\boxed{x = -14282}", "-14282", "boxed_or_last_number").reason == "match"


def test_every_default_task_is_registered() -> None:
    known = set(scorers.known_tasks())
    assert {"math", "basic_arithmetic", "chain_sum", "gsm_symbolic"} <= known
    assert "sudoku" not in known  # its scorer needs metadata the stream does not carry


def test_a_scorer_returning_nonsense_scores_error() -> None:
    @scorers.register("test_nonsense_task")
    def nonsense(response: str, ground_truth: str, *, extraction: str) -> scorers.Score:
        return scorers.Score(float("nan"), "match") if response == "nan" else scorers.Score(1.0, "great")

    for response in ("nan", "other"):
        score = score_item("test_nonsense_task", response, "1", "boxed_or_last_number")
        assert (score.reward, score.reason) == (0.0, "error") and "scorer returned" in score.detail
