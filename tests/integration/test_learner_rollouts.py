"""The learner's rollout collector against a real Redis: duplicates, stale samples, late and foreign ones."""

from __future__ import annotations

import threading

import pytest

from aerplane.common.messages import (
    ROLLOUT_REQUESTS,
    ROLLOUT_SCORED,
    PromptSlot,
    RolloutRequest,
    ScoredSample,
    build_requests,
)
from aerplane.common.streams import StreamClient
from aerplane.learner.rollouts import LEARNER_GROUP, RolloutCollector, RolloutTimeout, publish_requests

G = 2


def _scored(req: RolloutRequest, index: int, version: int, *, run_id: str | None = None, reward: float = 1.0):
    return ScoredSample(
        run_id=run_id or req.run_id,
        step=req.step,
        prompt_id=req.prompt_id,
        sample_index=index,
        num_samples=G,
        policy_version=version,
        task=req.task,
        difficulty=req.difficulty,
        ground_truth=req.ground_truth,
        prompt_token_ids=[1, 2],
        response_token_ids=[3, 4, index + 5],
        logprobs=[-1.0] * 3,
        response_text="",
        finish_reason="stop",
        reward=reward,
        reason="match",
    )


def _requests(step: int, n: int = 2, run_id: str = "r1") -> list[RolloutRequest]:
    slots = [PromptSlot(step, k, f"p{k}", f"prompt {k}", "42", "math", "easy") for k in range(n)]
    return build_requests(
        run_id,
        step,
        slots,
        num_samples=G,
        policy_version=max(0, step - 1),
        temperature=1.0,
        top_p=1.0,
        max_tokens=8,
        seed=0,
    )


@pytest.fixture
def setup(redis_url):
    client = StreamClient(redis_url, "r1")
    consumer = client.consumer(ROLLOUT_SCORED, LEARNER_GROUP, "learner-0", ScoredSample)
    collector = RolloutCollector(
        consumer,
        lambda reqs: publish_requests(client, reqs),
        run_id="r1",
        samples_per_prompt=G,
        staleness=1,
        rerequest_interval_s=0.0,
    )
    yield client, collector
    client.close()


def test_collects_complete_groups_dropping_duplicates_foreign_and_late_samples(setup) -> None:
    client, collector = setup
    step0, step1 = _requests(0), _requests(1)
    collector.expect(step0 + step1)
    a, b = step0
    client.publish_many(
        ROLLOUT_SCORED,
        [
            _scored(a, 0, 0),
            _scored(a, 0, 0),  # a re-delivered duplicate
            _scored(a, 1, 0, run_id="other"),  # another run's sample
            _scored(step1[0], 0, 1),  # early: next step's, kept for later
            _scored(a, 1, 0),
            _scored(b, 1, 0),
            _scored(b, 0, 0),
        ],
    )
    groups = collector.collect(0, timeout_s=20)
    assert list(groups) == ["p0", "p1"]
    assert [[s.sample_index for s in g] for g in groups.values()] == [[0, 1], [0, 1]]
    assert (collector.stats.accepted, collector.stats.duplicate, collector.stats.foreign) == (5, 1, 1)
    collector.finish(0)
    client.publish(ROLLOUT_SCORED, _scored(a, 0, 0))  # arrives after step 0 was trained
    client.publish_many(ROLLOUT_SCORED, [_scored(step1[0], 1, 1)] + [_scored(step1[1], i, 1) for i in range(G)])
    groups = collector.collect(1, timeout_s=20)
    assert sum(len(g) for g in groups.values()) == 2 * G and collector.stats.late == 1
    # Everything read was acked: nothing left pending for a restarted learner to re-read.
    assert client.group_info(ROLLOUT_SCORED, LEARNER_GROUP).pending == 0


def test_stale_samples_are_dropped_and_their_group_requested_again(setup) -> None:
    client, collector = setup
    step3 = _requests(3, n=1)
    collector.expect(step3)
    requests = client.consumer(ROLLOUT_REQUESTS, "generation", "g0", RolloutRequest)
    (req,) = step3
    # Version 1 is older than step 3 − staleness 1 = 2: stale.
    client.publish_many(ROLLOUT_SCORED, [_scored(req, 0, 1), _scored(req, 1, 1)])

    def regenerate() -> None:
        for _ in range(100):
            for d in requests.read(count=8, block_ms=200):
                assert d.record.prompt_id == "p0" and d.record.policy_version >= 2
                requests.publish_and_ack(ROLLOUT_SCORED, [_scored(d.record, i, 2) for i in range(G)], [d.id])
                return

    worker = threading.Thread(target=regenerate)
    worker.start()
    groups = collector.collect(3, timeout_s=30)
    worker.join()
    assert [s.policy_version for s in groups["p0"]] == [2, 2]
    assert collector.stats.stale == 2 and collector.stats.rerequested >= 1


def test_samples_of_a_step_not_requested_yet_are_kept_for_it(setup) -> None:
    """A resumed learner finds samples its crashed predecessor asked for; they count once its own requests match."""
    client, collector = setup
    step0, step1 = _requests(0), _requests(1)
    collector.expect(step0)
    client.publish_many(ROLLOUT_SCORED, [_scored(r, i, 0) for r in step1 for i in range(G)])
    client.publish_many(ROLLOUT_SCORED, [_scored(r, i, 0) for r in step0 for i in range(G)])
    collector.collect(0, timeout_s=20)
    collector.finish(0)
    collector.expect(step1[:1])  # this time step 1 asks for p0 only
    groups = collector.collect(1, timeout_s=5)
    assert list(groups) == ["p0"] and len(groups["p0"]) == G
    assert collector.stats.unexpected == G  # p1's samples: not part of the step


def test_a_step_that_never_completes_times_out_or_stops(setup) -> None:
    _, collector = setup
    collector.expect(_requests(0))
    with pytest.raises(RolloutTimeout, match="4 samples of 2 prompts still missing"):
        collector.collect(0, timeout_s=1.0)
    assert collector.collect(0, should_stop=lambda: True) is None
