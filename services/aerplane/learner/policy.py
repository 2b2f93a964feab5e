"""The policy model: loading a Hugging Face causal LM for training, and logits at response positions only.

`ResponseLogits` wraps the LM so that its forward (the one DDP hooks) runs the decoder over the padded batch but
applies the vocabulary projection only where the loss needs it — the response tokens. For a small model the LM head
is most of the compute (SmolLM2-135M: 49152 × 576), and the prompt positions never need logits.

Models whose logits are more than `lm_head(hidden)` (Gemma's final soft-capping, Cohere's logit scale) take the
plain path: the full forward, then the same selection.

Precision: the trainable parameters are float32 master weights. With `autocast` set (bf16 mixed precision under
DDP, see `learner.parallel`), the forward runs under `torch.autocast`; `token_stats` then computes entropy and
log-probs from the bf16 logits in float32, outside autocast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aerplane.core.entropy import entropy_and_logprobs

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


class ResponseLogits(nn.Module):
    """forward(input_ids, attention_mask, mask) -> logits [N, V] at the N positions where `mask` ([B, T-1]) is set.

    `autocast`: run the forward under `torch.autocast` in this dtype (None: the parameters' own dtype)."""

    def __init__(self, lm: nn.Module, *, autocast: torch.dtype | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.autocast = autocast
        cfg = lm.config
        self.head_only = not any(getattr(cfg, name, None) not in (None, 1.0) for name in _LOGIT_TRANSFORMS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.autocast is None:
            return self._logits(input_ids, attention_mask, mask)
        with torch.autocast(device_type=input_ids.device.type, dtype=self.autocast):
            return self._logits(input_ids, attention_mask, mask)

    def _logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.head_only:
            hidden = self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            selected = hidden.last_hidden_state[:, :-1][mask]
            return self.lm.get_output_embeddings()(selected)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits[:, :-1][mask]


def load_policy(
    path: Path | str, dtype: str, device: torch.device, *, gradient_checkpointing: bool = False
) -> nn.Module:
    """The causal LM in training mode, dropout off (so the recomputed and the training forward agree).

    `dtype` is the dtype the parameters are stored in. The learner passes float32 for every `model.dtype` (master
    weights); the compute dtype is applied by `learner.parallel.wrap_policy`."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype])
    lm.config.use_cache = False
    for module in lm.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    if gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.to(device)
    lm.train()
    return lm


def token_stats(
    module: nn.Module, mb: Any, *, temperature: float, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(entropy, logprob) of each response token of micro-batch `mb` under `module` (a ResponseLogits, maybe DDP or
    FSDP), float32 whatever the logits' dtype. The temperature is applied per chunk inside the kernel (no full copy
    of `logits / T`, and no rounding of it to bf16)."""
    logits = module(mb.input_ids, mb.attention_mask, mb.mask)
    targets = mb.targets[mb.mask]
    return entropy_and_logprobs(logits, targets, chunk_size=chunk_size, temperature=temperature)
