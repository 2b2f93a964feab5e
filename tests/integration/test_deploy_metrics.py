"""The dashboard and the alert rules against a running stack: every aerplane_* series they query is one the
services actually export on /metrics, and every service answers the probe paths the deployments use.

The stack is the four services started by their real `aerplane` subcommands on loopback ports, with a real Redis
and the tiny model (tests/deploy_support.py). Prometheus text declares every metric family, even one that has no
sample yet (a labelled counter before its first increment), so the comparison does not depend on how far the run
got when the pages are read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import yaml
from deploy_support import (
    DASHBOARD,
    RULES,
    LocalStack,
    dashboard_exprs,
    exported_names,
    metric_names,
    rule_exprs,
    scrape,
    start_stack,
)

from aerplane.common.process import http_ok

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

COMPONENTS = ("coefficient", "reward", "generation", "learner")


@pytest.fixture(scope="module")
def stack(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # Enough steps that the learner is still training while the pages are read; it is stopped right after.
    stack = start_stack(
        redis_server.url,
        tmp_path_factory.mktemp("deploy-stack"),
        run_id=f"deploy-{uuid.uuid4().hex[:8]}",
        learner_steps=50,
    )
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def exported(stack: LocalStack) -> dict[str, set[str]]:
    return {c: exported_names(scrape(stack.url(c, "/metrics"))) for c in COMPONENTS}


def _check(used: set[str], exported: dict[str, set[str]], what: str) -> None:
    everything = set().union(*exported.values())
    missing = sorted(used - everything)
    assert not missing, f"{what} queries series no running service exports: {missing}"
    for name in used:  # and each name comes from the service its prefix names
        service = name.removeprefix("aerplane_").split("_", 1)[0]
        if service in exported:
            assert name in exported[service], f"{what}: {name} is not exported by the {service} service"


def test_every_dashboard_metric_is_exported_by_the_running_services(exported: dict[str, set[str]]) -> None:
    used = metric_names(dashboard_exprs(json.loads(DASHBOARD.read_text())))
    assert {"aerplane_learner_entropy", "aerplane_learner_alpha", "aerplane_coefficient_alpha"} <= used
    _check(used, exported, "deploy/grafana/dashboards/aerplane.json")


def test_every_alert_rule_metric_is_exported_by_the_running_services(exported: dict[str, set[str]]) -> None:
    used = metric_names(rule_exprs(yaml.safe_load(RULES.read_text())))
    assert {"aerplane_learner_entropy", "aerplane_learner_target_entropy", "aerplane_learner_step"} <= used
    _check(used, exported, "deploy/prometheus/rules.yml")


@pytest.mark.parametrize("component", COMPONENTS)
def test_services_answer_the_probe_paths_of_the_deployments(stack: LocalStack, component: str) -> None:
    """Compose healthchecks and the chart's probes use /healthz (alive) and /readyz (dependencies reachable)."""
    assert http_ok(stack.url(component, "/healthz"))
    # The learner turns ready once it has joined its run (Redis, coefficient service, data) and trains.
    deadline = time.monotonic() + 180
    while not http_ok(stack.url(component, "/readyz")):
        assert stack.procs[component].alive(), stack.procs[component].log_tail()
        assert time.monotonic() < deadline, f"{component} never became ready:\n{stack.procs[component].log_tail()}"
        time.sleep(0.5)
