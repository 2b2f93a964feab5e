"""`aerplane up`'s settings compose the learner's, its demo defaults are one table, and a strategy has one spelling on
every command line (the old ones still work, each logging its replacement); every launcher flag comes from a field."""

from __future__ import annotations

import json
import logging
import re
import typing

import pytest
from pydantic_settings import BaseSettings

from aerplane.cli import build_parser, main
from aerplane.common.flags import STRATEGY_FLAG, Flag, settings_flags
from aerplane.common.settings import SettingsError, load_settings
from aerplane.core.strategies import build_strategy
from aerplane.launcher.entry import up_settings
from aerplane.launcher.settings import (
    SETUP_FIELDS,
    UP_DEFAULTS,
    CompareOptions,
    Feeds,
    ReportOptions,
    UpOptions,
    UpSettings,
    learner_field,
)
from aerplane.launcher.simulate import SimulateOptions, SyntheticTrace
from aerplane.learner import entry as learner_entry
from aerplane.learner.settings import SECTION, LearnerSettings

# What `aerplane up` with no flags ran with before its settings composed the learner's (the README sample's run).
TODAY = {
    "steps": 20,
    "model": "smollm2-135m",
    "task": "mixed",
    "data": None,
    "strategy": "aer",
    "params": build_strategy("aer", eta=0.01, alpha_max=0.03).numeric_params,
    "options": {"weighting": "threshold"},
    "backend": "auto",
    "prompts_per_step": 8,
    "samples_per_prompt": 4,
    "max_tokens": 64,
    "temperature": 1.0,
    "lr": 2e-4,
    "dtype": "auto",
    "seed": 0,
    "nproc": 1,
    "checkpoint_interval": 5,
    "eval_every": 0,
    "eval_size": 32,
    "eval_k": 8,
}


def _up(*argv: str) -> UpSettings:
    return up_settings(build_parser().parse_args(["up", *argv]))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_up_with_no_flags_runs_exactly_todays_demo_regime(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _up()
    assert {k: getattr(cfg, k) for k in TODAY} == TODAY
    assert cfg.params["eta"] == 0.01 and cfg.params["alpha_max"] == 0.03 and cfg.params["rho"] == 0.5
    assert not _warnings(caplog)
    none = _up("--strategy", "none")  # the demo η and α_max are aer's, not a parameter of every strategy
    assert (none.strategy, none.params, none.options) == ("none", {}, {})
    # A comparison's configurations are what they say: the demo parameters are `aerplane up`'s command line only.
    assert UpSettings(strategy="aer").params == {}


def test_flags_and_variables_override_the_demo_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _up("--lr", "1e-3", "--steps", "3", "-G", "2", "--strategy", "aer:eta=0.05:weighting=linear")
    assert (cfg.lr, cfg.steps, cfg.samples_per_prompt) == (1e-3, 3, 2)
    assert (cfg.params["eta"], cfg.params["alpha_max"], cfg.options) == (0.05, 0.03, {"weighting": "linear"})
    monkeypatch.setenv("AERPLANE_UP_STEPS", "40")
    monkeypatch.setenv("AERPLANE_UP_LR", "1e-3")
    monkeypatch.setenv("AERPLANE_UP_STRATEGY", "aer:alpha_max=0.05")
    cfg = _up()
    assert (cfg.steps, cfg.lr, cfg.params["alpha_max"], cfg.params["eta"]) == (40, 1e-3, 0.05, 0.01)
    assert _up("--steps", "7", "--strategy", "fixed").steps == 7  # a flag wins over the variable
    assert _up("--strategy", "fixed").params == {"alpha": 0.001}


def test_bad_strategy_values_name_what_is_wrong() -> None:
    with pytest.raises(SettingsError, match=r"--strategy \(up\.strategy\): expected KEY=VALUE, got 'rho'"):
        _up("--strategy", "aer:rho")
    with pytest.raises(SettingsError, match=r"--strategy \(up\.strategy\): Input should be 'none'"):
        _up("--strategy", "bogus")
    with pytest.raises(ValueError, match="rho: must be <= 1"):
        _up("--strategy", "aer:rho=1.5")


OLD_AND_NEW = [
    (["--eta", "0.02"], ["--strategy", "aer:eta=0.02"], "--eta is an old spelling: use --strategy aer:eta=0.02"),
    (
        ["--strategy", "aer", "--param", "eta=0.02"],
        ["--strategy", "aer:eta=0.02"],
        "--param is an old spelling: use --strategy aer:eta=0.02",
    ),
    (
        ["--strategy", "aer:rho=0.8", "--alpha-max", "0.05", "--param", "weighting=linear"],
        ["--strategy", "aer:rho=0.8:alpha_max=0.05:weighting=linear"],
        "--alpha-max, --param are old spellings: use --strategy aer:rho=0.8:alpha_max=0.05:weighting=linear",
    ),
    (
        ["--strategy", "skywork", "--param", "target_entropy=0.4"],
        ["--strategy", "skywork:target_entropy=0.4"],
        "--param is an old spelling: use --strategy skywork:target_entropy=0.4",
    ),
]


@pytest.mark.parametrize(("old", "new", "warning"), OLD_AND_NEW)
def test_an_old_spelling_of_up_gives_the_same_run_and_names_its_replacement(
    old: list[str], new: list[str], warning: str, caplog: pytest.LogCaptureFixture
) -> None:
    got = _up(*old)
    assert _warnings(caplog) == [warning]
    caplog.clear()
    want = _up(*new)
    assert not _warnings(caplog)
    assert (got.strategy, got.params, got.options) == (want.strategy, want.params, want.options)
    assert _up(*warning.split("use ", 1)[1].split()).params == got.params  # the replacement is a working command


@pytest.mark.parametrize(("old", "new", "warning"), OLD_AND_NEW)
def test_an_old_spelling_of_simulate_gives_the_same_table(
    old: list[str], new: list[str], warning: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["simulate", "--json", "--steps", "6", *old]) == 0
    assert _warnings(caplog) == [warning]
    rows = capsys.readouterr().out
    caplog.clear()
    assert main(["simulate", "--json", "--steps", "6", *new]) == 0
    assert not _warnings(caplog)
    assert capsys.readouterr().out == rows


def test_the_learners_old_spelling_gives_the_same_settings_and_names_its_replacement(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def settings(*argv: str) -> LearnerSettings:
        args = build_parser().parse_args(["learner", "train", *argv])
        return load_settings(LearnerSettings, learner_entry.overrides_from_args(args), section=SECTION)

    old = settings("--strategy-param", "eta=0.02", "--strategy-param", "weighting=linear")
    assert _warnings(caplog) == ["--strategy-param is an old spelling: use --strategy aer:eta=0.02:weighting=linear"]
    caplog.clear()
    new = settings("--strategy", "aer:eta=0.02:weighting=linear")
    assert not _warnings(caplog) and new.strategy == old.strategy
    assert new.strategy.params == {"eta": 0.02} and new.strategy.options == {"weighting": "linear"}
    both = settings("--strategy", "aer:eta=0.02", "--strategy-param", "rho=0.4")  # the old one on top, as before
    assert both.strategy.params == {"eta": 0.02, "rho": 0.4}


def test_the_learner_reads_its_strategy_variables_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AERPLANE_LEARNER_STRATEGY__NAME", "skywork")
    monkeypatch.setenv("AERPLANE_LEARNER_STRATEGY__PARAMS", '{"target_entropy": 0.3}')
    args = build_parser().parse_args(["learner", "train", "--strategy-param", "delta=0.001"])
    s = load_settings(LearnerSettings, learner_entry.overrides_from_args(args), section=SECTION)
    assert s.strategy.name == "skywork" and s.strategy.params == {"target_entropy": 0.3, "delta": 0.001}
    # Its replacement, forwarded to torchrun's workers, names the strategy the environment set.
    assert learner_entry.worker_argv(args)[-2:] == ["--strategy", "skywork:delta=0.001"]


def test_the_learner_gets_the_settings_it_got_before(tmp_path) -> None:
    """`Stack.learner_values` builds from the fields' `Feeds` what `start_learner` once wrote out by hand."""
    from aerplane.launcher.up import Stack, service_args

    cfg = _up("--resume", "--run-dir", str(tmp_path), "--redis-url", "redis://127.0.0.1:7/0")
    stack = Stack(cfg, tmp_path, "r1", {"model_path": "/models/m", "dtype": "float32", "backend": "transformers"})
    by_hand = {
        "run": {"run_id": "r1", "dir": str(tmp_path), "steps": 20, "seed": 0, "resume": True},
        "model": {"path": "/models/m", "dtype": "float32"},
        "optim": {"lr": 2e-4},
        "batch": {"prompts_per_step": 8, "samples_per_prompt": 4},
        "lengths": {"max_response_tokens": 64},
        "sampling": {"temperature": 1.0},
        "strategy": {"name": "aer", "params": cfg.params, "options": cfg.options},
        "data": {"task": "mixed"},
        "checkpoint": {"interval": 5},
        "coefficient": {"target": "127.0.0.1:50051"},
        "tracking": {"report_to": [], "wandb_project": "aerplane", "mlflow_experiment": "aerplane"},  # --report-to
        "redis_url": "redis://127.0.0.1:7/0",
        "host": "127.0.0.1",
        "http_port": 8003,
    }
    assert stack.learner_values() == by_hand
    argv = service_args("learner", stack.learner_values())
    args = build_parser().parse_args(argv)
    parsed = load_settings(LearnerSettings, learner_entry.overrides_from_args(args), section=SECTION)
    assert parsed == load_settings(LearnerSettings, by_hand, section=SECTION)


def test_up_fields_take_type_bounds_and_doc_from_the_learner_field_they_feed() -> None:
    fed = {
        name: info for name, info in UpSettings.model_fields.items() if any(isinstance(m, Feeds) for m in info.metadata)
    }
    assert set(fed) >= {"steps", "model", "lr", "seed", "prompts_per_step", "samples_per_prompt", "max_tokens"}
    for name, info in fed.items():
        key = next(m for m in info.metadata if isinstance(m, Feeds)).key
        source = learner_field(key)
        assert info.description == source.description, name
        assert typing.get_args(info.annotation) == typing.get_args(source.annotation), name
        assert info.annotation == source.annotation or typing.get_origin(info.annotation) is typing.Literal, name
        own = [m for m in info.metadata if not isinstance(m, (Flag, Feeds))]
        assert own == [m for m in source.metadata if not isinstance(m, Flag)], name
        assert info.default == UP_DEFAULTS.get(name, source.default) or info.default_factory, name
    # A bound declared on the learner (G <= 1024, seed < 2^31) holds for `aerplane up` too.
    with pytest.raises(SettingsError, match=r"up\.samples_per_prompt: Input should be less than or equal to 1024"):
        load_settings(UpSettings, {"samples_per_prompt": 1025}, section="up")
    with pytest.raises(SettingsError, match=r"up\.seed"):
        load_settings(UpSettings, {"seed": 2**31}, section="up")
    assert {"lr": 2e-4, "steps": 20}.items() <= UP_DEFAULTS.items()  # the one table of up's own defaults


# Each launcher command and the models its flags come from (compare's shared setup: UpSettings' SETUP_FIELDS).
COMMANDS = {
    "up": [(UpSettings, None), (UpOptions, None)],
    "compare": [(CompareOptions, None), (UpSettings, SETUP_FIELDS)],
    "simulate": [(SimulateOptions, None), (SyntheticTrace, None)],
    "report": [(ReportOptions, None)],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_help_line_shows_its_fields_doc_default_and_variable(command: str, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = re.sub(r"\s+", "", capsys.readouterr().out)
    for model, only in COMMANDS[command]:
        specs = [s for s in settings_flags(model) if only is None or s[0].key.split(".")[0] in only]
        assert specs, model
        for spec, kwargs in specs:
            shown = kwargs["help"].replace("%%", "%")
            assert re.sub(r"\s+", "", shown) in text, (command, spec.flag)
            assert "default:" in shown or "(required" in shown, (command, spec.flag)
            assert issubclass(model, BaseSettings) == ("; env AERPLANE_" in shown), (command, spec.flag)
            assert spec.flag in text


def test_the_strategy_flag_is_one_declaration_everywhere() -> None:
    flags = {
        "up": next(k for s, k in settings_flags(UpSettings) if s.key == "strategy"),
        "simulate": next(k for s, k in settings_flags(SimulateOptions) if s.key == "strategy"),
        "learner": next(k for s, k in settings_flags(LearnerSettings, learner_entry.FLAGS) if s.key == "strategy.name"),
    }
    for name, kwargs in flags.items():
        assert kwargs["metavar"] == STRATEGY_FLAG.metavar and STRATEGY_FLAG.note in kwargs["help"], name
        assert "choices" not in kwargs, name  # checked with the parameters, in one line


def test_report_and_simulate_options_keep_their_command_lines(tmp_path, capsys) -> None:
    args = build_parser().parse_args(["report", "a", "b", "--config", "x", "--config", "y"])
    from aerplane.common.flags import given_argv, settings_from_args

    options = settings_from_args(ReportOptions, args, args.option_flags, section="report")
    assert (options.run_dir, options.config) == (["a", "b"], ["x", "y"])
    assert given_argv(args, args.option_flags) == ["a", "b", "--config", "x", "--config", "y"]
    argv = ["simulate", "--fit", "r1", "r2", "--lag-variant", "0.5", "--lag-variant", "1", "--json", "--top", "3"]
    args = build_parser().parse_args(argv)
    options = settings_from_args(SimulateOptions, args, args.option_flags, section="simulate")
    assert (options.fit, options.lag_variant, options.as_json, options.top) == (["r1", "r2"], [0.5, 1.0], True, 3)
    assert main(["simulate", "--every", "0"]) == 2
    assert "--every (simulate.every): Input should be greater than or equal to 1" in capsys.readouterr().err
    assert json.loads(CompareOptions(out=tmp_path).model_dump_json())["out"] == str(tmp_path)
