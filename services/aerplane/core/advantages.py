"""Group-relative advantages (GRPO) and per-prompt accuracies from verifier rewards.

For the G responses of one prompt with rewards r_1..r_G:

    A_i = (r_i − mean(r)) / (std(r) + eps)     normalize_std=True (GRPO)
    A_i =  r_i − mean(r)                       normalize_std=False ("Dr. GRPO": no std division)

std is the sample standard deviation (Bessel-corrected, as verl and TRL compute it). A group whose rewards are all
equal (all right or all wrong) gets zero advantages; so does a group of one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _grouped(rewards: torch.Tensor | Sequence, group_size: int | None) -> tuple[torch.Tensor, torch.Size]:
    r = rewards if isinstance(rewards, torch.Tensor) else torch.as_tensor(rewards, dtype=torch.float32)
    if not r.is_floating_point():
        r = r.float()
    if not torch.isfinite(r).all():
        raise ValueError("rewards: must be finite")
    shape = r.shape
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size: must be a positive integer, got {group_size!r}")
        if r.dim() != 1 or r.numel() % group_size:
            raise ValueError(
                f"rewards: a flat tensor whose length is a multiple of group_size={group_size} is needed, "
                f"got shape {tuple(shape)}"
            )
        r = r.view(-1, group_size)
    elif r.dim() != 2:
        raise ValueError(f"rewards: need shape [num_prompts, G] (or a flat tensor and group_size), got {tuple(shape)}")
    return r, shape


def group_advantages(
    rewards: torch.Tensor | Sequence,
    normalize_std: bool = True,
    eps: float = 1e-6,
    *,
    group_size: int | None = None,
) -> torch.Tensor:
    """Advantages with the shape of `rewards`: [num_prompts, G], or flat [num_prompts·G] with `group_size`."""
    if not eps >= 0:
        raise ValueError(f"eps: must be >= 0, got {eps!r}")
    r, shape = _grouped(rewards, group_size)
    centred = r - r.mean(dim=-1, keepdim=True)
    if normalize_std:
        if r.shape[-1] > 1:
            std = r.std(dim=-1, keepdim=True)
        else:
            std = torch.zeros_like(r)
        # all-equal groups: centred is exactly 0, so 0 / (0 + eps) = 0 (and with eps = 0 we avoid 0/0)
        centred = torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))
    return centred.reshape(shape)


def group_accuracies(rewards: torch.Tensor | Sequence, *, group_size: int | None = None) -> torch.Tensor:
    """acc_q = mean reward of each prompt's G samples, shape [num_prompts]."""
    r, _ = _grouped(rewards, group_size)
    return r.mean(dim=-1)
