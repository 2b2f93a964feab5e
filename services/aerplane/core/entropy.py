"""Full-vocabulary token entropy and sampled-token logprobs in one chunked, differentiable pass.

For logits z over the vocabulary, p = softmax(z):

    H(z)      = logsumexp(z) − Σ_j p_j z_j
    ∂H/∂z_j   = −p_j (z_j − Σ_k p_k z_k)
    log p_y   = z_y − logsumexp(z),      ∂ log p_y/∂z_j = 1[j = y] − p_j

A naive implementation (softmax, log_softmax, product, autograd) keeps two or three float32 copies of the whole
[tokens, vocab] tensor alive for the backward pass. Here a custom autograd function walks the tokens in chunks:
the forward keeps only the logits (which the model's graph holds anyway) and one float per token, and the
backward recomputes the softmax of one chunk at a time and writes the gradient straight into the output tensor.
Peak memory beyond the logits and their gradient is a few chunk-sized float32 buffers (`bench/entropy.py`).

Logits may be float32, bfloat16 or float16; each chunk is computed in float32 and the results (entropy, logprobs)
are float32 (float64 logits are computed and returned in float64). The gradient has the logits' dtype. Logits
may contain −inf (masked tokens); they get zero probability and zero gradient. Non-contiguous views such as
``logits[:, :-1]`` are processed without copying.
"""

from __future__ import annotations

import math

import torch

# Default chunk: this many float32 elements per temporary buffer (64 MiB), i.e. chunk_size = ELEMS // vocab tokens.
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def _rows(t: torch.Tensor) -> list[torch.Tensor]:
    """`t` ([..., V]) as 2-D [n, V] views in row-major order, without copying."""
    if t.dim() == 1:
        return [t.unsqueeze(0)]
    if t.dim() == 2:
        return [t]
    try:
        return [t.view(-1, t.shape[-1])]
    except RuntimeError:  # not viewable as one 2-D tensor (e.g. logits[:, :-1]): split the first dim
        return [row for i in range(t.shape[0]) for row in _rows(t[i])]


def _chunk_size(chunk_size: int | None, vocab: int) -> int:
    if chunk_size is None:
        return max(1, DEFAULT_CHUNK_ELEMENTS // max(vocab, 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: must be a positive integer, got {chunk_size!r}")
    return chunk_size


def _chunks(logits: torch.Tensor, chunk: int):
    """Yield (offset, [n, V] view) over all tokens of `logits`, n <= chunk."""
    offset = 0
    for rows in _rows(logits):
        for start in range(0, rows.shape[0], chunk):
            view = rows[start : start + chunk]
            yield offset, view
            offset += view.shape[0]


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _softmax_parts(view: torch.Tensor, inv_temp: float, out: torch.Tensor | None = None):
    """For one [n, V] chunk: y = (z − max(z))/T in the compute dtype (written into `out` when given), p = softmax(z),
    log Σ exp(y) and Σ p y. One chunk-sized buffer (p) beyond y. The shift keeps H = log Σ exp(y) − Σ p y free of
    the cancellation that lse − Σ p z suffers for large logits. Safe for −inf (masked) logits."""
    dtype = _compute_dtype(view)
    top = view.amax(dim=-1, keepdim=True).to(dtype)
    if out is not None:
        y = torch.sub(view, top, out=out)
    elif view.dtype != dtype:
        y = view.to(dtype).sub_(top)
    else:
        y = torch.sub(view, top)
    if inv_temp != 1.0:
        y.mul_(inv_temp)
    p = torch.exp(y)
    total = p.sum(dim=-1, keepdim=True)
    p.div_(total)
    log_total = total.log_().squeeze(-1)
    expected_y = torch.bmm(p.unsqueeze(1), y.unsqueeze(2)).view(-1)  # row-wise dot product, no buffer
    masked = not bool(torch.isfinite(expected_y).all())
    if masked:  # −inf logits: 0 · (−inf) = nan, they contribute nothing
        expected_y = torch.mul(p, y).masked_fill_(p == 0, 0.0).sum(dim=-1)
    return y, p, log_total, expected_y, masked


class _EntropyLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, token_ids, chunk, inv_temp):
        n = logits.numel() // logits.shape[-1]
        dtype = _compute_dtype(logits)
        entropy = torch.empty(n, dtype=dtype, device=logits.device)
        flat_ids = token_ids.reshape(-1) if token_ids is not None else None
        logprobs = torch.empty(n if flat_ids is not None else 0, dtype=dtype, device=logits.device)
        masked = False
        for offset, view in _chunks(logits, chunk):
            y, p, log_total, expected_y, chunk_masked = _softmax_parts(view, inv_temp)
            del p
            masked = masked or chunk_masked
            rows = slice(offset, offset + view.shape[0])
            torch.sub(log_total, expected_y, out=entropy[rows])
            if flat_ids is not None:
                picked = y.gather(-1, flat_ids[rows].unsqueeze(-1)).squeeze(-1)
                torch.sub(picked, log_total, out=logprobs[rows])
        ctx.save_for_backward(logits, flat_ids)
        ctx.chunk = chunk
        ctx.inv_temp = inv_temp
        ctx.masked = masked
        ctx.set_materialize_grads(False)
        if flat_ids is None:
            ctx.mark_non_differentiable(logprobs)
        return entropy, logprobs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_entropy, grad_logprobs):
        logits, flat_ids = ctx.saved_tensors
        if grad_logprobs is not None and flat_ids is None:
            grad_logprobs = None
        if grad_entropy is None and grad_logprobs is None:
            return None, None, None, None
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        flat_grad = grad.view(-1, logits.shape[-1])
        in_place = logits.dtype == _compute_dtype(logits)
        for offset, view in _chunks(logits, ctx.chunk):
            rows = slice(offset, offset + view.shape[0])
            # float32/64 logits: y, then the gradient, live right in the gradient's slot; else in y's own buffer
            g, p, _, expected_y, _ = _softmax_parts(view, ctx.inv_temp, out=flat_grad[rows] if in_place else None)
            if grad_entropy is not None:  # dH/dz = −p (z − Σ p z) · gH = −p (y − Σ p y) · gH
                g.sub_(expected_y.unsqueeze(-1)).mul_(p)
                if ctx.masked:
                    g.masked_fill_(p == 0, 0.0)  # masked (−inf) logits: 0 · (−inf) = nan
                g.mul_(-grad_entropy[rows].unsqueeze(-1))
            else:
                g.zero_()
            if grad_logprobs is not None:  # d log p_y/dz = onehot(y) − p, times g_logp
                gl = grad_logprobs[rows].unsqueeze(-1)
                g.sub_(p.mul_(gl))
                g.scatter_add_(-1, flat_ids[rows].unsqueeze(-1), gl)
            if ctx.inv_temp != 1.0:  # the logits entered as z/T
                g.mul_(ctx.inv_temp)
            if not in_place:
                flat_grad[rows].copy_(g)
        return grad, None, None, None


def entropy_and_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, chunk_size: int | None = None, *, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token entropy H and log π(token_ids) of softmax(logits / temperature), both float32 with the shape of
    `token_ids` (= logits.shape[:-1]).

    Differentiable in `logits`. `chunk_size` tokens are processed at a time (default: 2**24 // V). `temperature`
    is applied per chunk, so the caller need not materialise `logits / T` (a full copy).
    """
    _check_logits(logits)
    if not isinstance(token_ids, torch.Tensor) or token_ids.shape != logits.shape[:-1]:
        shape = tuple(token_ids.shape) if isinstance(token_ids, torch.Tensor) else type(token_ids).__name__
        raise ValueError(f"token_ids: shape {shape} must equal logits' leading shape {tuple(logits.shape[:-1])}")
    if token_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"token_ids: must be an integer tensor, got {token_ids.dtype}")
    chunk = _chunk_size(chunk_size, logits.shape[-1])
    entropy, logprobs = _EntropyLogprobs.apply(logits, token_ids.long(), chunk, _inverse(temperature))
    lead = logits.shape[:-1]
    return entropy.view(lead), logprobs.view(lead)


def token_entropy(logits: torch.Tensor, chunk_size: int | None = None, *, temperature: float = 1.0) -> torch.Tensor:
    """Per-token full-vocabulary entropy of softmax(logits / temperature) (float32, shape logits.shape[:-1]);
    differentiable in `logits`."""
    _check_logits(logits)
    chunk = _chunk_size(chunk_size, logits.shape[-1])
    entropy, _ = _EntropyLogprobs.apply(logits, None, chunk, _inverse(temperature))
    return entropy.view(logits.shape[:-1])


def _inverse(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 < temperature < math.inf:
        raise ValueError(f"temperature: must be a finite number > 0, got {temperature!r}")
    return 1.0 / float(temperature)


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits: expected a tensor, got {type(logits).__name__}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits: need a non-empty vocabulary dimension, got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits: must be floating point, got {logits.dtype}")


def naive_entropy_and_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The textbook version (the benchmark's baseline and the tests' reference): full-size softmax and
    log_softmax through autograd, in the logits' dtype."""
    logp_all = torch.log_softmax(logits, dim=-1)
    p = logp_all.exp()
    entropy = -(p * logp_all).sum(dim=-1)
    logprobs = None
    if token_ids is not None:
        logprobs = logp_all.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)
    return entropy, logprobs
