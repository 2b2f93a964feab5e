"""Learner training-step throughput vs a plain single-process torch loop, the phase breakdown of a real step, and
memory and tokens/s per rank for float32 vs bf16 mixed precision and DDP vs FSDP2 on the same model.

    .venv/bin/python bench/learner.py                          # tiny model, 4 prompts × G 4, 64 + 64 tokens
    .venv/bin/python bench/learner.py --model smollm2-135m --reps 3
    .venv/bin/python bench/learner.py --sections memory --memory-models tiny,smollm2-135m
    .venv/bin/python bench/learner.py --device cuda --sections memory --memory-models llama-0.5b-random

Same model, same batch, same loss (clipped surrogate + α·token-mean entropy), one AdamW update per step:
- baseline "plain torch loop": one pass over the padded batch, the LM head on the response positions only,
  `log_softmax`, entropy −Σ p log p and the gathered logprobs, the loss, backward, AdamW — the loop one writes by
  hand with the same shortcut the learner takes, so the ratio isolates the learner's own overhead (headline);
- a second plain loop that takes the HF forward's logits at every position (what most hand-written loops do) is
  reported beside it;
- candidate "learner": `aerplane.learner.step.train_step`, the function the learner's loop calls (collation,
  micro-batching, logits at response positions only, chunked entropy, global token-mean, statistics).
Tokens/s counts prompt + response tokens of the batch; each is the median over alternating repetitions after a
warm-up. Then the real loop (`aerplane.learner.train.train`, 1 rank, local coefficients) runs a few steps against
a private redis-server with scored samples produced by a thread in this process (standing in for generation and
reward), and its metrics.jsonl gives the phase breakdown of a step, including checkpoint and weight publishing.
Benchmarks report; they never assert (target ratio ≥ 0.9, from issue 6).

Precision and parallelism (`--sections memory`): for each model, {float32, bf16 mixed} × {1 rank, DDP over 2
ranks, FSDP2 over 2 ranks} (on CUDA: as many ranks as GPUs, up to 2; with one GPU, FSDP runs on that one rank).
Each configuration runs `train_step` (AdamW, `--memory-steps` timed steps after one warm-up) in fresh processes
(torchrun for 2 ranks, gloo on CPU with 1 thread per rank, NCCL on CUDA) on the same global batch. Per rank:
- peak memory: on CUDA `torch.cuda.max_memory_allocated` over the timed steps (weights, gradients, AdamW state,
  activations). On CPU, the peak resident set of one untimed step after the warm-up (VmHWM, reset through
  /proc/self/clear_refs) minus the resident set before the model was loaded (torch, transformers and the model's
  code already imported). Until then glibc maps every allocation ≥ 128 KiB on its own, so that a freed tensor
  leaves the resident set (by default freed FSDP gather buffers and activations stay in malloc's heap and RSS
  shows fragmentation, not live memory); the timed steps that follow run with malloc's usual 32 MiB threshold;
- state: bytes of this rank's parameters + gradients + AdamW state (exact; FSDP's are 1/N of DDP's);
- tokens/s: the global batch's tokens over the median step time.
Headline lines: FSDP's per-rank peak memory over DDP's (float32, the largest model measured) and bf16 mixed's
tokens/s over float32's (1 rank). `llama-0.5b-random` is a random-init 0.52B Llama (SmolLM2's tokenizer and
vocabulary, hidden 1024, 30 layers), built once into the cache folder, for GPU figures without a download.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _memory import peak_rss_bytes, reset_peak_rss, rss_bytes  # bench/_memory.py

TARGET = 0.9


def make_samples(prompts: int, group: int, prompt_len: int, response_len: int, seed: int = 0):
    from aerplane.learner.batching import TrainSample

    rng = random.Random(seed)
    out = []
    for q in range(prompts):
        prompt = [rng.randrange(100, 5000) for _ in range(prompt_len)]
        for i in range(group):
            response = [rng.randrange(100, 5000) for _ in range(response_len)]
            adv = 1.0 if i % 2 == 0 else -1.0
            out.append(
                TrainSample(
                    prompt_index=q,
                    prompt_ids=prompt,
                    response_ids=response,
                    sampler_logprobs=[-10.0] * response_len,
                    reward=float(adv > 0),
                    advantage=adv,
                    weight=1.0,
                    difficulty="easy",
                    policy_version=0,
                    prompt_id=f"q{q}",
                )
            )
    return out


def plain_step(lm, opt, mb, alpha: float, *, response_only: bool, eps_low: float = 0.2, eps_high: float = 0.28):
    """The hand-written loop: logits (all positions, or response positions only), log_softmax, same loss."""
    import torch

    if response_only:
        hidden = lm.get_decoder()(input_ids=mb.input_ids, attention_mask=mb.attention_mask).last_hidden_state
        logits = lm.get_output_embeddings()(hidden[:, :-1][mb.mask])
        targets = mb.targets[mb.mask]
    else:
        logits = lm(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1][mb.mask]
        targets = mb.targets[mb.mask]
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    ratio = torch.exp(logp - logp.detach())
    adv = mb.advantages
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - eps_low, 1 + eps_high))
    loss = pg.mean() - alpha * (mb.weights * entropy).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def throughput(args: argparse.Namespace, model_path: Path) -> dict:
    import torch

    from aerplane.learner.batching import collate
    from aerplane.learner.distributed import Dist
    from aerplane.learner.policy import ResponseLogits, load_policy
    from aerplane.learner.settings import LossSettings
    from aerplane.learner.step import train_step

    torch.manual_seed(0)
    samples = make_samples(args.prompts, args.group, args.prompt_len, args.response_len)
    tokens = sum(s.length for s in samples)
    ctx = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
    lm_a = load_policy(model_path, "float32", ctx.device)
    lm_b = load_policy(model_path, "float32", ctx.device)
    lm_c = load_policy(model_path, "float32", ctx.device)
    policy = ResponseLogits(lm_a)
    opt_a = torch.optim.AdamW(lm_a.parameters(), lr=1e-6)
    opt_b = torch.optim.AdamW(lm_b.parameters(), lr=1e-6)
    opt_c = torch.optim.AdamW(lm_c.parameters(), lr=1e-6)
    mb_plain = collate(samples, 0)
    loss = LossSettings()

    def learner() -> float:
        t = time.perf_counter()
        train_step(
            policy,
            opt_a,
            None,
            samples,
            num_prompts=args.prompts,
            ctx=ctx,
            alpha=1e-3,
            loss=loss,
            temperature=1.0,
            micro_batch_size=args.micro_batch_size,
            grad_clip=1.0,
        )
        return time.perf_counter() - t

    def plain() -> float:
        t = time.perf_counter()
        plain_step(lm_b, opt_b, mb_plain, 1e-3, response_only=True)
        return time.perf_counter() - t

    def naive() -> float:
        t = time.perf_counter()
        plain_step(lm_c, opt_c, mb_plain, 1e-3, response_only=False)
        return time.perf_counter() - t

    for _ in range(args.warmup):
        learner(), plain(), naive()
    runs: dict[str, list[float]] = {"learner": [], "plain": [], "naive": []}
    for _ in range(args.reps):  # alternating, so load changes on a shared machine hit all three alike
        runs["learner"].append(learner())
        runs["plain"].append(plain())
        runs["naive"].append(naive())
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "tokens": tokens,
        **{f"{k}_s": v for k, v in med.items()},
        **{f"{k}_tokens_per_s": tokens / v for k, v in med.items()},
        "ratio": med["plain"] / med["learner"],
        "ratio_vs_full_logits_loop": med["naive"] / med["learner"],
        "runs_s": runs,
    }


def phase_breakdown(args: argparse.Namespace, model_path: Path) -> list[dict]:
    """Run the learner's real loop for a few steps and read its metrics.jsonl."""
    from aerplane.common.messages import ROLLOUT_REQUESTS, ROLLOUT_SCORED, RolloutRequest, ScoredSample
    from aerplane.common.redis_server import LocalRedis
    from aerplane.common.settings import load_settings
    from aerplane.common.streams import StreamClient
    from aerplane.learner.settings import SECTION, LearnerSettings
    from aerplane.learner.train import train

    tmp = Path(tempfile.mkdtemp(prefix="bench-learner-"))
    redis = LocalRedis(log_path=tmp / "redis.log").start()
    stop = threading.Event()

    def produce() -> None:
        client = StreamClient(redis.url, "bench")
        consumer = client.consumer(ROLLOUT_REQUESTS, "generation", "bench", RolloutRequest)
        rng = random.Random(0)
        while not stop.is_set():
            for d in consumer.read(count=64, block_ms=100):
                r = d.record
                prompt = [rng.randrange(100, 5000) for _ in range(args.prompt_len)]
                out = []
                for i in range(r.num_samples):
                    resp = [rng.randrange(100, 5000) for _ in range(args.response_len)]
                    out.append(
                        ScoredSample(
                            run_id=r.run_id,
                            step=r.step,
                            prompt_id=r.prompt_id,
                            sample_index=i,
                            num_samples=r.num_samples,
                            policy_version=r.policy_version,
                            task=r.task,
                            difficulty=r.difficulty,
                            ground_truth=r.ground_truth,
                            prompt_token_ids=prompt,
                            response_token_ids=resp,
                            logprobs=[-10.0] * len(resp),
                            response_text="",
                            finish_reason="length",
                            reward=float(i % 2),
                            reason="match",
                        )
                    )
                consumer.publish_and_ack(ROLLOUT_SCORED, out, [d.id])
        client.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        settings = load_settings(
            LearnerSettings,
            {
                "model": {"path": str(model_path)},
                "run": {"run_id": "bench", "dir": str(tmp / "run"), "steps": args.loop_steps},
                "batch": {
                    "prompts_per_step": args.prompts,
                    "samples_per_prompt": args.group,
                    "micro_batch_size": args.micro_batch_size,
                },
                "data": {"size": 32},
                "coefficient": {"target": "local"},
                "redis_url": redis.url,
                "http_port": 0,
                "lengths": {"max_response_tokens": args.response_len},
            },
            section=SECTION,
        )
        code = train(settings)
        if code != 0:
            raise SystemExit(f"learner loop failed with code {code}")
        rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    finally:
        stop.set()
        producer.join(timeout=5)
        redis.stop()
    return rows


def loop_sections(args: argparse.Namespace, model_path: Path, sections: set[str]) -> list[dict]:
    """The learner's step vs a plain loop (throughput) and the real loop's phases; prints, returns the JSON lines."""
    lines: list[dict] = []
    if "throughput" in sections:
        tp = throughput(args, model_path)
        print(
            f"\nlearner bench: model {args.model}, batch {args.prompts}×{args.group} sequences of "
            f"{args.prompt_len}+{args.response_len} tokens ({tp['tokens']} tokens), micro-batch "
            f"{args.micro_batch_size}, median of {args.reps}"
        )
        print(f"{'':34}{'step s':>10}{'tokens/s':>12}")
        print(f"{'plain loop, full logits':34}{tp['naive_s']:>10.3f}{tp['naive_tokens_per_s']:>12.0f}")
        print(f"{'plain loop, response logits':34}{tp['plain_s']:>10.3f}{tp['plain_tokens_per_s']:>12.0f}")
        print(f"{'learner train_step':34}{tp['learner_s']:>10.3f}{tp['learner_tokens_per_s']:>12.0f}")
        print(f"{'ratio vs plain (response logits)':34}{tp['ratio']:>22.2f}   target ≥ {TARGET}")
        print(f"{'ratio vs plain (full logits)':34}{tp['ratio_vs_full_logits_loop']:>22.2f}")
        figures = {**tp, "model": args.model, "micro_batch_size": args.micro_batch_size}
        lines.append(
            {
                "bench": "learner",
                "metric": "tokens_per_s_ratio",
                "value": round(tp["ratio"], 4),
                "baseline": "plain torch loop (logits at response positions, log_softmax, same loss)",
                "target": TARGET,
                "better": "higher",
                "figures": figures,
            }
        )
    if "phases" in sections:
        rows = phase_breakdown(args, model_path)
        steady = rows[1:] or rows  # step 0 includes one-off warm-up costs
        phases = sorted({p for r in steady for p in r["phases"]})
        phase_med = {p: statistics.median(r["phases"].get(p, 0.0) for r in steady) for p in phases}
        step_med = statistics.median(r["step_seconds"] for r in steady)
        print(f"\nphases of the real loop (1 rank, local coefficients, median of steps 1..{len(rows) - 1}):")
        for p in phases:
            print(f"  {p:24}{phase_med[p]:>8.3f} s  {100 * phase_med[p] / step_med:5.1f} %")
        print(f"  {'step total':24}{step_med:>8.3f} s")
        train_share = phase_med.get("forward_backward", 0.0) / step_med if step_med else 0.0
        lines.append(
            {
                "bench": "learner",
                "metric": "train_share_of_step",
                "value": round(train_share, 4),
                "baseline": "whole learner step (wait, coefficients, train, report, checkpoint, publish)",
                "target": None,
                "better": "higher",
                "figures": {
                    "phases_s": phase_med,
                    "step_s": step_med,
                    "model": args.model,
                    "loop_tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
                },
            }
        )
    return lines


# --- precision and parallelism: memory and tokens/s per rank -------------------------------------------------------

RANDOM_05B = "llama-0.5b-random"
RANDOM_05B_SHAPE = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 30,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 64,
}
MEMORY_TARGET = 0.75  # FSDP over 2 ranks: per-rank peak at most this fraction of DDP's


def bench_model(name: str) -> Path:
    """A model folder: the embedded ones by name, or the random-init 0.5B Llama (written once into the cache; it
    needs no tokenizer and no model wheel, so a bare GPU machine can build it)."""
    from aerplane.data.embedded_models import cache_dir, resolve_model

    if name != RANDOM_05B:
        return resolve_model(name)
    target = cache_dir() / f"bench-{RANDOM_05B}-v1"
    if (target / "model.safetensors").is_file():
        return target
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        **RANDOM_05B_SHAPE,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size="1000GB")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _mmap_threshold(size: int) -> bool:
    """glibc: serve every allocation of at least `size` bytes by its own mmap, and trim the heap. With 128 KiB while
    memory is measured, a freed tensor leaves the resident set at once; by default the threshold grows to 32 MiB
    and freed buffers stay in malloc's heap, so RSS would show fragmentation rather than live memory."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, size) == 1  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
        return ok
    except (OSError, AttributeError):
        return False


def memory_worker(spec: dict) -> None:
    """One rank of one configuration: build, warm up, time `spec['steps']` train steps, write this rank's figures."""
    import torch

    from aerplane.learner import distributed
    from aerplane.learner.parallel import MASTER_DTYPE, wrap_policy
    from aerplane.learner.policy import load_policy
    from aerplane.learner.settings import LossSettings
    from aerplane.learner.step import train_step

    if spec["device"] == "cpu":
        torch.set_num_threads(1)
    ctx = distributed.init(spec["device"])
    cuda = ctx.device.type == "cuda"
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):  # imports the model's code (~200 MB of RSS for transformers): not the model's memory
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(spec["model_path"]))
    exact = cuda or _mmap_threshold(128 * 1024)
    rss_before = rss_bytes()
    lm = load_policy(spec["model_path"], MASTER_DTYPE, ctx.device)
    policy = wrap_policy(lm, ctx, parallel=spec["parallel"], dtype=spec["dtype"])
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-6)
    prompts, group, prompt_len, response_len = spec["batch"]
    samples = make_samples(prompts, group, prompt_len, response_len)
    loss = LossSettings()

    def step() -> float:
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_step(
            policy,
            opt,
            None,
            samples,
            num_prompts=prompts,
            ctx=ctx,
            alpha=1e-3,
            loss=loss,
            temperature=1.0,
            micro_batch_size=spec["micro_batch"],
            grad_clip=1.0,
        )
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t

    step()  # warm-up: allocates the AdamW state
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        times = [step() for _ in range(spec["steps"])]
        peak, exact = torch.cuda.max_memory_allocated(), True
    else:  # the memory step (untimed) first, then the timed steps with malloc's usual large-allocation threshold
        exact = exact and reset_peak_rss()
        step()
        peak = peak_rss_bytes() - rss_before
        _mmap_threshold(32 * 1024 * 1024)
        times = [step() for _ in range(spec["steps"])]

    def local_bytes(t: torch.Tensor) -> int:
        local = t.to_local() if hasattr(t, "to_local") else t
        return local.numel() * local.element_size()

    params = sum(local_bytes(p) for p in lm.parameters())
    optim = sum(local_bytes(v) for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim())
    out = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "peak_bytes": peak,
        "exact_peak_reset": exact or cuda,
        "state_bytes": 2 * params + optim,
        "param_bytes": params,
        "optim_bytes": optim,
        "step_s": times,
        "tokens": sum(s.length for s in samples),
        "num_params": sum(p.numel() for p in lm.parameters()),
    }
    Path(spec["out"]).joinpath(f"rank{ctx.rank}.json").write_text(json.dumps(out))
    distributed.finish(0)


def run_memory_config(spec: dict, nproc: int) -> list[dict]:
    out = Path(tempfile.mkdtemp(prefix="bench-learner-mem-"))
    spec = {**spec, "out": str(out)}
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if spec["device"] == "cpu" else dict(os.environ)
    if nproc == 1:
        cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            __file__,
            "--worker",
            json.dumps(spec),
        ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"memory configuration {spec} failed:\n{proc.stderr[-4000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def memory_section(args: argparse.Namespace) -> list[dict]:
    """{float32, bf16 mixed} × {1 rank, DDP, FSDP} per model: the table, and the headline JSON lines."""
    cuda = args.device == "cuda"
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        ranks = min(2, torch.cuda.device_count())
    else:
        ranks = 2
    names = args.memory_models or ("tiny,smollm2-135m" + (f",{RANDOM_05B}" if cuda else ""))
    batch_text = args.memory_batch or ("8x8x256+256" if cuda else "2x2x32+32")
    p, g, rest = batch_text.split("x")
    prompt_len, response_len = rest.split("+")
    batch = [int(p), int(g), int(prompt_len), int(response_len)]
    micro = args.memory_micro_batch or (16 if cuda else 4)
    steps = args.memory_steps or (4 if cuda else 2)
    layouts = [("1 rank", "ddp", 1)]
    if ranks > 1:
        layouts.append((f"DDP ×{ranks}", "ddp", ranks))
    layouts.append((f"FSDP ×{ranks}", "fsdp", ranks))
    mib = 1024 * 1024
    results: dict[str, dict[str, dict]] = {}
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        try:
            path = bench_model(name)
        except Exception as exc:  # e.g. the SmolLM2 wheel missing on a bare machine: say so, go on
            print(f"\nmemory: skipping {name}: {exc}")
            continue
        results[name] = {}
        for dtype in ("float32", "bfloat16"):
            for label, parallel, nproc in layouts:
                spec = {
                    "model_path": str(path),
                    "parallel": parallel,
                    "dtype": dtype,
                    "device": args.device,
                    "batch": batch,
                    "micro_batch": micro,
                    "steps": steps,
                }
                ranks_out = run_memory_config(spec, nproc)
                step_s = statistics.median(ranks_out[0]["step_s"])
                results[name][f"{dtype} {label}"] = {
                    "dtype": dtype,
                    "layout": label,
                    "ranks": nproc,
                    "step_s": step_s,
                    "tokens_per_s": ranks_out[0]["tokens"] / step_s,
                    "peak_mib_per_rank": [r["peak_bytes"] / mib for r in ranks_out],
                    "state_mib_per_rank": [r["state_bytes"] / mib for r in ranks_out],
                    "num_params": ranks_out[0]["num_params"],
                    "exact_peak": all(r["exact_peak_reset"] for r in ranks_out),
                }
        _print_memory_table(name, results[name], args.device, batch, micro, steps)
    if not results:
        return []
    largest = max(results, key=lambda n: next(iter(results[n].values()))["num_params"])
    rows = results[largest]
    lines: list[dict] = []
    measure = "torch.cuda.max_memory_allocated" if cuda else "VmHWM of one step − RSS before the model was loaded"
    figures = {
        "results": results,
        "device": args.device,
        "batch": batch_text,
        "micro_batch": micro,
        "timed_steps": steps,
        "model": largest,
        "peak_measure": measure,
    }
    ddp, fsdp = rows.get(f"float32 DDP ×{ranks}"), rows.get(f"float32 FSDP ×{ranks}")
    if ddp and fsdp:
        ratio = max(fsdp["peak_mib_per_rank"]) / max(max(ddp["peak_mib_per_rank"]), 1e-9)
        lines.append(
            {
                "bench": "learner",
                "metric": "fsdp_peak_mem_per_rank_ratio",
                "value": round(ratio, 4),
                "baseline": f"DDP ×{ranks}, float32, {largest}",
                "target": MEMORY_TARGET,
                "better": "lower",
                "figures": figures,
            }
        )
    fp32, mixed = rows.get("float32 1 rank"), rows.get("bfloat16 1 rank")
    if fp32 and mixed:
        lines.append(
            {
                "bench": "learner",
                "metric": "bf16_mixed_tokens_per_s_ratio",
                "value": round(mixed["tokens_per_s"] / fp32["tokens_per_s"], 4),
                "baseline": f"float32, 1 rank, {largest}",
                "target": None,
                "better": "higher",
                "figures": figures,
            }
        )
    return lines


def _print_memory_table(name: str, rows: dict[str, dict], device: str, batch: list[int], micro: int, steps: int):
    first = next(iter(rows.values()))
    p, g, pl, rl = batch
    what = "CUDA max allocated" if device == "cuda" else "peak RSS of a step − RSS before the model was loaded"
    print(
        f"\nprecision × parallelism: {name} ({first['num_params'] / 1e6:.1f} M parameters) on {device}, batch "
        f"{p}×{g} sequences of {pl}+{rl} tokens, micro-batch {micro}, median of {steps} steps; memory per rank: "
        f"peak = {what}, state = parameters + gradients + AdamW state"
    )
    print(f"{'':22}{'ranks':>6}{'step s':>9}{'tokens/s':>10}{'peak MiB/rank':>16}{'state MiB/rank':>16}")
    for label, r in rows.items():
        print(
            f"{label:22}{r['ranks']:>6}{r['step_s']:>9.3f}{r['tokens_per_s']:>10.0f}"
            f"{max(r['peak_mib_per_rank']):>16.1f}{max(r['state_mib_per_rank']):>16.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | smollm2-135m | a model folder")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--loop-steps", type=int, default=4)
    parser.add_argument(
        "--sections", default="throughput,phases,memory", help="comma list of throughput, phases, memory"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the memory section")
    parser.add_argument(
        "--memory-models",
        default=None,
        help="comma list (default: tiny,smollm2-135m on CPU; also llama-0.5b-random on CUDA)",
    )
    parser.add_argument(
        "--memory-batch",
        default=None,
        help="PROMPTSxGROUPxPROMPT_LEN+RESPONSE_LEN of the memory section (default: 2x2x32+32 on "
        "CPU, 8x8x256+256 on CUDA)",
    )
    parser.add_argument("--memory-micro-batch", type=int, default=None, help="default: 4 on CPU, 16 on CUDA")
    parser.add_argument("--memory-steps", type=int, default=None, help="timed steps (default: 2 on CPU, 4 on CUDA)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # JSON spec of one memory configuration
    args = parser.parse_args()
    if args.worker:
        memory_worker(json.loads(args.worker))
        return
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    unknown = sections - {"throughput", "phases", "memory"}
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}")

    import logging

    import transformers

    from aerplane.data.embedded_models import resolve_model

    logging.basicConfig(level=logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    lines: list[dict] = []
    if sections & {"throughput", "phases"}:
        lines += loop_sections(args, resolve_model(args.model), sections)
    if "memory" in sections:
        lines += memory_section(args)
    for line in lines:  # the JSON lines, all at the end
        print(json.dumps(line))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
