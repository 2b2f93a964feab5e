"""Generation settings: environment names, CLI flags on top, errors that name the key; the light command module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aerplane.common.settings import SettingsError, load_settings
from aerplane.generation.backends.vllm_server import parse_completion, vllm_server_argv
from aerplane.generation.settings import SECTION, GenerationSettings


def test_defaults() -> None:
    s = load_settings(GenerationSettings, section=SECTION)
    assert (s.backend, s.model, s.http_port, s.vllm_port, s.group) == ("vllm", "smollm2-135m", 8002, 8100, "generation")
    assert s.run_id == "default" and s.vllm_url is None and s.logprobs_mode == "processed"


def test_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AERPLANE_RUN_ID", "exp1")
    monkeypatch.setenv("AERPLANE_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("AERPLANE_GENERATION_BACKEND", "transformers")
    monkeypatch.setenv("AERPLANE_GENERATION_HTTP_PORT", "9002")
    monkeypatch.setenv("AERPLANE_GENERATION_VLLM_EXTRA_ARGS", '["--max-num-seqs", "256"]')
    s = load_settings(GenerationSettings, {"http_port": 9100, "model": None}, section=SECTION)
    assert (s.run_id, s.redis_url, s.backend) == ("exp1", "redis://redis:6379/0", "transformers")
    assert s.http_port == 9100  # the flag wins over the environment
    assert s.model == "smollm2-135m"  # a flag not given (None) leaves the default
    assert s.vllm_extra_args == ["--max-num-seqs", "256"]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"http_port": 70000}, r"generation\.http_port"),
        ({"backend": "tgi"}, r"generation\.backend"),
        ({"redis_url": "http://x"}, r"generation\.redis_url: must start with redis://"),
        ({"vllm_url": "localhost:8000"}, r"generation\.vllm_url: must be an http"),
        ({"backend": "transformers", "vllm_url": "http://x:1"}, r"vllm_url: only used with backend vllm"),
        ({"max_batch_prompts": 0}, r"generation\.max_batch_prompts"),
        ({"run_id": "bad id"}, r"generation\.run_id"),
        ({"http_port": 8100}, r"vllm_port: 8100 is also the http_port"),
    ],
)
def test_invalid_settings_name_the_key(overrides: dict, match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        load_settings(GenerationSettings, overrides, section=SECTION)


def test_cli_reports_bad_configuration() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aerplane.cli", "generation", "serve", "--http-port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "generation.http_port" in out.stderr


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys, aerplane.cli as c; c.build_parser();"
        "heavy = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_vllm_server_command_line() -> None:
    argv = vllm_server_argv("/m", port=8100, dtype="float32", max_model_len=512, extra_args=["--max-num-seqs", "8"])
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(argv)
    assert "--model /m" in joined and "--port 8100" in joined and "--logprobs-mode processed_logprobs" in joined
    assert "--enforce-eager" in argv and argv[-2:] == ["--max-num-seqs", "8"]


def test_parse_completion_validates_the_answer() -> None:
    good = {
        "choices": [
            {
                "index": 1,
                "text": "b",
                "token_ids": [5, 2],
                "logprobs": {"token_logprobs": [-1.0, -0.5]},
                "finish_reason": "stop",
            },
            {
                "index": 0,
                "text": "a",
                "token_ids": None,
                "logprobs": {"token_logprobs": [-2.0], "tokens": ["token_id:7"]},
                "finish_reason": "length",
            },
        ]
    }
    samples = parse_completion(good, 2)
    assert [s.token_ids for s in samples] == [[7], [5, 2]]
    assert [s.finish_reason for s in samples] == ["length", "stop"]
    from aerplane.generation.backends import BackendError

    with pytest.raises(BackendError, match="2 choices for n=3"):
        parse_completion(good, 3)
    bad = {"choices": [{"index": 0, "token_ids": [1, 2], "logprobs": {"token_logprobs": [-1.0]}}]}
    with pytest.raises(BackendError, match="2 tokens but 1 logprobs"):
        parse_completion(bad, 1)
