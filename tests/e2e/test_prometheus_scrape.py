"""A real Prometheus server (Debian's `prometheus`) scrapes a locally running aerplane stack with the shipped
scrape configuration and alert rules, and its query API returns the entropy and α series of the run.

The stack is the four services as processes (tests/deploy_support.py: real Redis, tiny model, a few training
steps). The scrape configuration is deploy/prometheus/prometheus.yml with only the targets moved to the loopback
ports and a 1 s interval; the rules file is deploy/prometheus/rules.yml itself.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import PROMETHEUS_CONFIG, RULES, LocalStack, launch_stack, plan_stack, tool

from aerplane.common.process import ManagedProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Enough steps that the learner lives through several 1 s scrapes: the tiny model trains a step in ~0.2 s, so a
# 4-step run could start and finish between two scrapes and Prometheus would never see a step past 0.
STEPS = 40


def prometheus_config(stack: LocalStack, prometheus_port: int) -> dict[str, Any]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(RULES)]
    local = {c: f"127.0.0.1:{port}" for c, port in stack.http.items()}
    local["prometheus"] = f"127.0.0.1:{prometheus_port}"
    jobs = []
    for job in config["scrape_configs"]:
        component = job["static_configs"][0]["labels"]["component"]
        if component not in local:
            continue  # vLLM's own server: this stack runs the transformers backend
        for static in job["static_configs"]:
            static["targets"] = [local[component]]
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


class PrometheusAPI:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}" if params else f"{self.base}{path}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]


def wait_for(predicate, what: str, timeout: float, stack: LocalStack | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{p.log_tail()}" for n, p in (stack.procs.items() if stack else []))
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack_and_prometheus(
    redis_server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalStack, PrometheusAPI]]:
    """Prometheus starts first (targets down), then the services: it sees the whole short run of the learner."""
    stack = plan_stack(redis_server.url, tmp_path_factory.mktemp("prom-stack"), run_id=f"prom-{uuid.uuid4().hex[:8]}")
    tmp = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(stack, port)))
    proc = ManagedProcess(
        "prometheus",
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log_path=tmp / "prometheus.log",
        ready_url=f"http://127.0.0.1:{port}/-/ready",
    ).start()
    try:
        proc.wait_ready(timeout=60)
        launch_stack(stack, learner_steps=STEPS)
        yield stack, PrometheusAPI(port)
    finally:
        stack.stop()
        proc.stop()


@pytest.fixture(scope="module")
def stack(stack_and_prometheus: tuple[LocalStack, PrometheusAPI]) -> LocalStack:
    return stack_and_prometheus[0]


@pytest.fixture(scope="module")
def prometheus(stack_and_prometheus: tuple[LocalStack, PrometheusAPI]) -> PrometheusAPI:
    return stack_and_prometheus[1]


def _metrics_rows(stack: LocalStack) -> list[dict[str, Any]]:
    path = Path(stack.run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_prometheus_scrapes_every_service_of_the_stack(stack: LocalStack, prometheus: PrometheusAPI) -> None:
    targets = prometheus.get("/api/v1/targets")["activeTargets"]
    assert {t["labels"]["component"] for t in targets} == {
        "coefficient",
        "reward",
        "generation",
        "learner",
        "prometheus",
    }
    assert {t["labels"]["job"] for t in targets} >= {"aerplane-coefficient", "aerplane-learner"}
    # Every service was scraped successfully (the learner exits when its few steps are done, so: at some point).
    wait_for(lambda: len(prometheus.query("max_over_time(up[10m]) == 1")) == 5, "every target up once", 120, stack)
    for component in ("coefficient", "reward", "generation"):
        assert prometheus.query(f'up{{component="{component}"}} == 1'), component


def test_query_api_returns_the_entropy_and_alpha_series(stack: LocalStack, prometheus: PrometheusAPI) -> None:
    wait_for(lambda: prometheus.query("max_over_time(aerplane_learner_step[10m]) >= 1"), "a training step", 600, stack)

    entropy = prometheus.query("last_over_time(aerplane_learner_entropy[10m])")
    alpha = prometheus.query("last_over_time(aerplane_learner_alpha[10m])")
    assert len(entropy) == len(alpha) == 1
    for series in (entropy[0], alpha[0]):
        assert series["metric"]["component"] == "learner"
        assert series["metric"]["job"] == "aerplane-learner"
    h = float(entropy[0]["value"][1])
    a = float(alpha[0]["value"][1])
    assert math.isfinite(h) and h > 0, "a random-init model has a high token entropy"
    assert math.isfinite(a) and a >= 0

    # The values Prometheus holds are the learner's own step records (metrics.jsonl in the run folder).
    rows = wait_for(lambda: _metrics_rows(stack), "metrics.jsonl", 60, stack)
    assert any(math.isclose(h, r["mean_entropy"], rel_tol=1e-9) for r in rows), (h, rows)
    assert any(math.isclose(a, r["alpha"], rel_tol=1e-9, abs_tol=1e-15) for r in rows), (a, rows)

    # The coefficient service's view of the same run (label run_id) is scraped too.
    coef = wait_for(
        lambda: prometheus.query(f'aerplane_coefficient_alpha{{run_id="{stack.run_id}"}}'),
        "aerplane_coefficient_alpha of the run",
        60,
        stack,
    )
    assert coef[0]["metric"]["component"] == "coefficient"
    assert math.isfinite(float(coef[0]["value"][1]))


def test_coefficient_series_match_the_rest_api_once_the_run_is_done(
    stack: LocalStack, prometheus: PrometheusAPI
) -> None:
    learner = stack.procs["learner"]
    wait_for(lambda: learner.poll() is not None, "the learner to finish its steps", 600, stack)
    assert learner.poll() == 0, learner.log_tail()
    with urllib.request.urlopen(stack.url("coefficient", f"/v1/runs/{stack.run_id}"), timeout=10) as resp:
        state = json.loads(resp.read())

    def scraped_state() -> dict[str, float] | None:
        alpha = prometheus.query(f'aerplane_coefficient_alpha{{run_id="{stack.run_id}"}}')
        entropy = prometheus.query(f'aerplane_coefficient_last_entropy{{run_id="{stack.run_id}"}}')
        if not alpha or not entropy:
            return None
        got = {"alpha": float(alpha[0]["value"][1]), "last_entropy": float(entropy[0]["value"][1])}
        return got if math.isclose(got["last_entropy"], state["last_entropy"], rel_tol=1e-9) else None

    got = wait_for(scraped_state, "a scrape after the last step", 60, stack)
    assert math.isclose(got["alpha"], state["alpha"], rel_tol=1e-9, abs_tol=1e-15)
    # The learner reported its last step's entropy to the coefficient service (the learner's own /metrics may have
    # gone before Prometheus saw that step: it exits right after it).
    rows = _metrics_rows(stack)
    assert len(rows) == STEPS
    assert math.isclose(rows[-1]["mean_entropy"], got["last_entropy"], rel_tol=1e-6)


def test_the_shipped_alert_rules_load_and_evaluate_cleanly(prometheus: PrometheusAPI) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    rules = wait_for(evaluated, "every rule evaluated", 60)
    assert len(rules) == len([r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]])
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad, f"rules failing on real data: {bad}"
    firing = {r["name"] for r in rules if r.get("state") == "firing"}
    assert "AerplaneCoefficientServiceDown" not in firing
