"""Chunked vs naive token entropy + logprobs, forward and backward, on CPU (or CUDA with `--device cuda`).

    .venv/bin/python bench/entropy.py                     # tokens=8192, vocab=49152 (SmolLM2), float32
    .venv/bin/python bench/entropy.py --tokens 1024 --vocab 8192 --reps 5
    .venv/bin/python bench/entropy.py --device cuda --dtype bfloat16 --tokens 32768 --vocab 151936

Baseline: the textbook `log_softmax` → `exp` → `−Σ p log p` through autograd (`naive_entropy_and_logprobs`).
Candidate: `aerplane.core.entropy.entropy_and_logprobs` (chunked, recomputes the softmax in backward).
Both compute the entropy and the sampled-token logprobs and backpropagate `mean(H) + mean(log p)`.

Peak memory: each measurement runs in a fresh subprocess. After the logits exist, the process's peak RSS is reset
(`/proc/self/clear_refs`, falling back to the lifetime peak) and read again after the backward pass; "extra" is
that peak minus the RSS before the pass minus the gradient tensor (which any method must produce), reported as a
multiple of the logits' size (on CUDA: `torch.cuda.max_memory_allocated` instead of the RSS). Time: median of
several alternating repetitions in this process (CUDA synchronised around each). Benchmarks report,
they never assert; the targets (extra ≤ 0.3× logits, time ≤ 1.2× naive) come from issue 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _memory import peak_rss_bytes, reset_peak_rss, rss_bytes  # bench/_memory.py

PEAK_TARGET = 0.3
TIME_TARGET = 1.2


def _inputs(tokens: int, vocab: int, dtype_name: str, device: str = "cpu"):
    import torch

    gen = torch.Generator(device).manual_seed(0)
    dtype = getattr(torch, dtype_name)
    logits = (torch.randn(tokens, vocab, generator=gen, device=device) * 2).to(dtype).requires_grad_(True)
    ids = torch.randint(0, vocab, (tokens,), generator=gen, device=device)
    return logits, ids


def _step(method: str, logits, ids, chunk_size: int | None) -> None:
    from aerplane.core.entropy import entropy_and_logprobs, naive_entropy_and_logprobs

    if method == "naive":
        h, lp = naive_entropy_and_logprobs(logits, ids)
    else:
        h, lp = entropy_and_logprobs(logits, ids, chunk_size=chunk_size)
    (h.float().mean() + lp.float().mean()).backward()


def measure_memory(
    method: str, tokens: int, vocab: int, dtype: str, chunk_size: int | None, device: str = "cpu"
) -> dict:
    """In this (fresh) process: peak bytes beyond logits + gradient for one forward + backward."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    logits, ids = _inputs(tokens, vocab, dtype, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before, exact = torch.cuda.memory_allocated(), True
        _step(method, logits, ids, chunk_size)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        before = rss_bytes()
        exact = reset_peak_rss()
        _step(method, logits, ids, chunk_size)
        peak = peak_rss_bytes()
    logits_bytes = logits.numel() * logits.element_size()
    grad_bytes = logits.grad.numel() * logits.grad.element_size()
    return {
        "method": method,
        "peak_extra_bytes": peak - before - grad_bytes,
        "logits_bytes": logits_bytes,
        "exact_peak_reset": exact,
    }


def memory_in_subprocess(method: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--measure-memory",
        method,
        "--tokens",
        str(args.tokens),
        "--vocab",
        str(args.vocab),
        "--dtype",
        args.dtype,
        "--device",
        args.device,
    ]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_both(args: argparse.Namespace) -> dict[str, list[float]]:
    import torch

    logits, ids = _inputs(args.tokens, args.vocab, args.dtype, args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {"naive": [], "chunked": []}
    for method in times:  # warm-up, not timed
        _step(method, logits, ids, args.chunk_size)
        logits.grad = None
    for rep in range(args.reps):
        order = ("naive", "chunked") if rep % 2 == 0 else ("chunked", "naive")
        for method in order:
            sync()
            start = time.perf_counter()
            _step(method, logits, ids, args.chunk_size)
            sync()
            times[method].append(time.perf_counter() - start)
            logits.grad = None
    del torch
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk (default: 2**24 // vocab)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per method")
    parser.add_argument("--mem-reps", type=int, default=1, help="fresh-process memory measurements per method")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--measure-memory", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure_memory:
        print(
            json.dumps(
                measure_memory(args.measure_memory, args.tokens, args.vocab, args.dtype, args.chunk_size, args.device)
            )
        )
        return 0

    from aerplane.core.entropy import DEFAULT_CHUNK_ELEMENTS

    chunk = args.chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // args.vocab)
    mem: dict[str, list[dict]] = {"naive": [], "chunked": []}
    for _ in range(args.mem_reps):
        for method in mem:
            mem[method].append(memory_in_subprocess(method, args))
    times = time_both(args)

    logits_bytes = mem["chunked"][0]["logits_bytes"]
    extra = {m: statistics.median(r["peak_extra_bytes"] for r in runs) for m, runs in mem.items()}
    med = {m: statistics.median(t) for m, t in times.items()}
    peak_ratio = extra["chunked"] / logits_bytes
    naive_ratio = extra["naive"] / logits_bytes
    time_ratio = med["chunked"] / med["naive"]
    mib = 1024 * 1024

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"entropy + logprobs, fwd+bwd on {args.device}: tokens={args.tokens} vocab={args.vocab} "
        f"{args.dtype} chunk={chunk} (logits {logits_bytes / mib:.0f} MiB)"
    )
    for col in ("method", "extra peak MiB", "extra / logits", "median s", "runs s"):
        table.add_column(col, justify="right")
    for m in ("naive", "chunked"):
        table.add_row(
            m,
            f"{extra[m] / mib:.0f}",
            f"{extra[m] / logits_bytes:.3f}",
            f"{med[m]:.3f}",
            " ".join(f"{t:.3f}" for t in times[m]),
        )
    Console().print(table)
    print(f"chunked / naive: extra memory {extra['chunked'] / max(extra['naive'], 1):.3f}x, time {time_ratio:.3f}x")

    figures = {
        "tokens": args.tokens,
        "vocab": args.vocab,
        "dtype": args.dtype,
        "device": args.device,
        "chunk_tokens": chunk,
        "logits_mib": round(logits_bytes / mib, 1),
        "naive_extra_mib": round(extra["naive"] / mib, 1),
        "chunked_extra_mib": round(extra["chunked"] / mib, 1),
        "naive_extra_ratio": round(naive_ratio, 4),
        "chunked_extra_ratio": round(peak_ratio, 4),
        "naive_median_s": round(med["naive"], 4),
        "chunked_median_s": round(med["chunked"], 4),
        "naive_runs_s": [round(t, 4) for t in times["naive"]],
        "chunked_runs_s": [round(t, 4) for t in times["chunked"]],
        "exact_peak_reset": all(r["exact_peak_reset"] for runs in mem.values() for r in runs),
        "threads": os.cpu_count(),
    }
    lines = [
        {
            "bench": "entropy",
            "metric": "peak_mem_ratio",
            "value": round(peak_ratio, 4),
            "baseline": "naive softmax",
            "target": PEAK_TARGET,
            "better": "lower",
            "figures": figures,
        },
        {
            "bench": "entropy",
            "metric": "time_ratio",
            "value": round(time_ratio, 4),
            "baseline": "naive softmax",
            "target": TIME_TARGET,
            "better": "lower",
            "figures": figures,
        },
    ]
    for line in lines:
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
