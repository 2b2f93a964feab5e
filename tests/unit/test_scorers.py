"""Answer extraction and the scorers, run in-process with the real math-verify and reasoning-gym."""

from __future__ import annotations

import pytest

from aerplane.reward import scorers
from aerplane.reward.pool import score_item
from aerplane.reward.scorers import reasoning_gym as rg_scorers
from aerplane.reward.scorers.extract import extract_answer, last_boxed, last_number

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
    with pytest.raises(ValueError, match="extraction"):
        extract_answer(text, "first_word")


# --- math (math-verify) -----------------------------------------------------------------------------------------


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
def test_math_equivalent_forms_match(response: str, truth: str) -> None:
    score = score_item("math", response, truth, "boxed_or_last_number")
    assert (score.reward, score.reason) == (1.0, "match"), score


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
def test_math_wrong_answers_score_zero(response: str, truth: str) -> None:
    score = score_item("math", response, truth, "boxed_or_last_number")
    assert (score.reward, score.reason) == (0.0, "mismatch"), score


def test_math_no_answer_and_boxed_only_mode() -> None:
    assert score_item("math", "I don't know", "5", "boxed_or_last_number").reason == "no_answer"
    assert score_item("math", "it is 5", "5", "boxed").reason == "no_answer"
    assert score_item("math", r"\boxed{", "5", "boxed_or_last_number").reason == "no_answer"


def test_unknown_task_is_an_error_not_an_exception() -> None:
    score = score_item("no_such_task", "1", "1", "boxed_or_last_number")
    assert (score.reward, score.reason) == (0.0, "error") and "unknown task" in score.detail
    with pytest.raises(scorers.UnknownTask):
        scorers.get_scorer("no_such_task")


def test_math_aliases_are_registered_explicitly() -> None:
    assert not scorers.is_known("gsm8k_test_alias")
    scorers.configure(["gsm8k_test_alias"])
    assert score_item("gsm8k_test_alias", r"\boxed{0.5}", "1/2", "boxed_or_last_number").reason == "match"


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
