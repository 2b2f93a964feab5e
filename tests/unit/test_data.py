"""Tasks and data: the training mixture, the held-out splits, users' jsonl/parquet files and their validation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from aerplane.data.tasks import (
    ANSWER_INSTRUCTION,
    DataError,
    TaskItem,
    chat_prompt,
    load_data_file,
    load_eval_tasks,
    load_training_tasks,
)


def _question(item: TaskItem) -> str:
    return item.messages[-1]["content"]


def test_mixed_training_tasks_are_deterministic_and_spread_over_difficulties() -> None:
    items = load_training_tasks("mixed", size=200, seed=3)
    assert items == load_training_tasks("mixed", size=200, seed=3)
    assert items != load_training_tasks("mixed", size=200, seed=4)
    assert len({i.prompt_id for i in items}) == 200
    by_level = Counter(i.difficulty for i in items)
    assert by_level == {"easy": 80, "medium": 70, "hard": 50}
    assert {i.task for i in items} == {"chain_sum", "basic_arithmetic", "gsm_symbolic"}
    assert {i.difficulty for i in items[:20]} == {"easy", "medium", "hard"}  # shuffled: a prefix is a mixture
    for item in items:
        assert item.messages[0]["role"] == "system" and item.messages[-1]["role"] == "user"
        assert ANSWER_INSTRUCTION in _question(item)
        assert item.ground_truth.strip() == item.ground_truth and item.ground_truth


def test_training_ground_truth_is_what_the_task_scorer_accepts() -> None:
    import reasoning_gym

    for item in load_training_tasks("mixed", size=60, seed=0):
        scorer = reasoning_gym.create_dataset(item.task, size=1, seed=0)
        entry = {"question": "", "answer": item.ground_truth, "metadata": {}}
        assert scorer.score_answer(item.ground_truth, entry) == 1.0
        assert scorer.score_answer("not the answer", entry) < 1.0


def test_easy_items_are_easier_than_hard_ones() -> None:
    items = load_training_tasks("mixed", size=300, seed=0)
    easy = [i for i in items if i.difficulty == "easy"]
    hard = [i for i in items if i.difficulty == "hard" and i.task == "basic_arithmetic"]
    assert all(abs(int(i.ground_truth)) <= 18 for i in easy)  # 1-digit a ± b
    assert sum(abs(float(i.ground_truth)) > 100 for i in hard) > len(hard) / 2


def test_single_reasoning_gym_dataset_by_name() -> None:
    items = load_training_tasks("gcd", size=5, seed=1)
    assert [i.task for i in items] == ["gcd"] * 5 and {i.difficulty for i in items} == {"default"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "no-such-task"}, "unknown training tasks 'no-such-task'"),
        ({"size": 0}, "size: must be an integer"),
        ({"seed": -1}, "seed: must be an integer"),
        ({"seed": 10**9}, "seed: must be an integer"),
    ],
)
def test_bad_training_task_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_training_tasks(**{"size": 4, **kwargs})


def test_held_out_split_uses_other_generator_seeds() -> None:
    train = load_training_tasks("mixed", size=400, seed=0)
    held = load_eval_tasks("rg-heldout", size=100)
    assert held == load_eval_tasks("rg-heldout", size=100)
    assert all(i.prompt_id.startswith("eval-") for i in held)
    assert not {i.prompt_id for i in held} & {i.prompt_id for i in train}
    # Non-trivial items (not 1-digit sums, whose whole space is ~200 questions) do not repeat training ones.
    hard_train = {_question(i) for i in train if i.difficulty == "hard"}
    hard_held = {_question(i) for i in held if i.difficulty == "hard"}
    assert hard_held and not hard_train & hard_held


def test_champ_has_its_270_problems() -> None:
    items = load_eval_tasks("champ")
    assert len(items) == 270 and len({i.prompt_id for i in items}) == 270
    assert {i.task for i in items} == {"math"}
    assert all(i.ground_truth for i in items)
    sample = load_eval_tasks("champ", size=10, seed=1)
    assert len(sample) == 10 and sample == load_eval_tasks("champ", size=10, seed=1)
    with pytest.raises(DataError, match="champ has 270 problems"):
        load_eval_tasks("champ", size=300)
    with pytest.raises(DataError, match="unknown evaluation set"):
        load_eval_tasks("mmlu")


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_verl_style_jsonl(tmp_path: Path) -> None:
    rows = [
        {
            "data_source": "gsm8k",
            "prompt": [{"role": "user", "content": "What is 2+3?"}],
            "reward_model": {"style": "rule", "ground_truth": "5"},
            "extra_info": {"index": 17},
        },
        {"prompt": "Compute 6*7.", "answer": 42, "task": "gsm8k", "difficulty": "easy"},
        {"prompt": "x?", "answer": ["1/2"], "id": "q3"},
    ]
    items = load_data_file(_write_jsonl(tmp_path / "data.jsonl", [rows[0], "", rows[1], rows[2]]))
    assert [i.prompt_id for i in items] == ["17", "data-3", "q3"]
    assert [i.ground_truth for i in items] == ["5", "42", "1/2"]
    assert [i.task for i in items] == ["math", "gsm8k", "math"]
    assert items[1].messages == [{"role": "user", "content": "Compute 6*7."}] and items[1].difficulty == "easy"


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {"prompt": [{"role": "user", "content": "1+1?"}], "reward_model": {"ground_truth": "2"}},
            {"prompt": [{"role": "user", "content": "2+2?"}], "reward_model": {"ground_truth": "4"}},
        ]
    )
    pq.write_table(table, tmp_path / "d.parquet")
    items = load_data_file(tmp_path / "d.parquet")
    assert [(i.prompt_id, i.ground_truth) for i in items] == [("d-1", "2"), ("d-2", "4")]

    pq.write_table(pa.Table.from_pylist([{"prompt": "q", "answer": None}]), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet:1: missing ground truth"):
        load_data_file(tmp_path / "bad.parquet")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ('{"prompt": "q", ', r"bad\.jsonl:2: not valid JSON"),
        ({"answer": "1"}, r"bad\.jsonl:2: missing 'prompt'"),
        ({"prompt": "", "answer": "1"}, r"bad\.jsonl:2: 'prompt' is empty"),
        ({"prompt": [{"role": "bot", "content": "q"}], "answer": "1"}, r"bad\.jsonl:2: prompt\[0\] must be"),
        (
            {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "1"},
            r"bad\.jsonl:2: the last prompt message is the assistant's",
        ),
        ({"prompt": "q"}, r"bad\.jsonl:2: missing ground truth"),
        ({"prompt": "q", "answer": ["1", "2"]}, r"bad\.jsonl:2: ground truth is a list of 2 values"),
        ({"prompt": "q", "answer": {"x": 1}}, r"bad\.jsonl:2: ground truth must be a string or a number"),
        ({"prompt": "q", "answer": "  "}, r"bad\.jsonl:2: ground truth is empty"),
        ({"prompt": "q", "answer": "1", "id": "a"}, r"bad\.jsonl:2: prompt_id 'a' repeats line 1"),
        ([1, 2], r"bad\.jsonl:2: expected an object"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, row: object, match: str) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "answer": "1", "id": "a"}, row])
    with pytest.raises(DataError, match=match):
        load_data_file(path)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_data_file(tmp_path / "missing.jsonl")
    (tmp_path / "d.csv").write_text("prompt,answer\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        load_data_file(tmp_path / "d.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_data_file(tmp_path / "empty.jsonl")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot read parquet"):
        load_data_file(tmp_path / "x.parquet")


def test_chat_prompt_renders_the_models_template() -> None:
    from transformers import AutoTokenizer

    from aerplane.data.embedded_models import tiny_model

    tok = AutoTokenizer.from_pretrained(str(tiny_model()))
    item = load_training_tasks("mixed", size=1, seed=0)[0]
    text = chat_prompt(tok, item)
    assert text.startswith("<|im_start|>system\n" + item.messages[0]["content"])
    assert _question(item) in text and text.endswith("<|im_start|>assistant\n")
    tok.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        chat_prompt(tok, item)
