"""Policy losses: clip-higher surrogate, token-mean, entropy term, k3 KL, Clip-Cov, KL-Cov (hand-computed), and the
policy-loss registry (a mode added by one class and its registration)."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import Field

from aerplane.core import policy_losses
from aerplane.core.losses import compute_loss, k3_kl, token_mean
from aerplane.core.policy_losses import (
    POLICY_LOSS_NAMES,
    ClipCov,
    KlCov,
    PolicyLoss,
    Ratios,
    Vanilla,
    build_policy_loss,
    register_policy_loss,
)
from aerplane.core.strategies import STRATEGY_NAMES, build_strategy


def leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_asymmetric_clip_hand_computed():
    # four tokens, eps_low 0.2, eps_high 0.28:
    #  A=+1, r=1.5 → max(−1.5, −1.28) = −1.28 (clipped, no gradient)
    #  A=−1, r=0.5 → max(0.5, 0.8) = 0.8      (clipped, no gradient)
    #  A=−1, r=1.5 → max(1.5, 1.28) = 1.5     (not clipped: ∂/∂logp = −A·r = 1.5)
    #  A=+1, r=0.5 → max(−0.5, −0.8) = −0.5   (not clipped: ∂/∂logp = −A·r = −0.5)
    old = torch.zeros(4, dtype=torch.float64)
    logp = leaf([math.log(1.5), math.log(0.5), math.log(1.5), math.log(0.5)])
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    pg, clipped = Vanilla().tokens(logp, old, adv, eps_low=0.2, eps_high=0.28)
    torch.testing.assert_close(pg, torch.tensor([-1.28, 0.8, 1.5, -0.5], dtype=torch.float64))
    assert clipped.tolist() == [True, True, False, False]
    pg.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 0.0, 1.5, -0.5], dtype=torch.float64))


def test_token_mean_over_whole_batch_not_per_sequence():
    values = torch.tensor([[1.0, 2.0, 3.0], [10.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert token_mean(values, mask).item() == pytest.approx(16 / 4)  # per-sequence mean would give (2 + 10)/2
    assert token_mean(values, mask, num_tokens=8).item() == pytest.approx(16 / 8)
    assert token_mean(values, torch.zeros_like(mask)).item() == 0.0


def test_compute_loss_hand_computed_with_entropy_term():
    # two samples × two tokens, second sample's last token masked out
    # sample 0: A=+1, ratios [2, 1]; sample 1: A=−1, ratio [1]  →  pg = [−1.28, −1, 1] → pg_loss = −1.28/3
    # H = [[1, 2], [3, 4]], λ = [1, 0] → token_mean(λH) = (1 + 2 + 0)/3 = 1; α = 0.1 → entropy_loss 0.1
    logp = leaf([[math.log(0.5), math.log(0.25)], [math.log(0.5), math.log(0.5)]])
    old = torch.log(torch.tensor([[0.25, 0.25], [0.5, 0.5]], dtype=torch.float64))
    entropy = leaf([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = compute_loss(
        logp, old, torch.tensor([1.0, -1.0]), entropy, mask, alpha=0.1, prompt_weights=torch.tensor([1.0, 0.0])
    )
    assert stats["pg_loss"] == pytest.approx(-1.28 / 3)
    assert stats["weighted_entropy"] == pytest.approx(1.0)
    assert stats["entropy_loss"] == pytest.approx(0.1)
    assert stats["mean_entropy"] == pytest.approx((1 + 2 + 3) / 3)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)
    assert stats["num_tokens"] == 3.0
    assert stats["approx_kl"] == pytest.approx((math.log(0.25) - math.log(0.5)) / 3)
    assert loss.item() == pytest.approx(-1.28 / 3 - 0.1)
    loss.backward()
    # ∂L/∂H = −α·λ/3 on valid tokens
    torch.testing.assert_close(entropy.grad, torch.tensor([[-0.1 / 3, -0.1 / 3], [0.0, 0.0]], dtype=torch.float64))
    # ∂L/∂logp: token (0,0) clipped → 0; (0,1): −A·r/3 = −1/3; (1,0): +1/3; masked → 0
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -1 / 3], [1 / 3, 0.0]], dtype=torch.float64))


def test_k3_kl_hand_computed_and_in_loss():
    # d = log π_ref − log π = log(0.25/0.5) = −ln 2 → k3 = 0.5 + ln 2 − 1
    logp = leaf([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)], dtype=torch.float64)
    expected = 0.5 + math.log(2) - 1
    assert k3_kl(logp, ref).item() == pytest.approx(expected)
    assert k3_kl(logp, logp.detach()).item() == 0.0
    loss, stats = compute_loss(logp, logp.detach(), torch.zeros(1), torch.zeros(1), ref_logprobs=ref, kl_coef=0.5)
    assert stats["kl"] == pytest.approx(expected) and loss.item() == pytest.approx(0.5 * expected)
    loss.backward()
    assert logp.grad.item() == pytest.approx(0.5 * (1 - 0.5))  # ∂k3/∂logp = 1 − exp(d)


def cov_case():
    # logp mean −3, A mean 0 → cov = (logp + 3)·A = [4, 4, 0, 0]; ratio 1 so nothing is ratio-clipped
    logp = leaf([-1.0, -5.0, -3.0, -3.0])
    adv = torch.tensor([2.0, -2.0, 0.5, -0.5], dtype=torch.float64)
    return logp, logp.detach().clone(), adv


def test_clip_cov_detaches_a_random_candidate():
    logp, old, adv = cov_case()
    # 0.25 · 4 tokens = 1 token, drawn from the two with cov = 4 ∈ (1, 5)
    pg, affected = ClipCov(clip_cov_ratio=0.25).tokens(logp, old, adv)
    torch.testing.assert_close(pg, -adv)  # values kept
    assert affected.sum() == 1 and not affected[2:].any()
    pg.sum().backward()
    grad = logp.grad.tolist()  # vanilla gradient −A·r = [−2, 2, −0.5, 0.5]; the detached token gives 0
    assert grad[2:] == [-0.5, 0.5]
    assert sorted(grad[:2]) in ([-2.0, 0.0], [0.0, 2.0])
    assert grad[:2].count(0.0) == 1


def test_clip_cov_bounds_and_ratio():
    logp, old, adv = cov_case()
    _, affected = ClipCov(clip_cov_ratio=1.0).tokens(logp, old, adv)
    assert affected.tolist() == [True, True, False, False]  # every candidate, never the out-of-bounds ones
    _, affected = ClipCov(clip_cov_ratio=1.0, clip_cov_lb=4.5).tokens(logp, old, adv)
    assert not affected.any()
    pg_v, _ = Vanilla().tokens(logp, old, adv)
    pg_c, _ = ClipCov(clip_cov_ub=3.0).tokens(logp, old, adv)
    torch.testing.assert_close(pg_v, pg_c)


def test_kl_cov_hand_computed():
    # logp = [−1, −3, −4, −4] (mean −3), A = [3, −1, −1, −1] (mean 0) → cov = [6, 0, 1, 1]; top-1 = token 0
    # old = logp − 0.5 → r = e^0.5 everywhere, not clipped in KL-Cov: pg = −A·e^0.5, + 0.5·|0.5| on token 0
    logp = leaf([-1.0, -3.0, -4.0, -4.0])
    old = logp.detach() - 0.5
    adv = torch.tensor([3.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    pg, affected = KlCov(kl_cov_ratio=0.25, kl_cov_coef=0.5).tokens(logp, old, adv)
    r = math.exp(0.5)
    torch.testing.assert_close(pg, torch.tensor([-3 * r + 0.25, r, r, r], dtype=torch.float64))
    assert affected.tolist() == [True, False, False, False]
    pg.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([-3 * r + 0.5, r, r, r], dtype=torch.float64))


def test_mode_parameters_validated():
    with pytest.raises(ValueError, match="^policy_loss:"):
        build_policy_loss("entropy_cov")
    with pytest.raises(ValueError, match="^kl_cov_ratio: unknown parameter for policy_loss 'clip_cov'"):
        build_policy_loss("clip_cov", {"kl_cov_ratio": 0.1})
    with pytest.raises(ValueError, match="^clip_cov_ratio:"):
        build_policy_loss("clip_cov", {"clip_cov_ratio": float("nan")})
    with pytest.raises(ValueError, match="^clip_cov_lb:"):
        build_policy_loss("clip_cov", {"clip_cov_lb": 6.0})
    with pytest.raises(ValueError, match="^kl_cov_coef:"):
        build_policy_loss("kl_cov", {"kl_cov_coef": -1.0})
    assert build_policy_loss("kl_cov", {"kl_cov_ratio": 0.01}).model_dump() == {
        "kl_cov_ratio": 0.01,
        "kl_cov_coef": 0.1,
    }
    with pytest.raises(ValueError, match="^alpha:"):
        compute_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), alpha=float("nan"))
    with pytest.raises(ValueError, match="^prompt_weights:"):
        compute_loss(
            torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), prompt_weights=torch.full((2,), 2.0)
        )
    with pytest.raises(ValueError, match="^entropy:"):
        compute_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(3))


@pytest.mark.parametrize("mode", ["vanilla", "clip_cov", "kl_cov"])
@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_alpha_zero_gives_plain_policy_gradient_loss(name, mode):
    zero = {"none": {}, "fixed": {"alpha": 0.0}, "skywork": {"alpha_init": 0.0}, "aer": {"alpha_init": 0.0}}
    strategy = build_strategy(name, **zero[name])
    state = strategy.initial_state()
    alpha = strategy.coefficient(state)
    assert alpha == 0.0
    weights = torch.tensor(strategy.prompt_weights(state, [0.0, 0.75]), dtype=torch.float64)

    gen = torch.Generator().manual_seed(5)
    base = torch.randn(2, 6, generator=gen, dtype=torch.float64) - 2
    old = base + 0.3 * torch.randn(2, 6, generator=gen, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    entropy_values = torch.rand(2, 6, generator=gen, dtype=torch.float64) * 3
    params = {"clip_cov_ratio": 0.5} if mode == "clip_cov" else {"kl_cov_ratio": 0.25} if mode == "kl_cov" else {}

    logp = base.clone().requires_grad_(True)
    ent = entropy_values.clone().requires_grad_(True)
    loss, _ = compute_loss(
        logp,
        old,
        adv,
        ent,
        mask,
        alpha=alpha,
        prompt_weights=weights,
        policy=build_policy_loss(mode, params),
        generator=torch.Generator().manual_seed(0),
    )
    loss.backward()

    plain_logp = base.clone().requires_grad_(True)
    pg, _ = build_policy_loss(mode, params).tokens(
        plain_logp, old, adv.unsqueeze(-1), mask=mask, generator=torch.Generator().manual_seed(0)
    )
    plain = pg.sum() / mask.sum()
    plain.backward()
    assert loss.item() == pytest.approx(plain.item(), abs=1e-15)
    torch.testing.assert_close(logp.grad, plain_logp.grad, rtol=0, atol=1e-15)
    assert not ent.grad.any()


# --- the policy-loss registry ----------------------------------------------------------------------------------------
def test_the_registry_holds_the_three_modes_with_verl_defaults():
    assert POLICY_LOSS_NAMES == ("vanilla", "clip_cov", "kl_cov")
    assert Vanilla().model_dump() == {}
    assert ClipCov().model_dump() == {"clip_cov_ratio": 2e-4, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0}
    assert KlCov().model_dump() == {"kl_cov_ratio": 2e-4, "kl_cov_coef": 0.1}
    for cls in policy_losses.REGISTRY.values():  # every hyperparameter has its one line of doc
        assert all(info.description for info in cls.model_fields.values())


@pytest.mark.parametrize(
    "mode, params, message",
    [
        ("clip_cov", {"clip_cov_ratio": 2.0}, "clip_cov_ratio: must be less than or equal to 1, got 2.0"),
        ("kl_cov", {"kl_cov_coef": float("inf")}, "kl_cov_coef: must be a finite number, got inf"),
        ("kl_cov", {"kl_cov_ratio": True}, "kl_cov_ratio: must be a valid number, got True"),
        ("clip_cov", {"clip_cov_lb": 6.0}, "clip_cov_lb: must be < clip_cov_ub (5.0), got 6.0"),
        (
            "vanilla",
            {"clip_cov_ratio": 0.1},
            "clip_cov_ratio: unknown parameter for policy_loss 'vanilla' (allowed: none)",
        ),
        (
            "kl_cov",
            {"kl_cov_coeff": 0.1},
            "kl_cov_coeff: unknown parameter for policy_loss 'kl_cov' (allowed: kl_cov_ratio, kl_cov_coef)",
        ),
    ],
)
def test_bad_mode_parameters_give_one_line_naming_the_key(mode, params, message):
    with pytest.raises(ValueError) as err:
        build_policy_loss(mode, params)
    assert str(err.value) == message


@pytest.fixture
def reinforce():
    """A mode added the way every new one is, one class and its registration; taken out of the registry after."""

    @register_policy_loss("test_reinforce")
    class Reinforce(PolicyLoss):
        """REINFORCE with the ratio, scaled: pg = −scale·A·r, nothing clipped."""

        scale: float = Field(1.0, gt=0)
        """Multiplies the term."""

        def pg(self, t: Ratios) -> tuple[torch.Tensor, torch.Tensor]:
            return -self.scale * t.advantages * t.ratio, torch.zeros_like(t.valid)

    yield Reinforce
    del policy_losses.REGISTRY["test_reinforce"]


def test_a_mode_added_by_one_class_and_its_registration_computes_through_compute_loss(reinforce):
    assert policy_losses.policy_loss_names()[-1] == "test_reinforce"
    mode = build_policy_loss("test_reinforce", {"scale": 2.0})
    assert type(mode) is reinforce and mode.name == "test_reinforce"
    # r = [2, 1], A = [1, −1] → pg = −2·A·r = [−4, 2], token mean −1; ∂/∂logp = −2·A·r / 2 = [−2, 1]
    logp = leaf([math.log(2.0), 0.0])
    loss, stats = compute_loss(
        logp, torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, -1.0]), torch.zeros(2), policy=mode
    )
    assert stats["pg_loss"] == pytest.approx(-1.0) and stats["clip_fraction"] == 0.0
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([-2.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^scale: must be greater than 0, got -1\.0$"):
        build_policy_loss("test_reinforce", {"scale": -1.0})


def test_a_mode_name_is_registered_once_and_its_hyperparameters_are_floats():
    with pytest.raises(ValueError, match="'kl_cov' is registered twice"):
        register_policy_loss("kl_cov")(KlCov)

    class Counted(PolicyLoss):
        tokens_per_group: int = 4

    with pytest.raises(TypeError, match="must be floats: tokens_per_group"):
        register_policy_loss("test_counted")(Counted)
    assert "test_counted" not in policy_losses.REGISTRY
