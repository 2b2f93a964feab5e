"""Learner training-step throughput vs a plain single-process torch loop, and the phase breakdown of a real step.

    .venv/bin/python bench/learner.py                          # tiny model, 4 prompts × G 4, 64 + 64 tokens
    .venv/bin/python bench/learner.py --model smollm2-135m --reps 3

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
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

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
            out.append(TrainSample(prompt_index=q, prompt_ids=prompt, response_ids=response,
                                   sampler_logprobs=[-10.0] * response_len, reward=float(adv > 0), advantage=adv,
                                   weight=1.0, difficulty="easy", policy_version=0, prompt_id=f"q{q}"))  # fmt: skip
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
    from aerplane.learner.step import LossConfig, train_step

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
    cfg = LossConfig()

    def learner() -> float:
        t = time.perf_counter()
        train_step(policy, opt_a, None, samples, num_prompts=args.prompts, ctx=ctx, alpha=1e-3, cfg=cfg,
                   micro_batch_size=args.micro_batch_size, grad_clip=1.0)  # fmt: skip
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
    return {"tokens": tokens, **{f"{k}_s": v for k, v in med.items()},
            **{f"{k}_tokens_per_s": tokens / v for k, v in med.items()},
            "ratio": med["plain"] / med["learner"], "ratio_vs_full_logits_loop": med["naive"] / med["learner"],
            "runs_s": runs}  # fmt: skip


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
                    out.append(ScoredSample(
                        run_id=r.run_id, step=r.step, prompt_id=r.prompt_id, sample_index=i,
                        num_samples=r.num_samples, policy_version=r.policy_version, task=r.task,
                        difficulty=r.difficulty, ground_truth=r.ground_truth, prompt_token_ids=prompt,
                        response_token_ids=resp, logprobs=[-10.0] * len(resp), response_text="",
                        finish_reason="length", reward=float(i % 2), reason="match",
                    ))  # fmt: skip
                consumer.publish_and_ack(ROLLOUT_SCORED, out, [d.id])
        client.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        settings = load_settings(LearnerSettings, {
            "model": {"path": str(model_path)}, "run": {"run_id": "bench", "dir": str(tmp / "run"),
                                                       "steps": args.loop_steps},
            "batch": {"prompts_per_step": args.prompts, "samples_per_prompt": args.group,
                      "micro_batch_size": args.micro_batch_size},
            "data": {"size": 32}, "coefficient": {"target": "local"}, "redis_url": redis.url, "http_port": 0,
            "lengths": {"max_response_tokens": args.response_len},
        }, section=SECTION)  # fmt: skip
        code = train(settings)
        if code != 0:
            raise SystemExit(f"learner loop failed with code {code}")
        rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    finally:
        stop.set()
        producer.join(timeout=5)
        redis.stop()
    return rows


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
    args = parser.parse_args()

    import logging

    import transformers

    from aerplane.data.models import resolve_model

    logging.basicConfig(level=logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    model_path = resolve_model(args.model)
    tp = throughput(args, model_path)
    rows = phase_breakdown(args, model_path)
    steady = rows[1:] or rows  # step 0 includes one-off warm-up costs
    phases = sorted({p for r in steady for p in r["phases"]})
    phase_med = {p: statistics.median(r["phases"].get(p, 0.0) for r in steady) for p in phases}
    step_med = statistics.median(r["step_seconds"] for r in steady)

    print(f"\nlearner bench: model {args.model}, batch {args.prompts}×{args.group} sequences of "
          f"{args.prompt_len}+{args.response_len} tokens ({tp['tokens']} tokens), micro-batch {args.micro_batch_size}, "
          f"median of {args.reps}")  # fmt: skip
    print(f"{'':34}{'step s':>10}{'tokens/s':>12}")
    print(f"{'plain loop, full logits':34}{tp['naive_s']:>10.3f}{tp['naive_tokens_per_s']:>12.0f}")
    print(f"{'plain loop, response logits':34}{tp['plain_s']:>10.3f}{tp['plain_tokens_per_s']:>12.0f}")
    print(f"{'learner train_step':34}{tp['learner_s']:>10.3f}{tp['learner_tokens_per_s']:>12.0f}")
    print(f"{'ratio vs plain (response logits)':34}{tp['ratio']:>22.2f}   target ≥ {TARGET}")
    print(f"{'ratio vs plain (full logits)':34}{tp['ratio_vs_full_logits_loop']:>22.2f}")
    print(f"\nphases of the real loop (1 rank, local coefficients, median of steps 1..{len(rows) - 1}):")
    for p in phases:
        print(f"  {p:24}{phase_med[p]:>8.3f} s  {100 * phase_med[p] / step_med:5.1f} %")
    print(f"  {'step total':24}{step_med:>8.3f} s")
    figures = {**{k: v for k, v in tp.items()}, "phases_s": phase_med, "loop_step_s": step_med,
               "loop_tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
               "model": args.model, "micro_batch_size": args.micro_batch_size}  # fmt: skip
    train_share = phase_med.get("forward_backward", 0.0) / step_med if step_med else 0.0
    print(json.dumps({"bench": "learner", "metric": "tokens_per_s_ratio", "value": round(tp["ratio"], 4),
                      "baseline": "plain torch loop (logits at response positions, log_softmax, same loss)",
                      "target": TARGET, "better": "higher", "figures": figures}))  # fmt: skip
    print(
        json.dumps(
            {
                "bench": "learner",
                "metric": "train_share_of_step",
                "value": round(train_share, 4),
                "baseline": "whole learner step (wait, coefficients, train, report, checkpoint, publish)",
                "target": None,
                "better": "higher",
                "figures": {"phases_s": phase_med, "step_s": step_med},
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
