"""The experiment trackers with their real libraries, offline, read back by each library's own reader
(tests/tracker_support.py): TensorBoard's EventAccumulator, W&B's offline run file (its DataStore records), MLflow's
MlflowClient on a file store. test_learner_run.py checks the same readers against a real learner's metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tracker_support import tensorboard_scalars, tensorboard_texts, tracker_reads, wandb_history, wandb_records

from aerplane.common.trackers import TrackingSettings, log_evaluations, open_trackers, read_state

pytestmark = pytest.mark.timeout(300)

ALL = "tensorboard,wandb,mlflow"


ROWS = [
    {
        "step": s,
        "mean_entropy": 2.0 - 0.25 * s,
        "alpha": 0.01 * s,
        "accuracy_by_difficulty": {"easy": 0.5 + 0.1 * s},
        "measure_only": s == 0,
        "next_alpha": None,
    }
    for s in range(4)
]
EVALUATION = {
    "name": "rg-heldout",
    "step": 4,
    "avg_at_k": 0.375,
    "pass_at_k": 0.5,
    "by_k": {"1": {"avg": 0.25}},
    "rewards": {"p0": [1.0, 0.0]},
}


def test_every_tracker_gets_the_steps_settings_override_and_evaluation(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = TrackingSettings(report_to=ALL, wandb_mode="offline", mlflow_experiment="tests")
    config = {"optim": {"lr": 0.001}, "strategy": {"name": "aer"}, "run": {"steps": 4}}
    trackers = open_trackers(settings, "run-1", run_dir, config=config)
    assert trackers.names == ["tensorboard", "wandb", "mlflow"]
    state = {"alpha": 0.01, "alpha_pinned": False, "frozen": False, "target_overridden": False}
    for row in ROWS:
        pinned = row["step"] >= 2
        trackers.coefficient_state(row["step"], {**state, "alpha_pinned": pinned, "alpha": 0.005 if pinned else 0.01})
        trackers.log_step(row)
    trackers.close(finished=True)
    assert log_evaluations(run_dir, [EVALUATION]) == ["tensorboard", "wandb", "mlflow"]

    entropy = {r["step"]: r["mean_entropy"] for r in ROWS}
    reads = tracker_reads(run_dir, "mean_entropy")
    assert reads["tensorboard"] == pytest.approx(entropy) and reads["mlflow"] == pytest.approx(entropy)
    assert reads["wandb"] == pytest.approx(entropy)
    assert tracker_reads(run_dir, "accuracy_by_difficulty/easy")["mlflow"] == pytest.approx(
        {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8}
    )

    saved = read_state(run_dir)["trackers"]
    # TensorBoard: the override at step 2 as a scalar and a text event, the settings as text, the evaluation.
    logdir = saved["tensorboard"]["logdir"]
    assert tensorboard_scalars(logdir, "events/override") == {2: 1.0}
    assert "alpha_pinned: False → True" in tensorboard_texts(logdir, "events/override/text_summary")[2]
    assert '"lr": 0.001' in tensorboard_texts(logdir, "config/text_summary")[0]
    assert tensorboard_scalars(logdir, "eval/rg-heldout/avg_at_k") == {4: 0.375}

    # MLflow: params from the settings, the override as tags, the evaluation's metrics at its step.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=saved["mlflow"]["tracking_uri"])
    run = client.get_run(saved["mlflow"]["run_id"])
    assert run.data.params["optim/lr"] == "0.001" and run.data.params["strategy/name"] == "aer"
    assert run.data.tags["aerplane.overridden"] == "true" and "step 2" in run.data.tags["aerplane.last_override"]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/rg-heldout/by_k/1/avg")] == [
        (4, 0.25)
    ]
    assert run.info.run_name == "run-1" and run.info.status == "FINISHED"

    # W&B: the config record, the tag, the evaluation against its own eval/step.
    records = wandb_records(Path(saved["wandb"]["dir"]), saved["wandb"]["id"])
    history = wandb_history(records)
    assert any(r.get("eval/rg-heldout/avg_at_k") == 0.375 and r.get("eval/step") == 4 for r in history)
    assert any(r.get("events/override") == 1.0 and r["_step"] == 2 for r in history)
    configs = [
        json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "config" for i in r.config.update
    ]
    assert {"lr": 0.001} in configs
    assert any("overridden" in r.run.tags for r in records if r.WhichOneof("record_type") == "run")


def test_a_resumed_learner_writes_into_the_same_tracker_runs(tmp_path: Path) -> None:
    """trackers.json reopens the W&B and MLflow runs; TensorBoard purges the steps trained again."""
    run_dir = tmp_path / "run"
    settings = TrackingSettings(report_to="tensorboard,mlflow")
    first = open_trackers(settings, "run-2", run_dir, config={})
    for row in ROWS[:3]:
        first.log_step(row)
    first.close(finished=False)
    before = read_state(run_dir)["trackers"]

    again = open_trackers(settings, "run-2", run_dir, config={}, start_step=2)  # the checkpoint was at step 2
    for row in ROWS[2:]:
        again.log_step({**row, "mean_entropy": row["mean_entropy"] + 1})
    again.close(finished=True)
    assert read_state(run_dir)["trackers"] == before
    reads = {k: v for k, v in tracker_reads_no_wandb(run_dir).items()}
    expected = {0: 2.0, 1: 1.75, 2: 2.5, 3: 2.25}
    assert reads["tensorboard"] == pytest.approx(expected)
    assert reads["mlflow"][0] == 2.0 and reads["mlflow"][3] == 2.25  # MLflow keeps both values of step 2


def tracker_reads_no_wandb(run_dir: Path) -> dict[str, dict[int, float]]:
    from mlflow.tracking import MlflowClient

    state = read_state(run_dir)["trackers"]
    client = MlflowClient(tracking_uri=state["mlflow"]["tracking_uri"])
    history = client.get_metric_history(state["mlflow"]["run_id"], "mean_entropy")
    return {
        "tensorboard": tensorboard_scalars(state["tensorboard"]["logdir"], "mean_entropy"),
        "mlflow": {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)},
    }
