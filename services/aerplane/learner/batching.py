"""From scored groups to padded tensors: the learner's batching helpers (pure functions, unit-tested directly).

A step's batch is a list of `TrainSample`s (one per response, whole groups of G per prompt). Every rank receives
the whole list (it is small: token ids and a few floats per response) and takes its own share of prompts, so that
all ranks can compute the global token counts that the token-mean loss divides by without another collective.

Layout of one micro-batch (right padding)::

    input_ids   [B, T]    prompt tokens, response tokens, pad
    targets     [B, T-1]  input_ids shifted left: position k predicts token k+1
    mask        [B, T-1]  1 where the target is a response token (the only positions that enter the loss)

Only the masked positions are sent through the LM head (`learner.policy.ResponseLogits`), so prompt tokens and
padding cost no vocabulary-sized logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainSample:
    """One scored response, ready for training."""

    prompt_index: int  # position of its prompt in the step (groups are contiguous and ordered by this)
    prompt_ids: list[int]
    response_ids: list[int]
    sampler_logprobs: list[float]  # the generation engine's logprob of each response token
    reward: float
    advantage: float
    weight: float  # λ_q of its prompt
    difficulty: str
    policy_version: int
    prompt_id: str = ""

    @property
    def num_tokens(self) -> int:
        """Response tokens: what the token-mean loss counts."""
        return len(self.response_ids)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class MicroBatch:
    """Padded tensors of one forward/backward pass (see the module docstring for the layout)."""

    input_ids: Any  # LongTensor [B, T]
    attention_mask: Any  # LongTensor [B, T]
    targets: Any  # LongTensor [B, T-1]
    mask: Any  # BoolTensor [B, T-1]
    advantages: Any  # float32 [N] per response token (N = mask.sum())
    weights: Any  # float32 [N] λ of the token's prompt
    sampler_logprobs: Any  # float32 [N]
    sample_of_token: Any  # LongTensor [N]: index (within this micro-batch) of each token's sample
    samples: list[TrainSample] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())


def truncate_response(sample: TrainSample, max_tokens: int) -> TrainSample:
    """Cut a response longer than `max_tokens` (generation should already have stopped there)."""
    if len(sample.response_ids) <= max_tokens:
        return sample
    from dataclasses import replace

    return replace(
        sample,
        response_ids=sample.response_ids[:max_tokens],
        sampler_logprobs=sample.sampler_logprobs[:max_tokens],
    )


def shard_prompts(num_prompts: int, rank: int, world_size: int) -> range:
    """The contiguous range of prompt indices rank `rank` trains on (num_prompts divisible by world_size)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    if num_prompts % world_size:
        raise ValueError(f"{num_prompts} prompts do not split evenly over {world_size} ranks")
    per = num_prompts // world_size
    return range(rank * per, (rank + 1) * per)


def rank_mini_batches(
    samples: Sequence[TrainSample], num_prompts: int, rank: int, world_size: int, mini_batches: int
) -> list[list[TrainSample]]:
    """This rank's samples, split into mini-batches.

    Mini-batch m is the same set of prompts whatever the world size — prompts [m·P/M, (m+1)·P/M) — and each rank
    takes its contiguous share of it, so a run gives the same updates on 1 rank or on N.
    """
    if num_prompts % mini_batches:
        raise ValueError(f"{num_prompts} prompts do not split into {mini_batches} mini-batches")
    per = num_prompts // mini_batches
    mine = shard_prompts(per, rank, world_size)
    parts: list[list[TrainSample]] = [[] for _ in range(mini_batches)]
    for s in samples:
        m, offset = divmod(s.prompt_index, per)
        if offset in mine:
            parts[m].append(s)
    return parts


def global_token_counts(samples: Sequence[TrainSample], num_prompts: int, mini_batches: int) -> list[int]:
    """Response tokens of each mini-batch over all ranks: the denominators of the global token mean."""
    per = num_prompts // mini_batches
    totals = [0] * mini_batches
    for s in samples:
        totals[s.prompt_index // per] += s.num_tokens
    return totals


def micro_batches(samples: Sequence[TrainSample], size: int) -> list[list[TrainSample]]:
    """Chunks of `size` sequences, longest first so that sequences of similar length share padding."""
    if size < 1:
        raise ValueError(f"micro-batch size must be positive, got {size}")
    ordered = sorted(samples, key=lambda s: (-s.length, s.prompt_index, s.prompt_id))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def collate(samples: Sequence[TrainSample], pad_id: int, device: Any = "cpu") -> MicroBatch:
    """Right-padded tensors for `samples`; per-token advantage, λ and sampler logprob on the response positions."""
    import torch

    if not samples:
        raise ValueError("cannot collate an empty micro-batch")
    width = max(s.length for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(samples), width), dtype=torch.long)
    mask = torch.zeros((len(samples), max(width - 1, 1)), dtype=torch.bool)
    adv, lam, old, owner = [], [], [], []
    for b, s in enumerate(samples):
        if not s.prompt_ids:
            raise ValueError(f"sample of prompt {s.prompt_id!r} has no prompt tokens")
        seq = s.prompt_ids + s.response_ids
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[b, : len(seq)] = 1
        start = len(s.prompt_ids) - 1  # the position whose next token is the first response token
        mask[b, start : start + len(s.response_ids)] = True
        n = len(s.response_ids)
        adv += [s.advantage] * n
        lam += [s.weight] * n
        old += list(s.sampler_logprobs)
        owner += [b] * n
    return MicroBatch(
        input_ids=ids.to(device),
        attention_mask=attn.to(device),
        targets=ids[:, 1:].to(device) if width > 1 else ids.to(device),
        mask=mask.to(device),
        advantages=torch.tensor(adv, dtype=torch.float32, device=device),
        weights=torch.tensor(lam, dtype=torch.float32, device=device),
        sampler_logprobs=torch.tensor(old, dtype=torch.float32, device=device),
        sample_of_token=torch.tensor(owner, dtype=torch.long, device=device),
        samples=list(samples),
    )


# --- per-step statistics -------------------------------------------------------------------------------------------


def group_accuracy(rewards: Sequence[float]) -> float:
    """acc_q: the mean reward of a prompt's G samples, clamped into [0, 1]."""
    if not rewards:
        raise ValueError("a group needs at least one sample")
    acc = sum(rewards) / len(rewards)
    if not math.isfinite(acc):
        raise ValueError(f"non-finite rewards {list(rewards)}")
    return min(1.0, max(0.0, acc))


def mean_by(values: Sequence[float], keys: Sequence[str]) -> dict[str, float]:
    """Mean of `values` per key (e.g. accuracy per difficulty bucket)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for v, k in zip(values, keys, strict=True):
        sums[k] = sums.get(k, 0.0) + v
        counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sorted(sums)}
