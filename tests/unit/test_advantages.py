"""GRPO group advantages: hand-computed values for the std and no-std (Dr. GRPO) variants."""

from __future__ import annotations

import pytest
import torch

from aerplane.core.advantages import group_accuracies, group_advantages


def test_grpo_hand_computed():
    # r = [1, 0, 0, 0]: mean 1/4, sample std sqrt((9/16 + 3/16) / 3) = 1/2 → A = [3/2, −1/2, −1/2, −1/2]
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([[1.5, -0.5, -0.5, -0.5]]))
    # with the default eps the denominator is 1/2 + 1e-6
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(adv, torch.tensor([[0.75, -0.25, -0.25, -0.25]]) / (0.5 + 1e-6))


def test_dr_grpo_no_std():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 1.0, 0.0, 0.5]]), normalize_std=False)
    torch.testing.assert_close(adv, torch.tensor([[0.75, -0.25, -0.25, -0.25], [0.0, 0.5, -0.5, 0.0]]))


def test_equal_rewards_and_single_sample_groups_give_zero():
    adv = group_advantages(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), eps=0.0)
    assert torch.equal(adv, torch.zeros(2, 3))
    assert torch.equal(group_advantages(torch.tensor([[0.7], [0.2]])), torch.zeros(2, 1))


def test_flat_with_group_size_and_lists():
    flat = group_advantages([1.0, 0.0, 0.25, 0.75], group_size=2, normalize_std=False)
    assert flat.shape == (4,)
    torch.testing.assert_close(flat, torch.tensor([0.5, -0.5, -0.25, 0.25]))
    # sample std of [0.25, 0.75] is sqrt(2 · 0.0625) = 0.35355…: A = ±0.25 / 0.35355 = ±1/sqrt(2)
    flat = group_advantages([0.25, 0.75], group_size=2, eps=0.0)
    torch.testing.assert_close(flat, torch.tensor([-(2**-0.5), 2**-0.5]))


def test_accuracies():
    acc = group_accuracies(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0]]))
    torch.testing.assert_close(acc, torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(group_accuracies([1, 0, 1, 1], group_size=2), torch.tensor([0.5, 1.0]))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"rewards": torch.tensor([1.0, 0.0, 1.0])}, "rewards"),
        ({"rewards": torch.tensor([1.0, 0.0, 1.0]), "group_size": 2}, "group_size=2"),
        ({"rewards": torch.tensor([[1.0, float("nan")]])}, "finite"),
        ({"rewards": torch.tensor([1.0, 0.0]), "group_size": 0}, "group_size"),
        ({"rewards": torch.tensor([[1.0, 0.0]]), "eps": -1.0}, "eps"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(**kwargs)
