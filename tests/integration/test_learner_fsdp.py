"""The learner under FSDP2 against DDP: 2 gloo ranks on CPU (and the same job on CUDA when a GPU is lent).

One torchrun job (this file run as a script: `python -m torch.distributed.run --nproc_per_node 2 <this file> OUT
DEVICE`) trains the tiny model with `aerplane.learner.step.train_step`, the function the learner's loop calls, in
several set-ups from the same start, and checkpoints and publishes with the loop's own functions
(`Checkpointer.save`, `Checkpointer.resume`, `trainable.serving_weights`, `checkpoint.publish_weights`):

- DDP and FSDP in float32, and in bf16 mixed precision, 3 AdamW steps each (with gradient clipping);
- FSDP with gradient checkpointing; DDP and FSDP with a frozen KL reference (sharded too under FSDP);
- FSDP bf16 mixed: 2 steps, checkpoint, 2 more; and a fresh model resumed from that checkpoint, 2 more;
- the published weights of the FSDP model (gathered on rank 0, in bf16).

The groups are of unequal size (one prompt has 2 samples, the others 4), so the ranks have different numbers of
micro-batches: FSDP must pad (every forward is a collective), DDP need not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

P = 4
SIZES = [4, 4, 4, 2]  # samples per prompt: rank 1 (prompts 2, 3) gets 6 sequences, rank 0 gets 8
MICRO = 3
STEPS = 3
LR = 1e-3


def _samples(seed: int = 0):
    import random

    from aerplane.learner.batching import TrainSample

    rng = random.Random(seed)
    out = []
    for q, g in enumerate(SIZES):
        prompt = [rng.randrange(100, 5000) for _ in range(rng.randint(4, 9))]
        rewards = [1.0 if i < g // 2 + q % 2 else 0.0 for i in range(g)]
        mean = sum(rewards) / g
        std = (sum((r - mean) ** 2 for r in rewards) / (g - 1)) ** 0.5
        for i in range(g):
            response = [rng.randrange(100, 5000) for _ in range(rng.randint(3, 10))]
            out.append(
                TrainSample(
                    prompt_index=q,
                    prompt_ids=prompt,
                    response_ids=response,
                    sampler_logprobs=[-10.8] * len(response),
                    reward=rewards[i],
                    advantage=(rewards[i] - mean) / (std + 1e-6),
                    weight=1.0 if q != 1 else 0.5,
                    difficulty="easy" if q < 2 else "hard",
                    policy_version=0,
                    prompt_id=f"q{q}",
                )
            )
    return out


def _job(out_dir: Path, device: str) -> None:
    """Runs on each rank."""
    import torch

    from aerplane.common.settings import load_settings
    from aerplane.data.embedded_models import tiny_model
    from aerplane.learner import checkpoint as ckpt
    from aerplane.learner import distributed
    from aerplane.learner.checkpointer import Checkpointer
    from aerplane.learner.parallel import MASTER_DTYPE, serving_state_dict, wrap_policy
    from aerplane.learner.policy import load_policy
    from aerplane.learner.settings import SECTION, LearnerSettings, LossSettings
    from aerplane.learner.step import train_step
    from aerplane.learner.trainable import Trainable, build_optimizer, build_scheduler, serving_weights

    ctx = distributed.init(device)
    if ctx.device.type == "cuda":  # the resume check compares bits: no atomics-ordered kernels (embedding backward)
        torch.use_deterministic_algorithms(True, warn_only=True)
    path = tiny_model()
    samples = _samples()
    result: dict = {"rank": ctx.rank, "world_size": ctx.world_size}

    def settings(parallel: str, dtype: str, *, gc: bool = False) -> LearnerSettings:
        return load_settings(
            LearnerSettings,
            {
                "model": {"path": str(path), "parallel": parallel, "dtype": dtype, "gradient_checkpointing": gc},
                "optim": {"lr": LR, "warmup_steps": 2, "grad_clip": 1.0},
                "run": {"run_id": "fsdp", "dir": str(out_dir / f"run-{parallel}-{dtype}")},
            },
            section=SECTION,
        )

    def build(s: LearnerSettings):
        lm = load_policy(path, MASTER_DTYPE, ctx.device, gradient_checkpointing=s.model.gradient_checkpointing)
        policy = wrap_policy(lm, ctx, parallel=s.model.parallel, dtype=s.model.dtype)
        optimizer = build_optimizer(lm, s.optim)
        return lm, policy, optimizer, build_scheduler(optimizer, s.optim, s.run.steps * s.batch.mini_batches)

    def steps(policy, optimizer, scheduler, n: int, *, ref=None) -> list[dict]:
        loss = LossSettings(kl_coef=0.1 if ref is not None else 0.0)
        out = []
        for _ in range(n):
            r = train_step(
                policy,
                optimizer,
                scheduler,
                samples,
                num_prompts=P,
                ctx=ctx,
                alpha=0.01,
                loss=loss,
                temperature=1.0,
                micro_batch_size=MICRO,
                pad_id=0,
                grad_clip=1.0,
                ref_model=ref,
            )
            out.append(
                {
                    "pg": r.pg_loss,
                    "entropy": r.mean_entropy,
                    "by": r.entropy_by_difficulty,
                    "tokens": r.num_tokens,
                    "grad_norm": r.grad_norm,
                    "lr": r.lr,
                    "kl": r.kl,
                }
            )
        return out

    def full_params(lm) -> dict[str, torch.Tensor] | None:
        """Rank 0: every parameter, float32, on CPU (gathered under FSDP: every rank must call this)."""
        return serving_state_dict(lm, "float32", ctx)

    params: dict[str, dict[str, torch.Tensor] | None] = {}
    params["initial"] = full_params(load_policy(path, MASTER_DTYPE, ctx.device))
    for parallel in ("ddp", "fsdp"):
        for dtype in ("float32", "bfloat16"):
            lm, policy, opt, sched = build(settings(parallel, dtype))
            result[f"{parallel}-{dtype}"] = steps(policy, opt, sched, STEPS)
            params[f"{parallel}-{dtype}"] = full_params(lm)
            if parallel == "fsdp":
                result[f"{parallel}-{dtype}-state-dtypes"] = sorted(
                    {str(v.dtype) for st in opt.state.values() for v in st.values() if torch.is_tensor(v)}
                    | {str(p.dtype) for p in lm.parameters()}
                )
    for parallel in ("ddp", "fsdp"):  # the frozen KL reference, sharded like the policy under FSDP
        s = settings(parallel, "bfloat16")
        lm, policy, opt, sched = build(s)
        ref = wrap_policy(
            load_policy(path, MASTER_DTYPE, ctx.device).requires_grad_(False),
            ctx,
            parallel=parallel,
            dtype="bfloat16",
            trainable=False,
        )
        result[f"{parallel}-kl"] = steps(policy, opt, sched, 2, ref=ref)
    lm, policy, opt, sched = build(settings("fsdp", "float32", gc=True))
    result["fsdp-float32-gc"] = steps(policy, opt, sched, STEPS)
    params["fsdp-float32-gc"] = full_params(lm)

    # --- checkpoint after 2 steps, 2 more; then a fresh model resumed from it, 2 more ------------------------------
    s = settings("fsdp", "bfloat16")
    lm, policy, opt, sched = build(s)
    first = steps(policy, opt, sched, 2)
    checkpointer = Checkpointer(s.checkpoint_dir, s.checkpoint, s.run.run_id, s.model.parallel, ctx)
    checkpointer.save(2, Trainable(lm, policy, None, opt, sched), None)
    at_checkpoint = full_params(lm)
    straight = steps(policy, opt, sched, 2)
    params["straight"] = full_params(lm)
    published = serving_weights(lm, s.model, ctx)
    if ctx.is_main:
        ckpt.publish_weights(lm, out_dir / "weights", 4, keep=2, state_dict=published)

    lm2, policy2, opt2, sched2 = build(s)
    latest = ckpt.latest_checkpoint(s.checkpoint_dir)
    assert latest is not None and latest[0] == 2
    start = checkpointer.resume(Trainable(lm2, policy2, None, opt2, sched2), resume=True).step
    resumed = steps(policy2, opt2, sched2, 2)
    params["resumed"] = full_params(lm2)
    result.update(first=first, straight=straight, resumed=resumed, resume_start=start)

    if ctx.is_main:
        torch.save({k: v for k, v in params.items()}, out_dir / "params.pt")
        torch.save(at_checkpoint, out_dir / "at_checkpoint.pt")
        result["checkpoint_path"] = str(latest[1])
    (out_dir / f"rank{ctx.rank}.json").write_text(json.dumps(result))
    distributed.finish(0)


def run_job(out: Path, device: str, nproc: int) -> list[dict]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        __file__,
        str(out),
        device,
    ]
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # deterministic cuBLAS (CUDA only)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=800, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("fsdp")
    return run_job(out, "cpu", 2), out


def _close(a: list[dict], b: list[dict], rel: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["tokens"] == y["tokens"]
        for key in ("pg", "entropy", "grad_norm", "lr"):
            assert x[key] == pytest.approx(y[key], rel=rel, abs=rel * 1e-2), (key, x, y)
        for bucket, value in x["by"].items():
            assert value == pytest.approx(y["by"][bucket], rel=rel)


def _max_diff(a: dict, b: dict) -> float:

    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def check_fsdp_matches_ddp(results: list[dict], out: Path) -> None:
    import torch

    r = results[0]
    params = torch.load(out / "params.pt", weights_only=True)
    # float32: the same loss, entropy, token counts and updated parameters (summation order aside)
    _close(r["fsdp-float32"], r["ddp-float32"], rel=1e-5)
    assert _max_diff(params["fsdp-float32"], params["ddp-float32"]) <= 1e-6
    # the parameters moved: the comparison above is not of two untouched models
    assert _max_diff(params["ddp-float32"], params["initial"]) > LR
    # bf16 mixed: autocast (DDP) and MixedPrecisionPolicy (FSDP) agree within bf16 forward tolerance
    _close(r["fsdp-bfloat16"], r["ddp-bfloat16"], rel=2e-2)
    _close(r["fsdp-bfloat16"], r["fsdp-float32"], rel=2e-2)
    assert _max_diff(params["fsdp-bfloat16"], params["ddp-bfloat16"]) <= STEPS * LR * 2
    assert r["fsdp-bfloat16-state-dtypes"] == ["torch.float32"]  # master weights and AdamW state stay float32
    # the KL to a frozen reference: 0 before the first update, then the same under both
    assert r["fsdp-kl"][0]["kl"] == pytest.approx(0.0, abs=1e-6) and r["fsdp-kl"][1]["kl"] > 0
    _close(r["fsdp-kl"], r["ddp-kl"], rel=5e-2)
    # gradient checkpointing changes nothing but memory
    _close(r["fsdp-float32-gc"], r["fsdp-float32"], rel=1e-6)
    assert _max_diff(params["fsdp-float32-gc"], params["fsdp-float32"]) <= 1e-7
    for other in results[1:]:  # every rank saw the same all-reduced statistics
        assert other["fsdp-float32"] == r["fsdp-float32"] and other["ddp-bfloat16"] == r["ddp-bfloat16"]


def check_resume_is_bit_identical(results: list[dict], out: Path) -> None:
    import torch

    from aerplane.learner import checkpoint as ckpt

    r = results[0]
    params = torch.load(out / "params.pt", weights_only=True)
    assert r["resume_start"] == 2
    assert r["resumed"] == r["straight"]  # losses, entropy, grad norms, lr (the scheduler resumed too)
    a, b = params["straight"], params["resumed"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the sharded checkpoint reads back (no process group) as the full model at step 2
    path = Path(r["checkpoint_path"])
    assert (path / ckpt.SHARDS).is_dir() and "model" not in ckpt.load_trainer_state(path)
    assert json.loads((path / "meta.json").read_text())["parallel"] == "fsdp"
    full = ckpt.load_model_state(path)
    at_checkpoint = torch.load(out / "at_checkpoint.pt", weights_only=True)
    missing = set(at_checkpoint) - set(full)
    assert missing <= {"lm_head.weight"}, missing  # the tied head is stored once, as the embedding
    assert all(torch.equal(full[k], at_checkpoint[k]) for k in full)


def check_published_weights(out: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    folder = out / "weights" / "v4"
    tensors = load_file(str(folder / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}  # the serving dtype
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    straight = torch.load(out / "params.pt", weights_only=True)["straight"]
    for name, t in tensors.items():
        assert torch.equal(t, straight[name].to(torch.bfloat16)), name
    model, info = AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_fsdp_gives_the_loss_entropy_and_parameters_of_ddp(job) -> None:
    check_fsdp_matches_ddp(*job)


def test_fsdp_resumes_from_its_sharded_checkpoint_to_bit_identical_parameters(job) -> None:
    check_resume_is_bit_identical(*job)


def test_fsdp_publishes_gathered_weights_in_the_serving_dtype(job) -> None:
    check_published_weights(job[1])


@pytest.mark.gpu
def test_fsdp_on_cuda(tmp_path: Path) -> None:
    """The same job with NCCL on CUDA: 2 ranks when 2 GPUs are there, else 1 (FSDP on one GPU still runs the
    mixed-precision policy, the sharded checkpoint and the gather)."""
    import torch

    nproc = min(2, torch.cuda.device_count())
    results = run_job(tmp_path, "cuda", nproc)
    check_fsdp_matches_ddp(results, tmp_path)
    check_resume_is_bit_identical(results, tmp_path)
    check_published_weights(tmp_path)


if __name__ == "__main__":
    _job(Path(sys.argv[1]), sys.argv[2])
