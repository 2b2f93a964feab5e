"""Experiment trackers: each step's record, the held-out evaluation, the run's settings and the operators' overrides,
sent to the trackers people already use (`--report-to tensorboard,wandb,mlflow`).

    trackers = open_trackers(settings.tracking, run_id, run_dir, config=settings.snapshot())   # the learner, rank 0
    trackers.log_step(row)                    # a metrics.jsonl line; nested dicts become `group/key`
    trackers.coefficient_state(step, state)   # an override (pin, target, freeze, strategy) becomes an event and a tag
    trackers.close(finished=True)
    log_evaluations(run_dir, evaluations)     # `aerplane up`, once the learner is done: eval.json's evaluations

Each tracker is one class registered under its name (`@register_tracker`); its library is imported only when it
starts, and each is an optional extra (`pip install 'aerplane[trackers]'`). A tracker whose library is missing, or
that fails, logs one warning and is dropped: training goes on. Each writes its identity (W&B run id, MLflow run id,
TensorBoard folder) to `<run dir>/trackers.json`, so a resumed learner and the launcher's evaluation write into the
same tracker run. All three work offline: TensorBoard writes event files, W&B runs with `mode=offline` (or
WANDB_MODE=offline) under `<dir>/wandb/`, and MLflow defaults to a file store in the run directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import NoDecode

from aerplane.common.flags import Flag

log = logging.getLogger("aerplane.trackers")

STATE_FILE = "trackers.json"
INSTALL_HINT = "pip install 'aerplane[trackers]'"


class Tracker:
    """One experiment tracker's side of a run. `state` is what reopens the same tracker run later (trackers.json)."""

    name: ClassVar[str]
    package: ClassVar[str]  # the library's distribution, named in the warning when it is missing

    def __init__(self, settings: TrackingSettings, run_id: str, run_dir: Path, state: dict[str, Any] | None) -> None:
        self.state: dict[str, Any] = dict(state or {})
        # reopened by a resumed learner: the first step it trains again (what it had written from there is stale)
        self.resume_step: int | None = self.state.pop("resume_step", None)

    def config(self, config: dict[str, Any]) -> None:
        """The run's settings, once, when the tracker run is created."""

    def log(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def log_evaluation(self, step: int, values: dict[str, float]) -> None:
        """Held-out figures (keys under `eval/`) of the policy after `step` steps; may come after later steps."""
        self.log(step, values)

    def event(self, step: int, kind: str, text: str) -> None:
        """Something that happened at `step` (an operator's override): shown as an event and a tag."""

    def close(self, *, finished: bool) -> None:
        """Flush and end this process's writing (the tracker run may be reopened, e.g. for the evaluation)."""


TRACKERS: dict[str, type[Tracker]] = {}


def register_tracker(name: str, package: str) -> Callable[[type[Tracker]], type[Tracker]]:
    def add(cls: type[Tracker]) -> type[Tracker]:
        cls.name, cls.package = name, package
        TRACKERS[name] = cls
        return cls

    return add


@register_tracker("tensorboard", "tensorboard")
class TensorBoardTracker(Tracker):
    """Event files under `tensorboard_dir` (default `<run dir>/tensorboard`): scalars by key, the settings and each
    event as text. A resumed learner purges what the steps it trains again had written."""

    def __init__(self, settings: TrackingSettings, run_id: str, run_dir: Path, state: dict[str, Any] | None) -> None:
        super().__init__(settings, run_id, run_dir, state)
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package

        logdir = self.state.get("logdir") or str(settings.tensorboard_dir or run_dir / "tensorboard")
        self.state["logdir"] = logdir
        self.writer = SummaryWriter(logdir, purge_step=self.resume_step)

    def config(self, config: dict[str, Any]) -> None:
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def event(self, step: int, kind: str, text: str) -> None:
        self.writer.add_scalar(f"events/{kind}", 1.0, step)
        self.writer.add_text(f"events/{kind}", text, step)
        self.writer.flush()

    def close(self, *, finished: bool) -> None:
        self.writer.close()


@register_tracker("wandb", "wandb")
class WandbTracker(Tracker):
    """A Weights & Biases run (`wandb_project`, `wandb_entity`; `wandb_mode` or WANDB_MODE: `offline` writes the run
    under `<wandb_dir>/wandb/` for `wandb sync` later). The evaluation is plotted against its own `eval/step`, so it
    may arrive after later training steps; an override adds the tag `overridden` and an `events/override` point."""

    def __init__(self, settings: TrackingSettings, run_id: str, run_dir: Path, state: dict[str, Any] | None) -> None:
        super().__init__(settings, run_id, run_dir, state)
        import wandb

        s = self.state
        s.setdefault("id", re.sub(r"[^A-Za-z0-9_-]", "-", run_id)[:40] + "-" + uuid.uuid4().hex[:8])  # unique per run
        s.setdefault("dir", str(settings.wandb_dir or run_dir))
        s.setdefault("project", settings.wandb_project)
        s.setdefault("entity", settings.wandb_entity)
        mode = settings.wandb_mode or os.environ.get("WANDB_MODE") or None
        Path(s["dir"]).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=s["project"],
            entity=s["entity"],
            dir=s["dir"],
            mode=mode,
            id=s["id"],
            name=run_id,
            resume="allow",
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run.define_metric("eval/step")
        self.run.define_metric("eval/*", step_metric="eval/step")

    def config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_evaluation(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "eval/step": step})

    def event(self, step: int, kind: str, text: str) -> None:
        self.run.tags = tuple(dict.fromkeys([*(self.run.tags or ()), "overridden" if kind == "override" else kind]))
        self.run.summary[f"last_{kind}"] = f"step {step}: {text}"
        self.run.log({f"events/{kind}": 1.0}, step=step)

    def close(self, *, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)


@register_tracker("mlflow", "mlflow-skinny")
class MlflowTracker(Tracker):
    """An MLflow run in `mlflow_experiment` at `mlflow_tracking_uri` (else MLFLOW_TRACKING_URI, else a file store
    `<run dir>/mlruns`): the settings as params (flattened keys), metrics by step, an override as the tags
    `aerplane.overridden` and `aerplane.last_override` and an `events/override` point."""

    def __init__(self, settings: TrackingSettings, run_id: str, run_dir: Path, state: dict[str, Any] | None) -> None:
        super().__init__(settings, run_id, run_dir, state)
        from mlflow.tracking import MlflowClient

        s = self.state
        default_uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        s.setdefault("tracking_uri", settings.mlflow_tracking_uri or default_uri)
        if s["tracking_uri"].startswith("file:") or "://" not in s["tracking_uri"]:
            # MLflow 3 keeps the file store in "maintenance mode" and refuses it unless asked: it is the offline store
            # that needs no database or server, and the one the run directory holds.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=s["tracking_uri"])
        if "run_id" not in s:
            experiment = self.client.get_experiment_by_name(settings.mlflow_experiment)
            exp_id = (
                experiment.experiment_id if experiment else self.client.create_experiment(settings.mlflow_experiment)
            )
            run = self.client.create_run(exp_id, run_name=run_id, tags={"aerplane.run_id": run_id})
            s["run_id"] = run.info.run_id

    def config(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in flatten_all(config).items()]
        for i in range(0, len(params), 100):  # MLflow's batch limit for params
            self.client.log_batch(self.state["run_id"], params=params[i : i + 100])

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.state["run_id"], metrics=metrics[i : i + 1000])

    def event(self, step: int, kind: str, text: str) -> None:
        run_id = self.state["run_id"]
        self.client.set_tag(run_id, f"aerplane.{'overridden' if kind == 'override' else kind}", "true")
        self.client.set_tag(run_id, f"aerplane.last_{kind}", f"step {step}: {text}")
        self.client.log_metric(run_id, f"events/{kind}", 1.0, step=step)

    def close(self, *, finished: bool) -> None:
        self.client.set_terminated(self.state["run_id"], status="FINISHED" if finished else "KILLED")


TRACKER_NAMES: tuple[str, ...] = tuple(TRACKERS)


def _split_names(value: Any) -> Any:
    """`tensorboard,wandb` (a flag, an environment variable) or a list of such strings: one name per item."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        return [n.strip() for item in value for n in str(item).split(",") if n.strip() and n.strip() != "none"]
    return value


def _known_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"unknown tracker {', '.join(unknown)}: choose from {', '.join(TRACKER_NAMES)}")
    return list(dict.fromkeys(names))


TrackerNames = Annotated[list[str], NoDecode, BeforeValidator(_split_names), AfterValidator(_known_names)]
"""Tracker names from the registry, given as a list or comma-separated (`tensorboard,wandb`)."""


REPORT_TO_FLAG = Flag("--report-to", metavar="NAME[,NAME...]", note=f"Names: {', '.join(TRACKER_NAMES)}; repeatable.")
"""`--report-to` of the learner and `aerplane up`: the names listed in `--help` are the registry's."""


class TrackingSettings(BaseModel):
    """Where the run's records go besides metrics.jsonl and /metrics (the learner's `tracking` group)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    report_to: Annotated[TrackerNames, REPORT_TO_FLAG] = Field(default_factory=list)
    """Experiment trackers that get each step's record, the held-out evaluation, the settings and overrides
    (comma-separated). Each is an optional extra; a missing or failing one logs a warning and training goes on."""
    tensorboard_dir: Annotated[Path | None, Flag("--tensorboard-dir")] = None
    """TensorBoard event folder; default `<run dir>/tensorboard`."""
    wandb_project: Annotated[str, Flag("--wandb-project")] = "aerplane"
    """Weights & Biases project."""
    wandb_entity: Annotated[str | None, Flag("--wandb-entity")] = None
    """Weights & Biases entity (team or user); default the API key's."""
    wandb_mode: Annotated[Literal["online", "offline", "disabled"] | None, Flag("--wandb-mode")] = None
    """`offline` writes the run locally for `wandb sync` (no network); default WANDB_MODE, else online."""
    wandb_dir: Annotated[Path | None, Flag("--wandb-dir")] = None
    """Folder W&B writes `wandb/` under; default the run directory."""
    mlflow_tracking_uri: Annotated[str | None, Flag("--mlflow-tracking-uri")] = None
    """MLflow tracking server or store (`http://…`, `file:/…`); default MLFLOW_TRACKING_URI, else a file store
    `<run dir>/mlruns`."""
    mlflow_experiment: Annotated[str, Flag("--mlflow-experiment")] = "aerplane"
    """MLflow experiment the run goes in (created when missing)."""


# --- flattening records ----------------------------------------------------------------------------------------------


def flatten_all(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as `a/b` keys; leaves kept as they are (the settings, for trackers' config params)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten_all(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def numeric(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a record (booleans as 0/1) under `a/b` keys; text, lists and None are left out."""
    return {
        key: float(value)
        for key, value in flatten_all(tree, prefix).items()
        if isinstance(value, int | float) and math.isfinite(value)
    }


OVERRIDE_FIELDS = ("alpha_pinned", "pinned_alpha", "frozen", "target_overridden", "strategy", "params", "options")


def override_change(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What an operator changed between two coefficient states (`RunState` fields): pin, pinned α, freeze, target,
    strategy or parameters, as `field: (before, after)`. A first state reports the overrides already in force."""

    def view(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "pinned_alpha": state.get("alpha") if state.get("alpha_pinned") else None}

    now = view(after)
    if before is None:
        return {k: (None, now[k]) for k in ("alpha_pinned", "frozen", "target_overridden") if now.get(k)}
    was = view(before)
    return {k: (was.get(k), now.get(k)) for k in OVERRIDE_FIELDS if was.get(k) != now.get(k)}


# --- the fan-out -----------------------------------------------------------------------------------------------------


class Trackers:
    """The trackers a run reports to. Every call goes to each; one that raises is dropped with one warning."""

    def __init__(self, active: list[Tracker]) -> None:
        self.active = active
        self._last_state: dict[str, Any] | None = None

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.active]

    def log_step(self, row: dict[str, Any]) -> None:
        """One metrics.jsonl line at its `step`."""
        values = numeric({k: v for k, v in row.items() if k != "step"})
        self._each("log", int(row["step"]), values)

    def coefficient_state(self, step: int, state: dict[str, Any]) -> None:
        """The coefficient state the step's report returned: an override since the last one becomes an event."""
        change = override_change(self._last_state, state)
        self._last_state = state
        if change:
            text = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in change.items())
            self._each("event", step, "override", text)

    def log_evaluation(self, evaluation: dict[str, Any]) -> None:
        """One evaluation of eval.json (`launcher.up.evaluate`): its figures under `eval/<split>/`."""
        figures = {k: v for k, v in evaluation.items() if k not in ("rewards", "step", "seed", "policy_versions")}
        values = numeric(figures, f"eval/{evaluation.get('name', 'heldout')}/")
        self._each("log_evaluation", int(evaluation["step"]), values)

    def close(self, *, finished: bool) -> None:
        self._each("close", finished=finished)
        self.active = []

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for tracker in list(self.active):
            self.call(tracker, method, *args, **kwargs)

    def call(self, tracker: Tracker, method: str, *args: Any, **kwargs: Any) -> None:
        """`tracker.<method>(...)`; a failure drops the tracker with one warning."""
        try:
            getattr(tracker, method)(*args, **kwargs)
        except Exception as exc:
            log.warning("tracker %s failed (%s: %s); the run goes on without it", tracker.name, type(exc).__name__, exc)
            if tracker in self.active:
                self.active.remove(tracker)


def _start(name: str, settings: TrackingSettings, run_id: str, run_dir: Path, state: Any) -> Tracker | None:
    cls = TRACKERS[name]
    try:
        return cls(settings, run_id, run_dir, state)
    except ImportError as exc:
        log.warning(
            "--report-to %s: %s is not installed (%s: %s); not reporting to it", name, cls.package, INSTALL_HINT, exc
        )
    except Exception as exc:
        log.warning(
            "--report-to %s: could not start (%s: %s); the run goes on without it", name, type(exc).__name__, exc
        )
    return None


def open_trackers(
    settings: TrackingSettings, run_id: str, run_dir: Path, *, config: dict[str, Any], start_step: int = 0
) -> Trackers:
    """Start every tracker `settings.report_to` names, reopening the tracker runs of `<run dir>/trackers.json`
    (a resumed learner: what steps from `start_step` on had written is replaced where the tracker can), and record
    them there. A new tracker run gets `config`, the run's settings."""
    saved = read_state(run_dir)
    states = saved.get("trackers", {}) if saved.get("run_id") == run_id else {}
    active = []
    for name in settings.report_to:
        state = states.get(name)
        if state is not None:
            state = {**state, "resume_step": start_step}
        tracker = _start(name, settings, run_id, run_dir, state)
        if tracker is not None:
            active.append(tracker)
    trackers = Trackers(active)
    for tracker in active:
        if tracker.name not in states:
            trackers.call(tracker, "config", config)
    write_state(run_dir, run_id, settings, {t.name: t.state for t in trackers.active})
    if trackers.active:
        log.info("reporting to %s", ", ".join(trackers.names))
    return trackers


def read_state(run_dir: Path) -> dict[str, Any]:
    """`<run dir>/trackers.json`: the run id, the tracking settings and each tracker's state; {} when absent."""
    path = run_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(run_dir: Path, run_id: str, settings: TrackingSettings, states: dict[str, Any]) -> None:
    if not settings.report_to:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"run_id": run_id, "settings": settings.model_dump(mode="json"), "trackers": states}
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(run_dir / STATE_FILE)


def log_evaluations(run_dir: Path, evaluations: list[dict[str, Any]]) -> list[str]:
    """Send held-out evaluations (eval.json's `history`) to the tracker runs the learner recorded in trackers.json;
    returns the trackers that took them (none when the run reports to none)."""
    saved = read_state(run_dir)
    if not saved.get("trackers") or not evaluations:
        return []
    settings = TrackingSettings.model_validate(saved.get("settings") or {})
    trackers = Trackers(
        [
            t
            for name in settings.report_to
            if name in saved["trackers"]
            and (t := _start(name, settings, saved["run_id"], run_dir, saved["trackers"][name])) is not None
        ]
    )
    for evaluation in evaluations:
        trackers.log_evaluation(evaluation)
    names = trackers.names
    trackers.close(finished=True)
    return names
