"""The learner's training step under DDP: 2 gloo processes, the tiny model, a fixed set of scored rollouts.

One torchrun job (this file run as a script, `python -m torch.distributed.run --nproc_per_node 2 <this file> OUT`)
runs `aerplane.learner.step.train_step` — the function the learner's loop calls — and records what the tests
below check; a single-process run of the same function on the same data is the reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

P, G = 4, 4
ALPHA_HIGH = 0.1


def _samples(seed: int = 0):
    import random

    from aerplane.learner.batching import TrainSample

    rng = random.Random(seed)
    out = []
    for q in range(P):
        prompt = [rng.randrange(100, 5000) for _ in range(rng.randint(4, 9))]
        rewards = [1.0, 1.0, 0.0, 0.0] if q % 2 == 0 else [1.0, 0.0, 0.0, 0.0]
        mean = sum(rewards) / G
        std = (sum((r - mean) ** 2 for r in rewards) / (G - 1)) ** 0.5
        for i in range(G):
            response = [rng.randrange(100, 5000) for _ in range(rng.randint(3, 10))]
            out.append(
                TrainSample(
                    prompt_index=q,
                    prompt_ids=prompt,
                    response_ids=response,
                    sampler_logprobs=[-10.8] * len(response),
                    reward=rewards[i],
                    advantage=(rewards[i] - mean) / (std + 1e-6),
                    weight=1.0,
                    difficulty="easy" if q < 2 else "hard",
                    policy_version=0,
                    prompt_id=f"q{q}",
                )
            )
    return out


def _job(out_dir: Path) -> None:
    """Runs on each of the 2 ranks."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from aerplane.data.embedded_models import tiny_model
    from aerplane.learner import distributed
    from aerplane.learner.batching import collate
    from aerplane.learner.policy import ResponseLogits, load_policy, token_stats
    from aerplane.learner.settings import LossSettings
    from aerplane.learner.step import train_step

    class RecordingSGD(torch.optim.SGD):
        """SGD that keeps a copy of the gradients it was given (lr 0: the parameters stay put)."""

        def step(self, closure=None):  # type: ignore[override]
            self.grads = torch.cat([p.grad.detach().flatten().clone() for g in self.param_groups for p in g["params"]])
            return super().step(closure)

    ctx = distributed.init("cpu")
    single = distributed.Dist(rank=0, world_size=1, local_rank=0, device=ctx.device, backend="gloo")
    path = tiny_model()
    lm = load_policy(path, "float32", ctx.device)
    initial = {k: v.clone() for k, v in lm.state_dict().items()}
    ddp = DistributedDataParallel(ResponseLogits(lm))
    ref_lm = load_policy(path, "float32", ctx.device)
    reference = ResponseLogits(ref_lm)
    samples = _samples()
    common = dict(num_prompts=P, loss=LossSettings(), temperature=1.0, pad_id=0, grad_clip=0.0)
    result: dict = {"rank": ctx.rank}

    # gradients after one step (micro-batches of 3: accumulation over several passes), vs one process, one pass
    opt = RecordingSGD(lm.parameters(), lr=0.0)
    r_ddp = train_step(ddp, opt, None, samples, ctx=ctx, alpha=0.01, micro_batch_size=3, **common)
    gathered = [torch.empty_like(opt.grads) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, opt.grads)
    ref_opt = RecordingSGD(ref_lm.parameters(), lr=0.0)
    r_single = train_step(reference, ref_opt, None, samples, ctx=single, alpha=0.01, micro_batch_size=16, **common)
    result["grads_rank_max_abs_diff"] = float((gathered[0] - gathered[1]).abs().max())
    result["grads_vs_single_max_abs_diff"] = float((opt.grads - ref_opt.grads).abs().max())
    result["grads_max_abs"] = float(ref_opt.grads.abs().max())
    result["entropy_ddp"], result["entropy_single"] = r_ddp.mean_entropy, r_single.mean_entropy
    result["entropy_by_ddp"], result["entropy_by_single"] = r_ddp.entropy_by_difficulty, r_single.entropy_by_difficulty
    result["tokens_ddp"], result["tokens_single"] = r_ddp.num_tokens, r_single.num_tokens
    result["pg_ddp"], result["pg_single"] = r_ddp.pg_loss, r_single.pg_loss

    def seq_logprobs_and_entropy() -> tuple[list[float], float]:
        with torch.no_grad():
            mb = collate(samples, 0)
            entropy, logprobs = token_stats(reference, mb, temperature=1.0, chunk_size=1024)
        per_sample = torch.zeros(len(samples)).index_add_(0, mb.sample_of_token, logprobs)
        return per_sample.tolist(), float(entropy.mean())

    def reset() -> None:
        lm.load_state_dict(initial)
        ref_lm.load_state_dict(initial)

    # a few steps on the fixed rollouts raise the probability of the rewarded responses
    before, _ = seq_logprobs_and_entropy()
    adam = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    for _ in range(4):
        train_step(ddp, adam, None, samples, ctx=ctx, alpha=0.0, micro_batch_size=4, **common)
    ref_lm.load_state_dict(lm.state_dict())
    after, _ = seq_logprobs_and_entropy()
    result["logprob_before"], result["logprob_after"] = before, after
    result["rewards"] = [s.reward for s in samples]
    result["advantages"] = [s.advantage for s in samples]

    # one step with α > 0 (λ = 1) leaves a higher-entropy policy than α = 0 from the same start
    entropies = {}
    for alpha in (0.0, ALPHA_HIGH):
        reset()
        adam = torch.optim.AdamW(lm.parameters(), lr=1e-3)
        train_step(ddp, adam, None, samples, ctx=ctx, alpha=alpha, micro_batch_size=4, **common)
        ref_lm.load_state_dict(lm.state_dict())
        entropies[str(alpha)] = seq_logprobs_and_entropy()[1]
    reset()
    result["entropy_start"] = seq_logprobs_and_entropy()[1]
    result["entropy_after_alpha0"], result["entropy_after_alpha_high"] = entropies["0.0"], entropies[str(ALPHA_HIGH)]
    params = torch.cat([p.detach().flatten() for p in lm.parameters()])
    all_params = [torch.empty_like(params) for _ in range(ctx.world_size)]
    dist.all_gather(all_params, params)
    result["params_rank_equal"] = bool(torch.equal(all_params[0], all_params[1]))

    (out_dir / f"rank{ctx.rank}.json").write_text(json.dumps(result))
    distributed.finish(0)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_gradients_are_identical_on_both_ranks_and_equal_one_process_on_the_whole_batch(job) -> None:
    r0, r1 = job
    assert r0["grads_rank_max_abs_diff"] == 0.0 and r1["grads_rank_max_abs_diff"] == 0.0
    assert r0["grads_max_abs"] > 0
    # the global token mean over 2 ranks × several micro-batches = one pass over the whole batch
    assert r0["grads_vs_single_max_abs_diff"] <= 1e-5 * r0["grads_max_abs"] + 1e-7


def test_all_reduced_entropy_equals_the_single_process_value(job) -> None:
    for r in job:
        assert r["tokens_ddp"] == r["tokens_single"]
        assert r["entropy_ddp"] == pytest.approx(r["entropy_single"], rel=1e-6)
        assert r["entropy_by_ddp"].keys() == {"easy", "hard"}
        for bucket, value in r["entropy_by_ddp"].items():
            assert value == pytest.approx(r["entropy_by_single"][bucket], rel=1e-6)
        assert r["pg_ddp"] == pytest.approx(r["pg_single"], rel=1e-5, abs=1e-7)
    assert job[0]["entropy_ddp"] == job[1]["entropy_ddp"]


def test_training_on_fixed_rollouts_raises_the_probability_of_rewarded_responses(job) -> None:
    r = job[0]
    deltas = [a - b for a, b in zip(r["logprob_after"], r["logprob_before"], strict=True)]
    rewarded = [d for d, adv in zip(deltas, r["advantages"], strict=True) if adv > 0]
    unrewarded = [d for d, adv in zip(deltas, r["advantages"], strict=True) if adv < 0]
    assert rewarded and unrewarded
    assert all(d > 0 for d in rewarded), deltas
    assert sum(unrewarded) / len(unrewarded) < 0 < sum(rewarded) / len(rewarded)
    assert job[0]["params_rank_equal"] and job[1]["params_rank_equal"]


def test_entropy_bonus_leaves_a_higher_entropy_policy(job) -> None:
    r = job[0]
    assert r["entropy_after_alpha_high"] > r["entropy_after_alpha0"], r
    assert r["entropy_after_alpha_high"] > r["entropy_start"]


if __name__ == "__main__":
    _job(Path(sys.argv[1]))
