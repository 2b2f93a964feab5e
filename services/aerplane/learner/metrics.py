"""The learner's step record: Prometheus gauges on rank 0's /metrics, and one JSON line per step in metrics.jsonl.

`metrics.jsonl` (in the run directory) is what `aerplane up`'s live view and report read; a resumed run first drops
the lines of steps it is about to train again, so every step appears once. The scored stream's lag, pending count,
dead letters and Redis reconnects (`aerplane_learner_stream_*`) come from the collector every consumer shares
(`common.stream_metrics`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PHASES = ("wait_rollouts", "coefficients", "forward_backward", "report", "checkpoint", "publish_weights")

# metrics.jsonl field -> gauge name (aerplane_learner_<name>) and help.
GAUGES: dict[str, tuple[str, str]] = {
    "alpha": ("alpha", "entropy coefficient α_t used in the last step"),
    "mean_entropy": ("entropy", "token-mean policy entropy of the last step (nats; all ranks)"),
    "target_entropy": ("target_entropy", "target entropy H* (nats; NaN before anchoring)"),
    "initial_entropy": ("initial_entropy", "anchored initial entropy H_0 (nats; NaN before anchoring)"),
    "mean_prompt_weight": ("mean_prompt_weight", "mean λ_q over the last step's prompts"),
    "accuracy": ("accuracy", "mean reward of the last step's samples"),
    "response_length": ("response_length_tokens", "mean response length of the last step"),
    "pg_loss": ("pg_loss", "policy-gradient loss term of the last step"),
    "entropy_loss": ("entropy_loss", "entropy term α·token_mean(λ·H) of the last step"),
    "kl": ("kl", "k3 KL to the reference policy (0 without one)"),
    "sampler_kl": ("sampler_kl", "k3 estimate of KL(generation engine ‖ learner) on the sampled tokens"),
    "clip_fraction": ("clip_fraction", "fraction of response tokens whose ratio was clipped"),
    "grad_norm": ("grad_norm", "global gradient norm before clipping"),
    "tokens_per_s": ("tokens_per_second", "tokens (prompt + response) trained per second of the step"),
    "policy_version_lag": ("policy_version_lag", "mean (current version − sample version) of the last step"),
    "policy_version": ("policy_version", "policy version after the last step"),
    "lr": ("learning_rate", "learning rate of the last optimizer update"),
}


class LearnerMetrics:
    """Rank 0's Prometheus series (names `aerplane_learner_*`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "aerplane_learner"
        self.step = Gauge(f"{ns}_step", "training steps completed", registry=registry)
        self.step_seconds = Histogram(
            f"{ns}_step_seconds",
            "wall time of a training step",
            registry=registry,
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
        )
        self.phase_seconds = Histogram(
            f"{ns}_phase_seconds",
            "wall time of each phase of a step",
            ["phase"],
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
        )
        self.last_phase = Gauge(
            f"{ns}_last_phase_seconds", "wall time of each phase of the last step", ["phase"], registry=registry
        )
        self.gauges = {key: Gauge(f"{ns}_{name}", doc, registry=registry) for key, (name, doc) in GAUGES.items()}
        self.entropy_by = Gauge(
            f"{ns}_entropy_by_difficulty", "token-mean entropy per difficulty bucket", ["difficulty"], registry=registry
        )
        self.accuracy_by = Gauge(
            f"{ns}_accuracy_by_difficulty", "mean reward per difficulty bucket", ["difficulty"], registry=registry
        )
        self.samples = Counter(f"{ns}_samples_total", "scored samples read, by outcome", ["outcome"], registry=registry)
        self.tokens = Counter(f"{ns}_tokens_total", "tokens trained on", registry=registry)
        self.checkpoints = Counter(f"{ns}_checkpoints_total", "checkpoints written", registry=registry)
        self.weights = Counter(f"{ns}_weights_published_total", "weight versions published", registry=registry)
        self.rerequests = Counter(f"{ns}_rerequests_total", "groups requested again (stale samples)", registry=registry)

    def record(self, row: dict[str, Any]) -> None:
        self.step.set(row["step"] + 1)
        self.step_seconds.observe(row["step_seconds"])
        for phase, seconds in row.get("phases", {}).items():
            self.phase_seconds.labels(phase).observe(seconds)
            self.last_phase.labels(phase).set(seconds)
        for key, gauge in self.gauges.items():
            value = row.get(key)
            gauge.set(float("nan") if value is None else float(value))
        for bucket, value in row.get("entropy_by_difficulty", {}).items():
            self.entropy_by.labels(bucket).set(value)
        for bucket, value in row.get("accuracy_by_difficulty", {}).items():
            self.accuracy_by.labels(bucket).set(value)
        for outcome, n in row.get("samples", {}).items():
            if n:
                self.samples.labels(outcome).inc(n)
        self.tokens.inc(row.get("tokens", 0))
        self.rerequests.inc(row.get("samples", {}).get("rerequested", 0))


class MetricsLog:
    """Append-only metrics.jsonl (one flushed line per step)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_from(self, step: int) -> None:
        """Drop lines of steps >= `step` (a resumed run trains them again)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", -1) < step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        tmp.replace(self.path)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(_json_safe(row), sort_keys=False) + "\n")
            f.flush()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
