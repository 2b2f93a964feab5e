#!/usr/bin/env python3
"""The checks of scripts/compose-smoke.sh against a running compose stack (standard library only: it runs with
the host's python3, outside the images).

    compose_smoke_check.py wait-steps --api http://127.0.0.1:8000 --run-id R --steps 3 --timeout 1800 \\
        --alive 'docker compose ... ps -q learner-cpu'
    compose_smoke_check.py prometheus --url http://127.0.0.1:9090 --dashboard deploy/grafana/dashboards/aerplane.json \\
        --steps 3 --report out.json

`wait-steps` polls the coefficient REST API (GET /v1/runs/{run}/history: one row per learner step reported) until
the run has trained `--steps` steps. `prometheus` waits until Prometheus has scraped that step, then checks that
every target is up, that aerplane_coefficient_*, aerplane_learner_* and vLLM's vllm:* series have values, and runs
every query of the Grafana dashboard to count the panels that show data. Both print one line per check and exit
non-zero on a failure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

# Grafana's variables, as a dashboard query sees them, replaced by values Prometheus accepts on its own.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "15s",
    "${__interval}": "15s",
    "$__range": "1h",
}
REQUIRED_SERIES = {  # what the run must have produced, as PromQL selectors
    "coefficient": '{__name__=~"aerplane_coefficient_.+"}',
    "learner": '{__name__=~"aerplane_learner_.+"}',
    "vllm": '{__name__=~"vllm:.+"}',
}


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def say(msg: str) -> None:
    print(f"[check] {msg}", flush=True)


# --- training steps through the REST API ------------------------------------------------------------------------------


def steps_done(api: str, run_id: str) -> int:
    try:
        rows = get_json(f"{api}/v1/runs/{urllib.parse.quote(run_id)}/history")
    except (urllib.error.URLError, OSError, ValueError):
        return 0
    return len({row["step"] for row in rows}) if isinstance(rows, list) else 0


def wait_steps(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    started = time.monotonic()
    last = -1
    while True:
        done = steps_done(args.api, args.run_id)
        if done != last:
            say(f"steps trained: {done}/{args.steps} after {time.monotonic() - started:.0f}s")
            last = done
        if done >= args.steps:
            return 0
        if args.alive and not subprocess.run(args.alive, shell=True, capture_output=True, text=True).stdout.strip():
            say("FAIL: the learner is no longer running")
            return 1
        if time.monotonic() > deadline:
            say(f"FAIL: {done} of {args.steps} steps after {args.timeout:.0f}s")
            return 1
        time.sleep(args.interval)


# --- Prometheus -----------------------------------------------------------------------------------------------------


def query(url: str, expr: str) -> list[dict[str, Any]]:
    body = get_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"] if body["data"]["resultType"] == "vector" else [body["data"]["result"]]


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel query of the dashboard, Grafana variables replaced."""
    dashboard = json.loads(path.read_text())
    out = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            expr = re.sub(r"\$\{?\w+\}?", ".*", expr)  # template variables ($run_id, ...): match everything
            out.append((panel.get("title", "?"), expr))
    return out


def check_prometheus(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {}
    failures: list[str] = []
    deadline = time.monotonic() + args.timeout
    # The learner's step as Prometheus has scraped it: wait for the step the REST API reported.
    while True:
        try:
            step = max((float(r["value"][1]) for r in query(args.url, "aerplane_learner_step")), default=-1.0)
        except (urllib.error.URLError, OSError, RuntimeError):
            step = -1.0
        if step + 1 >= args.steps or time.monotonic() > deadline:
            break
        time.sleep(2)
    report["learner_step_scraped"] = step
    say(f"aerplane_learner_step in Prometheus: {step:g}")
    # Every target up (wait a little: a target can be between scrapes of a restarted service).
    while True:
        targets = get_json(f"{args.url}/api/v1/targets")["data"]["activeTargets"]
        health = {f"{t['labels'].get('job')} {t['scrapeUrl']}": t["health"] for t in targets}
        if all(h == "up" for h in health.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    report["targets"] = health
    for name, h in sorted(health.items()):
        say(f"target {name}: {h}")
    down = [n for n, h in health.items() if h != "up"]
    if down or not health:
        failures.append(f"targets not up: {down or 'none configured'}")
    # The series the issue names.
    report["series"] = {}
    for what, selector in REQUIRED_SERIES.items():
        result = query(args.url, selector)
        names = sorted({r["metric"]["__name__"] for r in result})
        report["series"][what] = {"series": len(result), "names": len(names)}
        say(f"{what} series: {len(result)} ({len(names)} names, e.g. {', '.join(names[:3])})")
        if not result:
            failures.append(f"no {what} series ({selector})")
    # The dashboard's panels, query by query.
    if args.dashboard:
        panels: dict[str, bool] = {}
        for title, expr in dashboard_queries(Path(args.dashboard)):
            try:
                has_data = bool(query(args.url, expr))
            except (RuntimeError, urllib.error.HTTPError) as exc:
                failures.append(f"dashboard panel {title!r}: query failed: {exc}")
                has_data = False
            panels[title] = panels.get(title, False) or has_data
        empty = sorted(t for t, ok in panels.items() if not ok)
        report["dashboard"] = {"panels": len(panels), "with_data": len(panels) - len(empty), "empty": empty}
        say(f"dashboard panels with data: {len(panels) - len(empty)}/{len(panels)}; empty: {', '.join(empty) or '-'}")
    report["failures"] = failures
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    for f in failures:
        say(f"FAIL: {f}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wait-steps", help="wait until the run has trained N steps (coefficient REST API)")
    w.add_argument("--api", required=True)
    w.add_argument("--run-id", required=True)
    w.add_argument("--steps", type=int, required=True)
    w.add_argument("--timeout", type=float, default=1800)
    w.add_argument("--interval", type=float, default=5)
    w.add_argument("--alive", help="shell command that prints something while the learner runs")
    w.set_defaults(func=wait_steps)
    p = sub.add_parser("prometheus", help="targets up, required series present, dashboard panels with data")
    p.add_argument("--url", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--dashboard")
    p.add_argument("--report")
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(func=check_prometheus)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
