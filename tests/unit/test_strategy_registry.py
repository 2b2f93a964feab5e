"""The strategy registry is the one list: everything that lists strategies or their parameters derives from it."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from aerplane.core.strategies import (
    REGISTRY,
    STRATEGY_DEFAULTS,
    STRATEGY_NAMES,
    Param,
    ParamBounds,
    Strategy,
    all_params,
    build_strategy,
    format_param,
    register,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_holds_the_four_strategies_of_design():
    assert STRATEGY_NAMES == ("none", "fixed", "skywork", "aer")
    assert all(issubclass(cls, Strategy) and cls.summary for cls in REGISTRY.values())


def test_every_parameter_has_a_doc_and_a_range_or_choices():
    for param in all_params().values():
        assert param.doc
        assert param.choices or param.bounds is not None


def test_settings_choices_are_the_registry():
    from aerplane.launcher.settings import UpSettings
    from aerplane.learner.settings import StrategySettings

    for field in (StrategySettings.model_fields["name"], UpSettings.model_fields["strategy"]):
        assert typing.get_args(field.annotation) == STRATEGY_NAMES


def test_rest_schema_is_the_registry():
    from aerplane.coefficient import schemas

    assert typing.get_args(schemas.StrategyName) == STRATEGY_NAMES
    params = typing.get_type_hints(schemas.StrategyParams, include_extras=True)
    assert set(params) == {name for name, p in all_params().items() if p.numeric}


def test_helm_values_schema_enum_is_the_registry():
    schema = json.loads((ROOT / "helm" / "aerplane" / "values.schema.json").read_text())
    enum = schema["properties"]["learner"]["properties"]["strategy"]["enum"]
    assert tuple(enum) == STRATEGY_NAMES


def test_command_line_help_lists_every_strategy_and_parameter():
    """Every command that takes `--strategy NAME[:KEY=VALUE...]` lists each strategy and each of its parameters with
    its default, range and doc (`core.strategies.parameter_table`)."""
    for command in (["up"], ["simulate"], ["learner", "train"]):
        out = subprocess.run(
            [str(Path(sys.executable).parent / "aerplane"), *command, "--help"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        assert "--strategy NAME[:KEY=VALUE...]" in out
        for name, cls in REGISTRY.items():
            assert f"  {name}: {cls.summary}" in out
            for p in cls.parameters:
                line = next(x for x in out.splitlines() if x.strip().startswith(format_param(p.name, p.default)))
                assert p.doc in line and "(" in line, line


def test_a_shared_parameter_cannot_drift_between_strategies():
    class Clash(Strategy):
        name = "clash"
        parameters = (Param("alpha_max", 1.0, "upper bound", ParamBounds(low=1.0)),)

    with pytest.raises(ValueError, match="other bounds"):
        register(Clash)
    assert "clash" not in REGISTRY


ADD_A_STRATEGY = """
from aerplane.core.strategies import Param, ParamBounds, Strategy, StrategyState, register

@register
class Halving(Strategy):
    name = "halving"
    summary = "test: α halves each step"
    parameters = (Param("start", 0.01, "α_0", ParamBounds(low=0.0)),)

    def initial_state(self):
        return StrategyState(alpha=self._params["start"])

    def _observe(self, state, h):
        return super()._observe(state, h).held_at(state.alpha / 2)

import json, typing
from aerplane.core.strategies import build_strategy
from aerplane.learner.settings import StrategySettings
from aerplane.launcher.settings import UpSettings
from aerplane.coefficient import schemas
from aerplane.coefficient.runs import new_run, apply_report

s = build_strategy("halving", start=0.04)
run = new_run("r", "halving", {"start": 0.04}, {}, 0.0)
run, _ = apply_report(run, 0, 1.0, 5, 1.0)
print(json.dumps({
    "alpha": s.observe(s.initial_state(), entropy=1.0).alpha,
    "service_alpha": run.coefficient(),
    "learner": list(typing.get_args(StrategySettings.model_fields["name"].annotation)),
    "up": list(typing.get_args(UpSettings.model_fields["strategy"].annotation)),
    "rest": list(typing.get_args(schemas.StrategyName)),
    "rest_params": sorted(typing.get_type_hints(schemas.StrategyParams)),
}))
"""


def test_adding_a_strategy_is_one_class_and_its_registration():
    """A class with `@register`, registered before the services import their lists, is in every one of them and runs
    in the coefficient service's transitions: nothing else is edited."""
    out = subprocess.run(
        [sys.executable, "-c", ADD_A_STRATEGY], capture_output=True, text=True, check=True, timeout=120, cwd=ROOT
    ).stdout
    got = json.loads(out)
    assert got["alpha"] == 0.02 and got["service_alpha"] == 0.02
    for key in ("learner", "up", "rest"):
        assert got[key] == [*STRATEGY_NAMES, "halving"]
    assert "start" in got["rest_params"]


def test_build_strategy_names_what_is_unknown():
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        build_strategy("nope")
    with pytest.raises(ValueError, match="unknown parameter for strategy 'fixed'"):
        build_strategy("fixed", eta=1.0)
    assert set(STRATEGY_DEFAULTS["aer"]) >= {"kp", "kd", "smoothing", "eta"}
