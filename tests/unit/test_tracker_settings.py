"""`--report-to`: the names come from the tracker registry everywhere (settings, `aerplane up`, the Helm schema), the
records are flattened the same way for every tracker, and an override is told apart from a step's own change."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from aerplane.common.trackers import (
    TRACKER_NAMES,
    TRACKERS,
    TrackingSettings,
    numeric,
    open_trackers,
    override_change,
)

ROOT = Path(__file__).resolve().parents[2]


def test_names_are_the_registry_everywhere() -> None:
    assert TRACKER_NAMES == ("tensorboard", "wandb", "mlflow") == tuple(TRACKERS)
    schema = json.loads((ROOT / "helm" / "aerplane" / "values.schema.json").read_text())
    assert tuple(schema["properties"]["learner"]["properties"]["reportTo"]["items"]["enum"]) == TRACKER_NAMES


def test_report_to_takes_commas_repeats_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from aerplane.common.settings import load_settings
    from aerplane.learner.settings import LearnerSettings

    assert TrackingSettings(report_to="tensorboard, wandb").report_to == ["tensorboard", "wandb"]
    assert TrackingSettings(report_to=["mlflow,tensorboard", "mlflow"]).report_to == ["mlflow", "tensorboard"]
    assert TrackingSettings(report_to="").report_to == [] == TrackingSettings(report_to="none").report_to
    with pytest.raises(ValidationError, match="unknown tracker comet: choose from tensorboard, wandb, mlflow"):
        TrackingSettings(report_to="tensorboard,comet")

    monkeypatch.setenv("AERPLANE_LEARNER_TRACKING__REPORT_TO", "tensorboard,mlflow")
    monkeypatch.setenv("AERPLANE_LEARNER_TRACKING__WANDB_MODE", "offline")
    settings = load_settings(LearnerSettings)
    assert settings.tracking.report_to == ["tensorboard", "mlflow"] and settings.tracking.wandb_mode == "offline"

    from aerplane.launcher.settings import UpSettings

    monkeypatch.setenv("AERPLANE_UP_REPORT_TO", "wandb,tensorboard")
    assert load_settings(UpSettings).report_to == ["wandb", "tensorboard"]


def test_learner_flags_and_up_feed_the_same_setting() -> None:
    import argparse

    from aerplane.common.flags import add_settings_flags, settings_from_args
    from aerplane.launcher.settings import UpSettings, learner_values
    from aerplane.launcher.up import service_args
    from aerplane.learner.settings import LearnerSettings

    parser = argparse.ArgumentParser()
    specs = add_settings_flags(parser, LearnerSettings)
    args = parser.parse_args(["--report-to", "tensorboard,wandb", "--report-to", "mlflow", "--wandb-mode", "offline"])
    learner = settings_from_args(LearnerSettings, args, specs, section="learner")
    assert learner.tracking.report_to == ["tensorboard", "wandb", "mlflow"]

    up = UpSettings(report_to="wandb,mlflow", wandb_mode="offline", mlflow_experiment="exp")
    values = learner_values(up)
    assert values["tracking"]["report_to"] == ["wandb", "mlflow"] and values["tracking"]["wandb_mode"] == "offline"
    argv = service_args("learner", values)
    assert argv[argv.index("--report-to") + 1] == "wandb" and "--mlflow-experiment" in argv
    with pytest.raises(ValidationError, match="unknown tracker"):
        UpSettings(report_to="tensorbored")


def test_records_are_flattened_to_finite_numbers() -> None:
    row = {
        "alpha": 0.01,
        "next_alpha": None,
        "measure_only": True,
        "accuracy_by_difficulty": {"easy": 0.5, "hard": 0.0},
        "phases": {"wait_rollouts": 1.5},
        "entropy_by_difficulty": {},
        "loss": float("nan"),
        "name": "text",
    }
    assert numeric(row) == {
        "alpha": 0.01,
        "measure_only": 1.0,
        "accuracy_by_difficulty/easy": 0.5,
        "accuracy_by_difficulty/hard": 0.0,
        "phases/wait_rollouts": 1.5,
    }


def test_an_override_is_a_change_an_operator_made() -> None:
    base = {"alpha": 0.01, "alpha_pinned": False, "frozen": False, "target_overridden": False, "strategy": "aer"}
    stepped = {**base, "alpha": 0.02, "version": 7}  # the controller moved α: not an override
    assert override_change(None, base) == {} and override_change(base, stepped) == {}
    pinned = {**stepped, "alpha": 0.005, "alpha_pinned": True}
    assert override_change(stepped, pinned) == {"alpha_pinned": (False, True), "pinned_alpha": (None, 0.005)}
    assert override_change(pinned, {**pinned, "alpha": 0.002}) == {"pinned_alpha": (0.005, 0.002)}
    assert override_change(None, {**base, "frozen": True}) == {"frozen": (None, True)}
    assert override_change(base, {**base, "strategy": "fixed"}) == {"strategy": ("aer", "fixed")}


def test_a_missing_library_is_one_warning_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`import wandb` fails as it does where the extra is not installed; the other tracker still gets the steps."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # how Python marks a module that cannot be imported
    broken = tmp_path / "not-a-folder"
    broken.write_text("")  # TensorBoard cannot make its folder here: a tracker that fails to start
    settings = TrackingSettings(report_to="wandb,tensorboard,mlflow", tensorboard_dir=broken)
    with caplog.at_level(logging.WARNING, logger="aerplane.trackers"):
        trackers = open_trackers(settings, "r1", tmp_path / "run", config={"lr": 1e-3})
        for step in range(3):
            trackers.log_step({"step": step, "mean_entropy": 1.0 - step / 10})
        assert trackers.names == ["mlflow"]
        trackers.close(finished=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "--report-to wandb: wandb is not installed (pip install 'aerplane[trackers]'" in warnings[0]
    assert "--report-to tensorboard: could not start" in warnings[1]
    assert (tmp_path / "run" / "mlruns").is_dir()  # mlflow took the steps
    saved = json.loads((tmp_path / "run" / "trackers.json").read_text())
    assert list(saved["trackers"]) == ["mlflow"] and saved["run_id"] == "r1"
