"""`train_step` in one process on the tiny model: loss modes (a new registered one too), mini-batches, old-logprob
sources, KL, measuring."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
import torch

from aerplane.core.policy_losses import POLICY_LOSS_NAMES
from aerplane.learner.batching import TrainSample
from aerplane.learner.distributed import Dist
from aerplane.learner.policy import ResponseLogits, load_policy
from aerplane.learner.settings import LossSettings
from aerplane.learner.step import train_step

CTX = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")


@pytest.fixture(scope="module")
def model_path():
    from aerplane.data.embedded_models import tiny_model

    return tiny_model()


def _samples(prompts: int = 4, group: int = 2) -> list[TrainSample]:
    rng = random.Random(1)
    out = []
    for q in range(prompts):
        prompt = [rng.randrange(100, 3000) for _ in range(5)]
        for i in range(group):
            resp = [rng.randrange(100, 3000) for _ in range(rng.randint(2, 6))]
            out.append(
                TrainSample(
                    prompt_index=q,
                    prompt_ids=prompt,
                    response_ids=resp,
                    sampler_logprobs=[-3.0] * len(resp),
                    reward=float(i == 0),
                    advantage=1.0 if i == 0 else -1.0,
                    weight=1.0,
                    difficulty="easy",
                    policy_version=0,
                )
            )
    return out


def _run(model_path, loss: LossSettings, *, steps: int = 1, mini_batches: int = 1, update: bool = True, ref=False):
    lm = load_policy(model_path, "float32", CTX.device)
    policy = ResponseLogits(lm)
    ref_model = ResponseLogits(load_policy(model_path, "float32", CTX.device)).requires_grad_(False) if ref else None
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in lm.parameters()]
    results = [
        train_step(
            policy,
            opt,
            None,
            _samples(),
            num_prompts=4,
            ctx=CTX,
            alpha=0.01,
            loss=loss,
            temperature=1.0,
            micro_batch_size=3,
            mini_batches=mini_batches,
            ref_model=ref_model,
            update=update,
        )
        for _ in range(steps)
    ]
    changed = any(not torch.equal(a, b) for a, b in zip(before, lm.parameters(), strict=True))
    return results, changed


@pytest.mark.parametrize("mode", ["vanilla", "clip_cov", "kl_cov"])
def test_every_policy_loss_mode_trains(model_path, mode: str) -> None:
    params = {"clip_cov_ratio": 0.5} if mode == "clip_cov" else {"kl_cov_ratio": 0.5} if mode == "kl_cov" else {}
    (r,), changed = _run(model_path, LossSettings(policy_loss=mode, policy_loss_params=params))
    assert changed and r.updates == 1 and r.num_tokens > 0
    assert all(math.isfinite(x) for x in (r.pg_loss, r.mean_entropy, r.grad_norm))


def test_mini_batches_update_several_times_with_recomputed_old_logprobs(model_path) -> None:
    (one,), _ = _run(model_path, LossSettings())
    (two,), _ = _run(model_path, LossSettings(), mini_batches=2)
    assert one.updates == 1 and one.clip_fraction == 0.0  # one update: ratio ≡ 1
    assert two.updates == 2 and two.lr == 1e-2
    assert two.pg_loss != one.pg_loss  # the second mini-batch saw the first update through its ratio


def test_sampler_logprobs_as_old_policy_activate_the_clip(model_path) -> None:
    (r,), _ = _run(model_path, LossSettings(old_logprobs="sampler"))
    assert r.clip_fraction > 0  # the tiny model's logprobs (≈ −10.8) are far from the sampler's −3
    assert r.sampler_kl > 0


def test_kl_to_the_reference_grows_after_an_update(model_path) -> None:
    results, _ = _run(model_path, LossSettings(kl_coef=0.1), steps=2, ref=True)
    assert results[0].kl == pytest.approx(0.0, abs=1e-9) and results[1].kl > 0


def test_measuring_only_leaves_the_parameters_alone(model_path) -> None:
    (r,), changed = _run(model_path, LossSettings(), update=False)
    assert not changed and r.updates == 0 and r.grad_norm is None and r.mean_entropy > 0


def test_a_step_without_learning_signal_leaves_the_parameters_alone(model_path) -> None:
    """All advantages zero and no entropy term: the gradient is exactly zero, and AdamW must not step on momentum."""
    lm = load_policy(model_path, "float32", CTX.device)
    policy = ResponseLogits(lm)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)

    def step(samples: list[TrainSample], alpha: float):
        return train_step(
            policy,
            opt,
            None,
            samples,
            num_prompts=4,
            ctx=CTX,
            alpha=alpha,
            loss=LossSettings(),
            temperature=1.0,
            micro_batch_size=3,
        )

    first = step(_samples(), alpha=0.0)  # a real update first, so AdamW holds momentum
    assert first.skipped_updates == 0
    flat = [TrainSample(**{**s.__dict__, "advantage": 0.0, "reward": 0.0}) for s in _samples()]
    before = [p.detach().clone() for p in lm.parameters()]
    r = step(flat, alpha=0.0)
    assert r.grad_norm == 0.0 and r.skipped_updates == 1 and r.updates == 1
    assert all(torch.equal(a, b) for a, b in zip(before, lm.parameters(), strict=True))
    # With an entropy bonus the same batch has a gradient, and the update happens.
    r = step(flat, alpha=0.01)
    assert r.grad_norm > 0 and r.skipped_updates == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, lm.parameters(), strict=True))


ADD_A_MODE = """
import json, sys, typing

import torch
from pydantic import Field

from aerplane.core.policy_losses import PolicyLoss, register_policy_loss


@register_policy_loss("scaled")
class Scaled(PolicyLoss):
    \"\"\"test: the unclipped surrogate, scaled: pg = -scale * A * r.\"\"\"

    scale: float = Field(1.0, gt=0)
    \"\"\"Multiplies the term.\"\"\"

    def pg(self, t):
        return -self.scale * t.advantages * t.ratio, torch.zeros_like(t.valid)


from aerplane.common.flags import settings_flags
from aerplane.common.settings import SettingsError, load_settings
from aerplane.learner.batching import TrainSample
from aerplane.learner.distributed import Dist
from aerplane.learner.policy import ResponseLogits, load_policy
from aerplane.learner.settings import SECTION, LearnerSettings, LossSettings
from aerplane.learner.step import train_step

given = json.load(sys.stdin)
ctx = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")


def pg_loss(loss):
    lm = load_policy(given["model"], "float32", ctx.device)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    samples = [TrainSample(**s) for s in given["samples"]]
    r = train_step(
        ResponseLogits(lm), opt, None, samples, num_prompts=4, ctx=ctx, alpha=0.01, loss=loss, temperature=1.0,
        micro_batch_size=3,
    )
    return r.pg_loss


try:
    bad = {"loss": {"policy_loss": "scaled", "policy_loss_params": {"scale": -1}}}
    load_settings(LearnerSettings, bad, section=SECTION)
    error = None
except SettingsError as exc:
    error = str(exc)
loss = load_settings(LearnerSettings, {"loss": {"policy_loss": "scaled", "policy_loss_params": {"scale": 2}}}).loss
print(json.dumps({
    "flag": list(next(kw["choices"] for spec, kw in settings_flags(LearnerSettings) if spec.flag == "--policy-loss")),
    "policy": repr(loss.policy),
    "error": error,
    "scaled": pg_loss(loss),
    "vanilla": pg_loss(LossSettings()),
}))
"""


def test_a_mode_added_by_one_class_and_its_registration_trains(model_path) -> None:
    """A `PolicyLoss` class with `@register_policy_loss`, registered before the learner's settings are imported (in
    a fresh interpreter, so nothing outlives the test), is a `--policy-loss` choice, its parameters are checked when
    the settings are built, and `train_step` computes with it: nothing else is edited."""
    given = {"model": str(model_path), "samples": [s.__dict__ for s in _samples()]}
    out = subprocess.run(
        [sys.executable, "-c", ADD_A_MODE], input=json.dumps(given), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert got["flag"] == [*POLICY_LOSS_NAMES, "scaled"]
    assert got["policy"] == "Scaled(scale=2.0)"
    assert got["error"] == "learner.loss.policy_loss_params: scale: must be greater than 0, got -1.0"
    # one update per step: the ratio is 1, so vanilla's pg is −A and this mode's −2·A
    assert got["scaled"] == pytest.approx(2 * got["vanilla"]) and got["vanilla"] != 0
