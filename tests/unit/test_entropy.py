"""Chunked token entropy and logprobs: hand-computed values and gradients equal to float64 autograd."""

from __future__ import annotations

import math

import pytest
import torch

from aerplane.core.entropy import entropy_and_logprobs, naive_entropy_and_logprobs, token_entropy


def reference(logits: torch.Tensor, token_ids: torch.Tensor):
    """Textbook float64 softmax entropy and logprobs through autograd."""
    z = logits.double()
    p = torch.softmax(z, dim=-1)
    logp = torch.log_softmax(z, dim=-1)
    entropy = -(p * logp).sum(-1)
    return entropy, logp.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


def test_hand_computed_values_and_gradient():
    # z = [0, ln 3]: p = [1/4, 3/4], H = ln 4 − (3/4) ln 3, Σ p z = (3/4) ln 3,
    # dH/dz = −p (z − Σ p z) = [(3/16) ln 3, −(3/16) ln 3]; log p_1 = ln(3/4), d log p_1/dz = [−1/4, 1/4]
    ln3 = math.log(3.0)
    z = torch.tensor([[0.0, ln3]], dtype=torch.float64, requires_grad=True)
    entropy, logprobs = entropy_and_logprobs(z, torch.tensor([1]))
    assert entropy.item() == pytest.approx(math.log(4) - 0.75 * ln3, abs=1e-14)
    assert logprobs.item() == pytest.approx(math.log(0.75), abs=1e-14)
    (grad_h,) = torch.autograd.grad(entropy.sum(), z, retain_graph=True)
    assert grad_h.tolist()[0] == pytest.approx([3 / 16 * ln3, -3 / 16 * ln3], abs=1e-14)
    (grad_l,) = torch.autograd.grad(logprobs.sum(), z)
    assert grad_l.tolist()[0] == pytest.approx([-0.25, 0.25], abs=1e-14)


def test_uniform_logits_have_entropy_log_vocab():
    logits = torch.full((2, 3, 10), 1.5)
    entropy, logprobs = entropy_and_logprobs(logits, torch.zeros(2, 3, dtype=torch.long), chunk_size=4)
    assert entropy.shape == (2, 3) and entropy.dtype == torch.float32
    assert torch.allclose(entropy, torch.full((2, 3), math.log(10)), atol=1e-6)
    assert torch.allclose(logprobs, torch.full((2, 3), -math.log(10)), atol=1e-6)
    assert torch.allclose(token_entropy(logits), entropy)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1000])
def test_gradient_equals_float64_autograd(chunk_size):
    gen = torch.Generator().manual_seed(chunk_size)
    base = torch.randn(3, 5, 17, generator=gen, dtype=torch.float64) * 4
    ids = torch.randint(0, 17, (3, 5), generator=gen)
    w_h = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    w_l = torch.randn(3, 5, generator=gen, dtype=torch.float64)

    ours = base.clone().requires_grad_(True)
    h, lp = entropy_and_logprobs(ours, ids, chunk_size=chunk_size)
    ((w_h * h).sum() + (w_l * lp).sum()).backward()

    ref = base.clone().requires_grad_(True)
    h_ref, lp_ref = reference(ref, ids)
    ((w_h * h_ref).sum() + (w_l * lp_ref).sum()).backward()

    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.grad, ref.grad, rtol=0, atol=1e-12)


def test_gradcheck_entropy_only_and_logprobs_only():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 6, (4,), generator=gen)
    assert torch.autograd.gradcheck(lambda t: token_entropy(t, chunk_size=3), (z,))
    assert torch.autograd.gradcheck(lambda t: entropy_and_logprobs(t, ids, chunk_size=3)[1], (z,))


def test_float32_matches_float64_reference():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(64, 301, generator=gen) * 5
    ids = torch.randint(0, 301, (64,), generator=gen)
    z = base.clone().requires_grad_(True)
    h, lp = entropy_and_logprobs(z, ids, chunk_size=10)
    (h.sum() - 0.5 * lp.sum()).backward()
    z_ref = base.double().requires_grad_(True)
    h_ref, lp_ref = reference(z_ref, ids)
    (h_ref.sum() - 0.5 * lp_ref.sum()).backward()
    torch.testing.assert_close(h.double(), h_ref.detach(), rtol=0, atol=2e-5)
    torch.testing.assert_close(lp.double(), lp_ref.detach(), rtol=0, atol=2e-5)
    torch.testing.assert_close(z.grad.double(), z_ref.grad, rtol=0, atol=1e-6)


def test_bfloat16_logits_compute_in_float32():
    gen = torch.Generator().manual_seed(2)
    base = (torch.randn(8, 50, generator=gen) * 3).bfloat16()
    ids = torch.randint(0, 50, (8,), generator=gen)
    z = base.clone().requires_grad_(True)
    h, lp = entropy_and_logprobs(z, ids, chunk_size=3)
    assert h.dtype == torch.float32 and lp.dtype == torch.float32
    h.sum().backward()
    assert z.grad.dtype == torch.bfloat16
    z_ref = base.double().requires_grad_(True)  # the same (bf16-rounded) values, exactly
    h_ref, lp_ref = reference(z_ref, ids)
    h_ref.sum().backward()
    torch.testing.assert_close(h.double(), h_ref.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(lp.double(), lp_ref.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(z.grad.double(), z_ref.grad, rtol=1e-2, atol=1e-3)  # bf16 gradient rounding


def test_non_contiguous_view_and_gradient_placement():
    gen = torch.Generator().manual_seed(3)
    full = torch.randn(2, 6, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 11, (2, 5), generator=gen)
    view = full[:, :-1]  # [2, 5, 11], not viewable as one 2-D tensor
    assert not view.is_contiguous()
    h, lp = entropy_and_logprobs(view, ids, chunk_size=2)
    (h.sum() + lp.sum()).backward()
    h_ref, lp_ref = reference(full.detach()[:, :-1].contiguous(), ids)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=1e-12)
    assert torch.all(full.grad[:, -1] == 0) and torch.any(full.grad[:, 0] != 0)


def test_masked_minus_inf_logits():
    # z = [0, 0, −inf]: p = [1/2, 1/2, 0], H = ln 2, gradients finite and 0 at the masked token
    z = torch.tensor([[0.0, 0.0, -math.inf], [1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    h, lp = entropy_and_logprobs(z, torch.tensor([0, 2]))
    assert h[0].item() == pytest.approx(math.log(2), abs=1e-14)
    assert lp[0].item() == pytest.approx(-math.log(2), abs=1e-14)
    h_ref, _ = reference(z.detach()[1:], torch.tensor([2]))
    assert h[1].item() == pytest.approx(h_ref.item(), abs=1e-14)
    (h.sum() + lp.sum()).backward()
    assert torch.isfinite(z.grad).all() and z.grad[0, 2] == 0
    assert z.grad[0].tolist() == pytest.approx([0.5, -0.5, 0.0], abs=1e-14)  # dH/dz = 0, d log p_0/dz = [1/2, −1/2, 0]


def test_naive_baseline_agrees():
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(5, 9, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 9, (5,), generator=gen)
    h_naive, lp_naive = naive_entropy_and_logprobs(z, ids)
    h, lp = entropy_and_logprobs(z, ids)
    torch.testing.assert_close(h, h_naive, rtol=0, atol=1e-12)
    torch.testing.assert_close(lp, lp_naive, rtol=0, atol=1e-12)


def test_bad_inputs():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        token_entropy(z, chunk_size=0)
    with pytest.raises(ValueError, match="token_ids"):
        entropy_and_logprobs(z, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="token_ids"):
        entropy_and_logprobs(z, torch.zeros(2))
    with pytest.raises(ValueError, match="logits"):
        token_entropy(torch.zeros(2, 3, dtype=torch.long))


def test_temperature_equals_scaled_logits():
    gen = torch.Generator().manual_seed(6)
    base = torch.randn(4, 3, 13, generator=gen, dtype=torch.float64) * 3
    ids = torch.randint(0, 13, (4, 3), generator=gen)
    w = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    ours = base.clone().requires_grad_(True)
    h, lp = entropy_and_logprobs(ours, ids, chunk_size=5, temperature=0.7)
    ((w * h).sum() + lp.sum()).backward()
    ref = base.clone().requires_grad_(True)
    h_ref, lp_ref = reference(ref / 0.7, ids)
    ((w * h_ref).sum() + lp_ref.sum()).backward()
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.grad, ref.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(token_entropy(base, temperature=0.7), h_ref.detach(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        token_entropy(base, temperature=0.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_float64_reference():
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(37, 1001, generator=gen, dtype=torch.float64) * 3
    ids = torch.randint(0, 1001, (37,), generator=gen)
    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        z = base.to("cuda", dtype).requires_grad_(True)
        h, lp = entropy_and_logprobs(z, ids.cuda(), chunk_size=8)
        (h.sum() + lp.sum()).backward()
        ref = base.clone().requires_grad_(True)
        h_ref, lp_ref = reference(ref, ids)
        (h_ref.sum() + lp_ref.sum()).backward()
        torch.testing.assert_close(h.double().cpu(), h_ref.detach(), rtol=0, atol=atol)
        torch.testing.assert_close(z.grad.double().cpu(), ref.grad, rtol=0, atol=atol)
