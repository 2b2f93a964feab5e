"""Prompts with verifiable answers: reasoning-gym training tasks, held-out evaluation sets, users' own files.

    from aerplane.data.tasks import load_training_tasks, load_eval_tasks, load_data_file, chat_prompt
    items = load_training_tasks("mixed", size=256, seed=0)       # offline, deterministic
    held_out = load_eval_tasks("rg-heldout", size=64)            # same mixture, seeds disjoint from training
    champ = load_eval_tasks("champ")                             # champ-dataset's 270 competition problems
    mine = load_data_file("dapo-math-17k.parquet")               # verl-style jsonl / parquet
    text = chat_prompt(tokenizer, items[0])                      # the chat-formatted prompt generation samples from

Every `TaskItem` carries a `task` the reward service can score: a reasoning-gym dataset name (scored by that
dataset's own `score_answer` on the answer string) or `math` (math-verify); `ground_truth` is the answer string.

The default `mixed` curriculum spreads difficulty so that a 135M model's group accuracies cover [0, 1] — which
is what AER's difficulty-aware weights act on — from 1-digit two-term sums that SmolLM2-135M often gets right to
multi-term 2–3 digit expressions with all four operators and GSM-style word problems that it almost never does:

| difficulty | share | tasks |
|---|---|---|
| easy   | 40% | chain_sum: 2 terms, 1 digit, + and − |
| medium | 35% | basic_arithmetic: 2–3 terms, 1–2 digits, + − ×, no parentheses; chain_sum: 3 terms, 2 digits |
| hard   | 25% | basic_arithmetic: 3–5 terms, 2–3 digits, + − × ÷, parentheses; gsm_symbolic |

`easy` keeps the easy and medium sources only, 65% easy and 35% medium, and `easy-tier` the easy source alone, for
short CPU runs that need a reward in most groups from the first step.

reasoning-gym derives item i of a dataset with seed s from `Random(s + i)`. Tier t of a mixture uses dataset seed
`seed + t · 10^7`; training seeds are below 10^8 and the held-out split's start at `EVAL_SEED_BASE` (10^9), so no
training item shares a generator seed with a held-out one (the tests also check the texts are disjoint).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_PROMPT = "You are a helpful math assistant. Solve the problem, then give the final answer as \\boxed{ANSWER}."
ANSWER_INSTRUCTION = "Put the final answer in \\boxed{}."
DIFFICULTIES = ("easy", "medium", "hard")
EVAL_SEED_BASE = 1_000_000_000
# Stride between the sub-datasets of one mixture, so their `Random(seed + i)` streams never overlap.
_TIER_STRIDE = 10_000_000
MAX_SIZE = _TIER_STRIDE
# Training generator seeds stay below seed + (tiers + 1) * stride < EVAL_SEED_BASE, the held-out split's range.
MAX_SEED = 10 * _TIER_STRIDE


class DataError(ValueError):
    """A data file or task specification that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class TaskItem:
    """One prompt with its verifiable answer."""

    prompt_id: str
    messages: list[dict[str, str]]  # chat messages (role, content), rendered by `chat_prompt`
    ground_truth: str
    task: str  # reward scorer: `math` or a reasoning-gym dataset name
    difficulty: str  # easy | medium | hard | default | unknown | a user-given label

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "messages": [dict(m) for m in self.messages],
            "ground_truth": self.ground_truth,
            "task": self.task,
            "difficulty": self.difficulty,
        }


@dataclass(frozen=True, slots=True)
class _Source:
    """One reasoning-gym configuration inside a mixture."""

    dataset: str
    difficulty: str
    share: float
    config: dict[str, Any] = field(default_factory=dict)


MIXED: tuple[_Source, ...] = (
    _Source("chain_sum", "easy", 0.40, {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    _Source(
        "basic_arithmetic",
        "medium",
        0.20,
        {
            "min_terms": 2,
            "max_terms": 3,
            "min_digits": 1,
            "max_digits": 2,
            "operators": ("+", "-", "*"),
            "allow_parentheses": False,
            "allow_negation": False,
        },
    ),
    _Source("chain_sum", "medium", 0.15, {"min_terms": 3, "max_terms": 3, "min_digits": 2, "max_digits": 2}),
    _Source("basic_arithmetic", "hard", 0.15, {"min_terms": 3, "max_terms": 5, "min_digits": 2, "max_digits": 3}),
    _Source("gsm_symbolic", "hard", 0.10),
)
# `easy`: the same sources weighted toward the easy tier (65 % / 35 % / 0 %), so a 135M model finds a reward in
# most groups from the first step; the CPU reference comparison trains on it (docs/results/README.md).
EASY: tuple[_Source, ...] = (
    _Source(MIXED[0].dataset, "easy", 0.65, MIXED[0].config),
    _Source(MIXED[1].dataset, "medium", 0.20, MIXED[1].config),
    _Source(MIXED[2].dataset, "medium", 0.15, MIXED[2].config),
)
EASY_TIER: tuple[_Source, ...] = (_Source(MIXED[0].dataset, "easy", 1.0, MIXED[0].config),)
MIXTURES: dict[str, tuple[_Source, ...]] = {"mixed": MIXED, "easy": EASY, "easy-tier": EASY_TIER}
EVAL_SETS = ("rg-heldout", "champ")


def user_message(question: str) -> list[dict[str, str]]:
    """The chat messages aerplane asks every generated task with."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{question.strip()}\n{ANSWER_INSTRUCTION}"},
    ]


# --- reasoning-gym ----------------------------------------------------------------------------------------------


def load_training_tasks(name: str = "mixed", size: int = 256, seed: int = 0) -> list[TaskItem]:
    """`size` training items of mixture `name` (`mixed`) or of one reasoning-gym dataset, deterministic in `seed`."""
    _check_size_seed(size, seed)
    return _generate(name, size, base_seed=seed, split="train")


def load_eval_tasks(name: str = "rg-heldout", size: int | None = None, seed: int = 0) -> list[TaskItem]:
    """Held-out evaluation items: `rg-heldout` (the `mixed` curriculum on seeds disjoint from training) or `champ`."""
    if name == "champ":
        return _load_champ(size, seed)
    if name == "rg-heldout":
        _check_size_seed(size if size is not None else 1, seed)
        return _generate("mixed", 200 if size is None else size, base_seed=EVAL_SEED_BASE + seed, split="eval")
    raise DataError(f"unknown evaluation set {name!r}: use one of {', '.join(EVAL_SETS)}")


def _check_size_seed(size: int, seed: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
        raise DataError(f"size: must be an integer in [1, {MAX_SIZE}], got {size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < MAX_SEED:
        raise DataError(f"seed: must be an integer in [0, {MAX_SEED}), got {seed!r}")


def _generate(name: str, size: int, *, base_seed: int, split: str) -> list[TaskItem]:
    import reasoning_gym

    sources = MIXTURES.get(name)
    if sources is None:
        if name not in reasoning_gym.factory.DATASETS:
            raise DataError(
                f"unknown training tasks {name!r}: use {', '.join(MIXTURES)} or a reasoning-gym dataset name"
            )
        sources = (_Source(name, "default", 1.0),)
    counts = _split_counts(size, [s.share for s in sources])
    items: list[TaskItem] = []
    for tier, (source, count) in enumerate(zip(sources, counts, strict=True)):
        if count == 0:
            continue
        # Item i of tier t uses Random(base_seed + t * stride + i): tiers never share a generator seed.
        ds_seed = base_seed + tier * _TIER_STRIDE
        dataset = reasoning_gym.create_dataset(source.dataset, seed=ds_seed, size=count, **source.config)
        for i in range(count):
            entry = dataset[i]
            items.append(
                TaskItem(
                    prompt_id=f"{split}-{source.dataset}-{source.difficulty}-s{base_seed}-t{tier}-{i}",
                    messages=user_message(entry["question"]),
                    ground_truth=str(entry["answer"]),
                    task=source.dataset,
                    difficulty=source.difficulty,
                )
            )
    random.Random(base_seed).shuffle(items)  # interleave difficulties so any prefix is a mixture
    return items


def _split_counts(size: int, shares: Sequence[float]) -> list[int]:
    """Largest-remainder apportionment of `size` items over `shares`."""
    total = sum(shares)
    exact = [size * s / total for s in shares]
    counts = [int(x) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: size - sum(counts)]:
        counts[i] += 1
    return counts


# --- champ-dataset ----------------------------------------------------------------------------------------------


def _load_champ(size: int | None, seed: int) -> list[TaskItem]:
    """CHAMP's 270 competition problems (answers are free-form; scored with `math`)."""
    import champ_dataset

    dataset = champ_dataset.load("v0")
    problems = list(dataset.problems.values())
    if size is not None:
        if not isinstance(size, int) or not 1 <= size <= len(problems):
            raise DataError(f"size: champ has {len(problems)} problems, got {size!r}")
        problems = random.Random(seed).sample(problems, size)
    return [
        TaskItem(
            prompt_id=f"champ-{p.identifier}",
            messages=user_message(p.text),
            ground_truth=p.answer,
            task="math",
            difficulty="hard",
        )
        for p in problems
    ]


# --- users' files -----------------------------------------------------------------------------------------------

_ROLES = ("system", "user", "assistant")


def load_data_file(path: str | Path) -> list[TaskItem]:
    """Prompts from a verl-style `.jsonl` / `.parquet` file, validated row by row.

    Each row needs `prompt` (a string, or a list of `{"role", "content"}` chat messages) and a ground truth under
    `reward_model.ground_truth` or `answer` (a string or number, or a list holding one). Optional: `task` (scorer;
    default `math`), `difficulty` (default `unknown`), `prompt_id` / `id` / `extra_info.index` (default
    `<file stem>-<line>`). A string prompt becomes one user message, with no system prompt added.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .jsonl or .parquet)")
    items: list[TaskItem] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        item = _row_to_item(path, line, row)
        if item.prompt_id in seen:
            raise DataError(f"{path}:{line}: prompt_id {item.prompt_id!r} repeats line {seen[item.prompt_id]}")
        seen[item.prompt_id] = line
        items.append(item)
    if not items:
        raise DataError(f"{path}: no rows")
    return items


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"{path}: cannot read parquet ({type(exc).__name__}: {exc})") from None
    yield from enumerate(table.to_pylist(), start=1)  # "line" = 1-based row number


def _row_to_item(path: Path, line: int, row: Any) -> TaskItem:
    where = f"{path}:{line}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object, got {type(row).__name__}")
    messages = _messages(where, row.get("prompt"))
    truth = _ground_truth(where, row)
    task = row.get("task") or "math"
    difficulty = row.get("difficulty") or "unknown"
    if not isinstance(task, str) or not isinstance(difficulty, str):
        raise DataError(f"{where}: task and difficulty must be strings")
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    pid = row.get("prompt_id", row.get("id", extra.get("index")))
    prompt_id = f"{path.stem}-{line}" if pid is None else str(pid)
    if not prompt_id.strip():
        raise DataError(f"{where}: prompt_id must not be empty")
    return TaskItem(prompt_id=prompt_id, messages=messages, ground_truth=truth, task=task, difficulty=difficulty)


def _messages(where: str, prompt: Any) -> list[dict[str, str]]:
    if prompt is None:
        raise DataError(f"{where}: missing 'prompt'")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError(f"{where}: 'prompt' is empty")
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise DataError(f"{where}: 'prompt' must be a string or a non-empty list of chat messages")
    out = []
    for n, msg in enumerate(prompt):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str) or msg.get("role") not in _ROLES:
            raise DataError(
                f"{where}: prompt[{n}] must be {{'role': one of {', '.join(_ROLES)}, 'content': a string}}, got {msg!r}"
            )
        out.append({"role": msg["role"], "content": msg["content"]})
    if out[-1]["role"] == "assistant":
        raise DataError(f"{where}: the last prompt message is the assistant's; nothing left to generate")
    return out


def _ground_truth(where: str, row: dict[str, Any]) -> str:
    reward_model = row.get("reward_model")
    value = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    if value is None:
        value = row.get("answer")
    if value is None:
        raise DataError(f"{where}: missing ground truth (reward_model.ground_truth or answer)")
    if isinstance(value, list):
        if len(value) != 1:
            raise DataError(f"{where}: ground truth is a list of {len(value)} values; give exactly one")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"{where}: ground truth must be a string or a number, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: ground truth is empty")
    return text


# --- prompts ----------------------------------------------------------------------------------------------------


def chat_prompt(tokenizer: Any, item: TaskItem) -> str:
    """The prompt text generation samples from: the item's messages through the model's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the tokenizer has no chat template; use an instruct model (or one with chat_template set)")
    return tokenizer.apply_chat_template(item.messages, tokenize=False, add_generation_prompt=True)
