"""`aerplane reward serve` configuration: environment names, CLI flags on top, errors that name the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aerplane.common.settings import SettingsError, load_settings
from aerplane.reward.settings import RewardSettings


def test_defaults_and_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AERPLANE_RUN_ID", "exp1")
    monkeypatch.setenv("AERPLANE_REDIS_URL", "redis://db:6379/2")
    monkeypatch.setenv("AERPLANE_REWARD_WORKERS", "6")
    monkeypatch.setenv("AERPLANE_REWARD_TIMEOUT_S", "2.5")
    monkeypatch.setenv("AERPLANE_REWARD_MATH_TASKS", "gsm8k, dapo")
    monkeypatch.setenv("AERPLANE_REWARD_EXTRACTION", "boxed")
    s = load_settings(RewardSettings, {"http_port": 9001, "workers": None}, section="reward")
    assert (s.run_id, s.redis_url, s.workers, s.timeout_s) == ("exp1", "redis://db:6379/2", 6, 2.5)
    assert s.math_tasks == ["gsm8k", "dapo"] and s.extraction == "boxed" and s.http_port == 9001
    assert s.max_response_bytes == 64 * 1024 and s.group == "reward" and s.downstream_group == "learner"
    assert s.consumer.startswith("reward-")


@pytest.mark.parametrize("mode", ["math_verify", "boxed", "last_number", "boxed_or_last_number"])
def test_extraction_modes_and_the_default(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    assert load_settings(RewardSettings, {"consume": False}).extraction == "math_verify"
    monkeypatch.setenv("AERPLANE_REWARD_EXTRACTION", mode)
    monkeypatch.setenv("AERPLANE_REWARD_MAX_NESTING", "20")
    s = load_settings(RewardSettings, {"consume": False})
    assert (s.extraction, s.max_nesting) == (mode, 20)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"run_id": "r", "workers": 0}, "reward.workers"),
        ({"run_id": "r", "timeout_s": 0}, "reward.timeout_s"),
        ({"run_id": "r", "extraction": "first_word"}, "reward.extraction: must be one of math_verify, boxed"),
        ({"run_id": "r", "max_nesting": 0}, "reward.max_nesting"),
        ({"run_id": "r", "http_port": 70000}, "reward.http_port"),
        ({}, "run_id is required"),
        ({"run_id": "r", "downstream_max_lag": 200_000}, "downstream_max_lag"),
    ],
)
def test_invalid_settings_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(RewardSettings, overrides, section="reward")


def test_http_only_needs_no_run() -> None:
    assert load_settings(RewardSettings, {"consume": False}).run_id is None


def test_cli_reports_bad_configuration_without_a_traceback() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aerplane.cli", "reward", "serve", "--no-consume", "--workers", "0"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "invalid configuration: --workers (reward.workers): " in out.stderr and "Traceback" not in out.stderr


def test_reward_command_registration_is_light() -> None:
    code = (
        "import sys, aerplane.cli as c; p = c.build_parser(); "
        "p.parse_args(['reward', 'serve', '--no-consume']); print(sorted(sys.modules))"
    )
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("fastapi", "math_verify", "sympy", "reasoning_gym", "redis", "uvicorn"):
        assert f"'{heavy}'" not in mods, heavy
