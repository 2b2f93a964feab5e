"""The learner's batching helpers, prompt schedule and checkpoint files (pure functions, no process group)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from aerplane.learner import checkpoint as ckpt
from aerplane.learner.batching import (
    TrainSample,
    collate,
    global_token_counts,
    group_accuracy,
    mean_by,
    micro_batches,
    rank_mini_batches,
    shard_prompts,
    truncate_response,
)
from aerplane.learner.rollouts import PromptSchedule, unique_prompt_ids


def _sample(q: int, prompt: list[int], response: list[int], adv: float = 1.0, lam: float = 1.0) -> TrainSample:
    return TrainSample(
        prompt_index=q,
        prompt_ids=prompt,
        response_ids=response,
        sampler_logprobs=[-0.5] * len(response),
        reward=1.0,
        advantage=adv,
        weight=lam,
        difficulty="easy",
        policy_version=0,
        prompt_id=f"p{q}",
    )


def test_collate_masks_exactly_the_response_predictions() -> None:
    a = _sample(0, [5, 6, 7], [8, 9], adv=0.5, lam=1.0)
    b = _sample(1, [1], [2, 3, 4], adv=-1.0, lam=0.0)
    mb = collate([a, b], pad_id=0)
    assert mb.input_ids.tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 4, 0]]
    assert mb.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # Position k predicts token k+1: a's response tokens 8, 9 are predicted at positions 2 and 3.
    assert mb.mask.tolist() == [[False, False, True, True], [True, True, True, False]]
    assert mb.targets[mb.mask].tolist() == [8, 9, 2, 3, 4]
    assert mb.advantages.tolist() == [0.5, 0.5, -1.0, -1.0, -1.0]
    assert mb.weights.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert mb.sample_of_token.tolist() == [0, 0, 1, 1, 1] and mb.num_tokens == 5


def test_shards_cover_every_prompt_once_and_token_counts_add_up() -> None:
    rng = random.Random(0)
    samples = [_sample(q, [1] * rng.randint(1, 5), [2] * rng.randint(1, 9)) for q in range(8) for _ in range(3)]
    for world in (1, 2, 4):
        seen = []
        for rank in range(world):
            parts = rank_mini_batches(samples, 8, rank, world, 2)
            assert len(parts) == 2
            seen += [id(s) for part in parts for s in part]
        assert sorted(seen) == sorted(id(s) for s in samples)
        # Mini-batch m holds the same prompts whatever the world size.
        for m in range(2):
            got = sorted(s.prompt_index for r in range(world) for s in rank_mini_batches(samples, 8, r, world, 2)[m])
            assert got == sorted(s.prompt_index for s in samples if s.prompt_index // 4 == m)
    counts = global_token_counts(samples, 8, 2)
    assert counts == [sum(s.num_tokens for s in samples if s.prompt_index // 4 == m) for m in range(2)]
    with pytest.raises(ValueError, match="do not split evenly"):
        shard_prompts(6, 0, 4)


def test_micro_batches_group_similar_lengths_deterministically() -> None:
    samples = [_sample(q, [1], [2] * n) for q, n in enumerate([3, 9, 1, 7, 5])]
    chunks = micro_batches(samples, 2)
    assert [[s.num_tokens for s in c] for c in chunks] == [[9, 7], [5, 3], [1]]
    assert micro_batches(list(reversed(samples)), 2) == chunks


def test_small_helpers() -> None:
    assert truncate_response(_sample(0, [1], [2, 3, 4]), 2).response_ids == [2, 3]
    assert group_accuracy([1.0, 0.0, 1.0, 0.0]) == 0.5
    assert mean_by([1.0, 0.0, 0.5], ["a", "b", "a"]) == {"a": 0.75, "b": 0.0}
    assert unique_prompt_ids(["x", "y", "x", "x"]) == ["x", "y", "x#1", "x#2"]


def test_prompt_schedule_is_a_pure_function_of_the_step() -> None:
    items = list(range(10))
    a = PromptSchedule(items, 4, seed=7)
    b = PromptSchedule(items, 4, seed=7)
    seq = [a.items_for_step(s) for s in range(5)]
    assert [b.items_for_step(s) for s in (4, 2, 0)] == [seq[4], seq[2], seq[0]]
    first_epoch = seq[0] + seq[1] + seq[2][:2]
    assert sorted(first_epoch) == items  # every item once per epoch
    assert a.position(3) == {"epoch": 1, "index": 2, "items": 10}


def test_checkpoint_commit_is_atomic_and_keeps_the_newest(tmp_path) -> None:
    root = tmp_path / "ckpt"
    for step in (1, 2, 3):
        tmp = ckpt.begin(root, step)
        ckpt.write_rank_rng(tmp, 0)
        assert ckpt.latest_checkpoint(root) in (None, (step - 1, root / ckpt.step_dir_name(step - 1)))
        ckpt.commit(root, step, {"step": step, "w": torch.ones(2) * step}, {"run_id": "r"}, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [2, 3]
    # A crash mid-write leaves only a dot-folder, which is never taken for a checkpoint.
    ckpt.begin(root, 4)
    assert ckpt.latest_checkpoint(root)[0] == 3
    state = ckpt.load_trainer_state(root / ckpt.step_dir_name(3))
    assert state["step"] == 3 and state["w"].tolist() == [3.0, 3.0]


def test_rng_state_round_trips() -> None:
    import numpy as np

    state = ckpt.rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    ckpt.set_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_metrics_log_drops_the_steps_a_resumed_run_trains_again(tmp_path) -> None:
    from aerplane.learner.metrics import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(4):
        log.append({"step": step, "alpha": float("nan") if step == 0 else 0.1})
    with open(log.path, "a") as f:
        f.write('{"step": 4, "alp')  # a line cut by a crash
    log.truncate_from(2)
    rows = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1] and rows[0]["alpha"] is None  # NaN is written as null


def test_local_coefficients_follow_the_strategy_and_ignore_a_repeated_report() -> None:
    from aerplane.learner.coefficients import LocalCoefficients

    c = LocalCoefficients("aer", {"eta": 0.1, "target_entropy": 2.0, "anchor_steps": 1.0}, {"weighting": "linear"})
    alpha, weights, _ = c.coefficients(0, [("a", 0.25, 4), ("b", 1.0, 4)])
    assert alpha == 0.0 and weights == [0.75, 0.0]
    c.report(0, 1.0, 10)  # anchors H_0
    state = c.report(1, 1.0, 10)  # below target: α rises
    assert state["initial_entropy"] == 1.0 and state["alpha"] > 0
    again = c.report(1, 1.0, 10)
    assert again["alpha"] == state["alpha"]
    restored = LocalCoefficients("aer", {"eta": 0.1, "target_entropy": 2.0}, {"weighting": "linear"})
    restored.load_state_dict(c.state_dict())
    assert restored.state() == c.state()
