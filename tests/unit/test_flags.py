"""Flags generated from the settings classes (aerplane.common.flags): every option once, its doc in --help, the
flag names users already type still set the same settings, secrets never become flags."""

from __future__ import annotations

import argparse
import re

import pytest
from pydantic import SecretStr

from aerplane.cli import build_parser
from aerplane.coefficient.settings import CoefficientSettings
from aerplane.common.flags import add_settings_flags, given_argv, given_overrides, settings_flags
from aerplane.common.settings import load_settings
from aerplane.generation.settings import GenerationSettings
from aerplane.learner.settings import LearnerSettings
from aerplane.reward.settings import RewardSettings

SERVICES = {
    ("coefficient", "serve"): CoefficientSettings,
    ("reward", "serve"): RewardSettings,
    ("generation", "serve"): GenerationSettings,
    ("learner", "train"): LearnerSettings,
}


def _help(command: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    return re.sub(r"\s+", " ", capsys.readouterr().out)


@pytest.mark.parametrize("command", list(SERVICES), ids=lambda c: c[0])
def test_help_shows_every_option_with_the_doc_of_its_settings_field(command, capsys) -> None:
    from aerplane.learner.entry import FLAGS

    text = _help(command, capsys)
    specs = settings_flags(SERVICES[command], FLAGS)  # the learner's strategy: its one spelling
    assert len(specs) >= 4
    for spec, kwargs in specs:
        assert spec.flag in text, spec.flag
        doc = kwargs["help"].replace("%%", "%")
        assert doc[:40] in text, (spec.flag, doc[:40])


def test_scalar_fields_all_get_a_flag_and_secrets_none() -> None:
    for cls in SERVICES.values():
        keys = {spec.key for spec, _ in settings_flags(cls)}
        for name, info in cls.model_fields.items():
            if info.annotation in (SecretStr, SecretStr | None):
                assert name not in keys, f"{cls.__name__}.{name} is a secret"
            elif info.annotation in (int, float, str, bool):
                assert name in keys, f"{cls.__name__}.{name} has no flag"
    learner = {spec.key for spec, _ in settings_flags(LearnerSettings)}
    assert "coefficient.token" not in learner and "shared_run_id" not in learner
    assert {"optim.lr", "run.steps", "coefficient.outage_s", "data.shuffle"} <= learner


# Flags users already type (the hand-written tables before the settings classes generated them), with the settings
# value each must still produce.
LEGACY = [
    (
        ("reward", "serve"),
        ["--timeout", "2.5", "--workers", "3", "--no-consume"],
        {"timeout_s": 2.5, "workers": 3, "consume": False},
    ),
    (
        ("reward", "serve"),
        ["--run-id", "r", "--math-tasks", "gsm8k,dapo", "--math-tasks", "aime"],
        {"run_id": "r", "math_tasks": ["gsm8k", "dapo", "aime"]},
    ),
    (
        ("generation", "serve"),
        ["--max-model-len", "512", "--backend", "transformers", "--logprobs-mode", "processed"],
        {"vllm_max_model_len": 512, "backend": "transformers", "logprobs_mode": "processed"},
    ),
    (
        ("coefficient", "serve"),
        ["--grpc-port", "0", "--http-port", "0", "--host", "127.0.0.1"],
        {"grpc_port": 0, "http_port": 0, "host": "127.0.0.1"},
    ),
    (
        ("learner", "train"),
        [
            "--lr",
            "1e-4",
            "--steps",
            "3",
            "--run-id",
            "x",
            "--data",
            "d.jsonl",
            "--task",
            "easy",
            "--lr-schedule",
            "cosine",
            "--rollout-timeout",
            "9",
            "--resume",
            "--model",
            "tiny",
        ],
        {
            "optim.lr": 1e-4,
            "run.steps": 3,
            "run.run_id": "x",
            "data.file": "d.jsonl",
            "data.task": "easy",
            "optim.schedule": "cosine",
            "run.rollout_timeout_s": 9.0,
            "run.resume": True,
            "model.path": "tiny",
        },
    ),
]


@pytest.mark.parametrize(("command", "argv", "expected"), LEGACY, ids=lambda x: x[0] if isinstance(x, tuple) else "")
def test_the_flags_users_already_use_set_the_same_settings(command, argv, expected) -> None:
    args = build_parser().parse_args([*command, *argv])
    if command[0] == "learner":
        from aerplane.learner.entry import overrides_from_args

        overrides = overrides_from_args(args)
    else:
        overrides = given_overrides(args, args.flags)
    settings = load_settings(SERVICES[command], overrides)
    for key, value in expected.items():
        got = settings
        for part in key.split("."):
            got = getattr(got, part)
        assert str(got) == str(value), key


def test_given_argv_renders_back_exactly_what_was_given() -> None:
    parser = argparse.ArgumentParser()
    specs = add_settings_flags(parser, RewardSettings)
    first = parser.parse_args(["--workers", "4", "--no-consume", "--math-tasks", "a", "--math-tasks", "b"])
    argv = given_argv(first, specs)
    assert sorted(argv) == sorted(["--workers", "4", "--no-consume", "--math-tasks", "a", "--math-tasks", "b"])
    assert given_overrides(parser.parse_args(argv), specs) == given_overrides(first, specs)
    assert given_overrides(parser.parse_args([]), specs) == {}  # nothing given: the environment decides


def test_a_bad_value_is_refused_by_argparse_with_the_flag_named(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reward", "serve", "--workers", "many"])
    assert "--workers: invalid int value: 'many'" in capsys.readouterr().err
    # A strategy is checked with its parameters, when the settings are built: one line naming the flag.
    args = build_parser().parse_args(["learner", "train", "--strategy", "bogus:rho=0.5"])
    from aerplane.common.settings import SettingsError
    from aerplane.learner.entry import overrides_from_args

    with pytest.raises(SettingsError, match=r"--strategy \(learner\.strategy\.name\): Input should be 'none'"):
        load_settings(
            LearnerSettings, overrides_from_args(args), section="learner", labels={"strategy.name": "--strategy"}
        )


def test_shared_options_read_one_variable_in_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from aerplane.launcher.settings import UpSettings

    monkeypatch.setenv("AERPLANE_REDIS_URL", "redis://shared:7/1")
    monkeypatch.setenv("AERPLANE_LOG_LEVEL", "warning")
    monkeypatch.setenv("AERPLANE_CACHE_DIR", "/tmp/models")
    monkeypatch.setenv("REDIS_URL", "redis://not-ours:1/0")  # a bare name is someone else's variable
    monkeypatch.setenv("RUN_ID", "not-ours")
    monkeypatch.setenv("AERPLANE_RUN_ID", "shared-run")
    for cls in (*SERVICES.values(), UpSettings):
        s = load_settings(cls)
        assert s.redis_url == "redis://shared:7/1", cls.__name__
        assert s.log_level == "WARNING" and str(s.cache_dir) == "/tmp/models", cls.__name__
        flags = {spec.flag for spec, _ in settings_flags(cls)}
        assert {"--redis-url", "--log-level", "--cache-dir"} <= flags, cls.__name__
    assert load_settings(RewardSettings).run_id == "shared-run"
    assert load_settings(GenerationSettings).run_id == "shared-run"
    assert load_settings(LearnerSettings).run.run_id == "shared-run"


@pytest.mark.parametrize("cls", [RewardSettings, GenerationSettings, CoefficientSettings, LearnerSettings])
def test_a_redis_url_that_is_not_one_is_refused_the_same_way_everywhere(cls) -> None:
    from aerplane.common.settings import SettingsError

    with pytest.raises(SettingsError, match="redis_url: must start with redis://"):
        load_settings(cls, {"redis_url": "http://127.0.0.1:6379"})


def test_a_run_id_is_the_same_thing_everywhere() -> None:
    from aerplane.common.settings import SettingsError
    from aerplane.launcher.settings import UpSettings

    cases = [
        (RewardSettings, {"run_id": "bad id"}),
        (GenerationSettings, {"run_id": "bad id"}),
        (LearnerSettings, {"run": {"run_id": "bad id"}}),
        (UpSettings, {"run_id": "bad id"}),
    ]
    for cls, override in cases:
        with pytest.raises(SettingsError, match="run_id"):
            load_settings(cls, override)
