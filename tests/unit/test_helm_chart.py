"""The Helm chart's workload wiring, rendered with `helm template` for the variants a platform team installs:
1-node and 2-node learners, tensor-parallel generation, an existing Secret, and each model source. Every variant
passes `kubernetes-validate --strict` (oldest supported and newest known Kubernetes), and has no environment key
twice. The learner is an Indexed Job whose rank 0 is index 0, and only index 0 is served and scraped.

The chart's general checks (lint, schema, probes, ConfigMaps through the settings classes, the PrometheusRule) are in
test_deploy_configs.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import ALL_ON_VALUES, CHART, check_environment, helm

TOKEN = "auth.apiToken=test-token,auth.learnerToken=test-learner-token,auth.redisPassword=0123abcd"
TWO_NODES = [
    "learner.nodes=2",
    "learner.gpusPerNode=4",
    "learner.promptsPerStep=64",
    "storage.accessModes[0]=ReadWriteMany",
]
VARIANTS: dict[str, list[str]] = {
    "1-node": [],
    "2-node": TWO_NODES,
    "tp-generation": [
        "generation.gpusPerReplica=2",
        "generation.vllmExtraArgs[0]=--max-num-seqs",
        "generation.vllmExtraArgs[1]=256",
        'generation.env.AERPLANE_GENERATION_VLLM_EXTRA_ARGS=["--enable-prefix-caching"]',
    ],
    "existing-secret": ["auth.existingSecret=aerplane-api", "auth.apiToken="],
    "model-huggingface": [
        "model.source=huggingface",
        "model.huggingface.repo=Qwen/Qwen2.5-Math-1.5B",
        "model.huggingface.tokenSecret.name=hf-token",
    ],
    "model-pvc": ["model.source=pvc", "model.pvc.claimName=models", "model.pvc.subPath=Qwen2.5-Math-1.5B"],
    "model-embedded": ["model.source=embedded", "model.embedded=smollm2-135m"],
}


# --- rendering ------------------------------------------------------------------------------------------------------


class DuplicateKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; Kubernetes' decoder and kubectl reject or merge them.
    This loader fails on them instead."""


def _mapping_without_duplicates(loader: DuplicateKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
    if dupes:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {dupes}", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


DuplicateKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def render_text(*sets: str, values: Path | None = None, chart: Path = CHART) -> str:
    argv = ["template", "aer", str(chart), "--namespace", "training", "--set", TOKEN]
    if values is not None:
        argv += ["-f", str(values)]
    for s in sets:
        argv += ["--set", s]
    result = helm(*argv)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(*sets: str, values: Path | None = None, chart: Path = CHART) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(render_text(*sets, values=values, chart=chart), Loader=DuplicateKeyLoader) if d]


def kinds(docs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return out


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """component -> pod template of every workload."""
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def container(template: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in template["spec"]["containers"] if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in c.get("env", [])}


@pytest.fixture(scope="module")
def variants() -> dict[str, list[dict[str, Any]]]:
    return {name: render(*sets) for name, sets in VARIANTS.items()} | {"all-on": render(values=ALL_ON_VALUES)}


# --- the learner: an Indexed Job, rank 0 = index 0 -----------------------------------------------------------------


def test_two_node_learner_is_an_indexed_job_whose_rank_0_is_index_0(variants: dict[str, list[dict[str, Any]]]) -> None:
    docs = kinds(variants["2-node"])
    job = docs["Job"]["aer-aerplane-learner"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure", "a failed pod restarts in place and resumes"
    headless = docs["Service"]["aer-aerplane-learner-headless"]
    assert pod["subdomain"] == headless["metadata"]["name"] and headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    learner = container(spec["template"], "learner")
    # The node rank is the job completion index...
    rank = env_of(learner)["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert rank == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    args = learner["args"]
    assert learner["command"] == ["python", "-m", "torch.distributed.run"]
    assert args[args.index("--node_rank") + 1] == "$(NODE_RANK)"
    assert args[args.index("--nnodes") + 1] == "2" and args[args.index("--nproc_per_node") + 1] == "4"
    assert args[-2:] == ["-m", "aerplane.learner"]
    # ... and every node meets at index 0's pod: <job>-0.<subdomain>, on the port that pod exposes.
    assert args[args.index("--master_addr") + 1] == "aer-aerplane-learner-0.aer-aerplane-learner-headless.training.svc"
    ports = {p["name"]: p["containerPort"] for p in learner["ports"]}
    assert int(args[args.index("--master_port") + 1]) == ports["master"]
    assert {p["name"]: p["targetPort"] for p in headless["spec"]["ports"]} == {"master": "master"}
    # Only index 0 (global rank 0, the only one with an HTTP server) is behind the learner Service.
    service = docs["Service"]["aer-aerplane-learner"]
    selector = service["spec"]["selector"]
    assert selector["batch.kubernetes.io/job-completion-index"] == "0"
    pod_labels = spec["template"]["metadata"]["labels"]
    assert {k: v for k, v in selector.items() if k != "batch.kubernetes.io/job-completion-index"}.items() <= (
        pod_labels.items()
    )
    assert "batch.kubernetes.io/job-completion-index" not in headless["spec"]["selector"], "the headless one: all"


def test_one_node_learner_runs_learner_train_with_probes(variants: dict[str, list[dict[str, Any]]]) -> None:
    from deploy_support import command_parses

    job = kinds(variants["1-node"])["Job"]["aer-aerplane-learner"]
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 1
    learner = container(job["spec"]["template"], "learner")
    command_parses(learner["args"])
    assert learner["args"][:2] == ["learner", "train"]
    assert learner["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert (
        kinds(variants["1-node"])["Service"]["aer-aerplane-learner"]["spec"]["selector"][
            "batch.kubernetes.io/job-completion-index"
        ]
        == "0"
    )


def test_the_learner_resumes_after_a_restart_and_completion_ends_the_run(
    variants: dict[str, list[dict[str, Any]]],
) -> None:
    for name in ("1-node", "2-node"):
        docs = kinds(variants[name])
        config = docs["ConfigMap"]["aer-aerplane-learner"]["data"]
        assert config["AERPLANE_LEARNER_RUN__RESUME"] == "true", "a restarted pod continues from the last checkpoint"
        job = docs["Job"]["aer-aerplane-learner"]["spec"]
        assert job["backoffLimit"] >= 1 and job["template"]["spec"]["restartPolicy"] == "OnFailure"
        assert "StatefulSet" not in docs or "aer-aerplane-learner" not in docs["StatefulSet"]


def test_a_multi_node_learner_needs_a_read_write_many_volume() -> None:
    result = helm("template", "aer", str(CHART), "--set", TOKEN, "--set", "learner.nodes=2")
    assert result.returncode != 0 and "ReadWriteMany" in result.stderr


def test_nccl_settings_and_anti_affinity_are_values() -> None:
    docs = kinds(render(*TWO_NODES, "learner.nccl.NCCL_SOCKET_IFNAME=eth0", "learner.podAntiAffinity=hard"))
    assert docs["ConfigMap"]["aer-aerplane-learner"]["data"]["NCCL_SOCKET_IFNAME"] == "eth0"
    affinity = docs["Job"]["aer-aerplane-learner"]["spec"]["template"]["spec"]["affinity"]
    term = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "learner"
    soft = kinds(render(*TWO_NODES))["Job"]["aer-aerplane-learner"]["spec"]["template"]["spec"]["affinity"]
    assert soft["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100


def test_read_write_once_storage_puts_the_pods_that_mount_it_on_one_node(
    variants: dict[str, list[dict[str, Any]]],
) -> None:
    for component, template in pod_specs(variants["1-node"]).items():
        affinity = template["spec"].get("affinity", {})
        if component in ("learner", "generation"):
            term = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            values = term["labelSelector"]["matchExpressions"][0]["values"]
            assert sorted(values) == ["generation", "learner"] and term["topologyKey"] == "kubernetes.io/hostname"
        else:
            assert "podAffinity" not in affinity, component
    for template in pod_specs(variants["2-node"]).values():  # ReadWriteMany: no co-location
        assert "podAffinity" not in template["spec"].get("affinity", {})


# --- duplicate environment keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [*VARIANTS, "all-on"])
def test_no_environment_block_has_a_key_twice(variants: dict[str, list[dict[str, Any]]], variant: str) -> None:
    """The ConfigMaps were parsed with DuplicateKeyLoader; here every container's env list (init containers too)."""
    for component, template in pod_specs(variants[variant]).items():
        for c in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            names = [e["name"] for e in c.get("env", [])]
            assert len(names) == len(set(names)), f"{variant}: {component}/{c['name']} env has {names}"


def test_the_loader_catches_a_duplicate_key() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate"):
        yaml.load("data:\n  A: 1\n  A: 2\n", Loader=DuplicateKeyLoader)


def test_tensor_parallel_generation_has_one_vllm_extra_args(variants: dict[str, list[dict[str, Any]]]) -> None:
    import json

    config = kinds(variants["tp-generation"])["ConfigMap"]["aer-aerplane-generation"]["data"]
    flags = json.loads(config["AERPLANE_GENERATION_VLLM_EXTRA_ARGS"])
    assert flags == ["--tensor-parallel-size", "2", "--max-num-seqs", "256", "--enable-prefix-caching"]
    settings = check_environment("generation", config, "helm generation ConfigMap (tp)")
    assert settings.vllm_extra_args == flags
    generation = kinds(variants["tp-generation"])["Deployment"]["aer-aerplane-generation"]
    assert container(generation["spec"]["template"], "generation")["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_env_values_cannot_silently_replace_the_charts_settings() -> None:
    result = helm(
        "template", "aer", str(CHART), "--set", TOKEN, "--set", "generation.env.AERPLANE_GENERATION_HTTP_PORT=9"
    )
    assert result.returncode != 0
    assert "generation.env.AERPLANE_GENERATION_HTTP_PORT" in result.stderr


# --- kubernetes-validate --strict on every variant ----------------------------------------------------------------


def _versions() -> list[str]:
    from kubernetes_validate import utils

    versions = sorted(set(utils.all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))
    minimum = next(v for v in versions if tuple(int(x) for x in v.split("."))[:2] >= (1, 28))
    return sorted({utils.latest_version(), minimum})


@pytest.mark.parametrize("version", _versions())
@pytest.mark.parametrize("variant", [*VARIANTS, "all-on"])
def test_variants_pass_kubernetes_validate_strict(
    variants: dict[str, list[dict[str, Any]]], variant: str, version: str
) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    for doc in variants[variant]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError:
            assert doc["kind"] in ("ServiceMonitor", "PrometheusRule"), doc["kind"]
        except kubernetes_validate.ValidationError as exc:
            where = f"{variant}: {doc['kind']}/{doc['metadata']['name']} (k8s {version})"
            raise AssertionError(f"{where}: {exc.message}") from None


@pytest.mark.parametrize("variant", [*VARIANTS, "all-on"])
def test_variant_configmaps_load_through_the_settings_classes(
    variants: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    maps = {
        d["metadata"]["labels"].get("app.kubernetes.io/component"): d["data"]
        for d in variants[variant]
        if d["kind"] == "ConfigMap" and "data" in d
    }
    redis = {} if "AERPLANE_REDIS_URL" in maps["learner"] else {"AERPLANE_REDIS_URL": "redis://from-a-secret:6379/0"}
    check_environment("generation", {**maps["generation"], **redis}, f"{variant}: generation")
    learner = check_environment(
        "learner", {**maps["learner"], **redis, "AERPLANE_LEARNER_TOKEN": "t"}, f"{variant}: learner"
    )
    assert learner.model.path == maps["generation"]["AERPLANE_GENERATION_MODEL"], "one initial policy for both"


# --- model provisioning ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "path", "init_args"),
    [
        ("1-node", "/runs/models/policy", ["wait", "/runs/models/policy"]),
        (
            "model-huggingface",
            "/runs/models/Qwen/Qwen2.5-Math-1.5B",
            ["huggingface", "Qwen/Qwen2.5-Math-1.5B", "main", "/runs/models/Qwen/Qwen2.5-Math-1.5B"],
        ),
        ("model-pvc", "/models/policy", ["wait", "/models/policy"]),
        ("model-embedded", "smollm2-135m", ["model", "prepare", "smollm2-135m"]),
    ],
)
def test_a_model_init_container_puts_the_policy_in_place(
    variants: dict[str, list[dict[str, Any]]], variant: str, path: str, init_args: list[str]
) -> None:
    docs = variants[variant]
    by_kind = kinds(docs)
    assert by_kind["ConfigMap"]["aer-aerplane-learner"]["data"]["AERPLANE_LEARNER_MODEL__PATH"] == path
    assert by_kind["ConfigMap"]["aer-aerplane-generation"]["data"]["AERPLANE_GENERATION_MODEL"] == path
    for component in ("learner", "generation"):
        spec = pod_specs(docs)[component]["spec"]
        init = spec["initContainers"][0]
        assert init["name"] == "model" and init["args"] == init_args, component
        mounts = {m["name"]: m for m in init["volumeMounts"]}
        assert mounts["runs"].get("readOnly") is not True, "the init container writes the run volume"
        volumes = {v["name"]: v for v in spec["volumes"]}
        if variant == "model-pvc":
            assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
            main = next(c for c in spec["containers"] if c["name"] == component)
            assert {m["name"]: m for m in main["volumeMounts"]}["model"]["subPath"] == "Qwen2.5-Math-1.5B"
        if variant == "model-huggingface":
            token = env_of(init)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert token == {"name": "hf-token", "key": "token"}
        if variant != "model-embedded":
            assert init["command"] == ["python", "/opt/aerplane-model/provision.py"]
            assert volumes["model-provision"]["configMap"]["name"] == "aer-aerplane-model"


def test_the_provisioning_script_waits_for_and_downloads_models(tmp_path: Path, monkeypatch) -> None:
    """The init container's script, run here: `wait` returns once a config.json appears; `huggingface` downloads
    once under a lock (the Hub call is replaced by a fake that writes a model folder)."""
    import importlib.util
    import sys
    import threading
    import types

    spec = importlib.util.spec_from_file_location("provision_model", CHART / "files" / "provision-model.py")
    assert spec and spec.loader
    provision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provision)
    monkeypatch.setattr(provision, "POLL_S", 0.05)

    target = tmp_path / "models" / "m"
    threading.Timer(0.2, lambda: (target.mkdir(parents=True), (target / "config.json").write_text("{}"))).start()
    provision.wait(target, "the model")
    assert provision.complete(target)

    calls = []

    def snapshot_download(repo_id: str, revision: str, local_dir: Path, token: str | None) -> None:
        calls.append((repo_id, revision))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "config.json").write_text("{}")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    hub_target = tmp_path / "models" / "org" / "repo"
    provision.huggingface("org/repo", "main", hub_target)
    provision.huggingface("org/repo", "main", hub_target)  # already there: no second download
    assert calls == [("org/repo", "main")]
    assert provision.complete(hub_target) and not hub_target.with_name("repo.lock").exists()
    assert not hub_target.with_name("repo.partial").exists()


def test_schema_requires_what_each_model_source_needs() -> None:
    for sets, message in (
        (["model.source=huggingface"], "repo"),
        (["model.source=pvc"], "claimName"),
        (["model.source=s3"], "/model/source"),
        (["model.path=relative/path"], "/model/path"),
    ):
        argv = ["template", "aer", str(CHART), "--set", TOKEN]
        for s in sets:
            argv += ["--set", s]
        result = helm(*argv)
        assert result.returncode != 0 and message in result.stderr, (sets, result.stderr)


# --- secrets, PDBs, labels ------------------------------------------------------------------------------------------


def test_the_token_secret_is_stable_and_its_checksum_rolls_the_pods() -> None:
    first, second = render(), render()
    secret = kinds(first)["Secret"]["aer-aerplane-auth"]
    assert secret == kinds(second)["Secret"]["aer-aerplane-auth"], "the same value on every render (GitOps)"
    annotations = {c: t["metadata"].get("annotations", {}) for c, t in pod_specs(first).items()}
    for component in ("coefficient", "learner"):  # the pods that read the token
        assert "checksum/auth" in annotations[component], component
    other = pod_specs(render("auth.apiToken=another-token"))
    assert (
        other["coefficient"]["metadata"]["annotations"]["checksum/auth"] != annotations["coefficient"]["checksum/auth"]
    )


def test_without_a_token_or_existing_secret_the_chart_refuses_to_render() -> None:
    result = helm("template", "aer", str(CHART))
    assert result.returncode != 0
    assert "auth.existingSecret" in result.stderr and "auth.apiToken" in result.stderr


def test_an_existing_secret_is_used_as_it_is(variants: dict[str, list[dict[str, Any]]]) -> None:
    docs = variants["existing-secret"]
    assert "Secret" not in kinds(docs)
    specs = pod_specs(docs)
    ref = env_of(container(specs["coefficient"], "coefficient"))["AERPLANE_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "aerplane-api"
    ref = env_of(container(specs["learner"], "learner"))["AERPLANE_LEARNER_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "aerplane-api"


def test_redis_requires_a_password_that_every_component_reads_from_the_secret(
    variants: dict[str, list[dict[str, Any]]],
) -> None:
    for variant in ("1-node", "2-node"):
        docs = variants[variant]
        secret = kinds(docs)["Secret"]["aer-aerplane-auth"]
        assert set(secret["data"]) == {"api-token", "learner-token", "redis-password"}
        specs = pod_specs(docs)
        redis = container(specs["redis"], "redis")
        args = redis["args"]
        assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
        for name in ("REDIS_PASSWORD", "REDISCLI_AUTH"):  # the server's password; redis-cli's probes use it
            assert env_of(redis)[name]["valueFrom"]["secretKeyRef"] == {
                "name": "aer-aerplane-auth",
                "key": "redis-password",
            }
        for component, template in specs.items():
            if component == "redis":
                continue
            for c in template["spec"]["containers"]:
                ref = env_of(c)["AERPLANE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": "aer-aerplane-auth", "key": "redis-password"}, (variant, component)
            assert "checksum/auth" in template["metadata"]["annotations"], (variant, component)
    # An external Redis takes its password in its URL: no password, no requirement.
    external = render("redis.url=redis://:pw@redis.example:6379/0", "auth.redisPassword=")
    assert "redis-password" not in kinds(external)["Secret"]["aer-aerplane-auth"]["data"]
    assert all(
        "AERPLANE_REDIS_PASSWORD" not in env_of(c)
        for t in pod_specs(external).values()
        for c in t["spec"]["containers"]
    )


@pytest.mark.parametrize(
    "sets, message",
    [
        (["auth.redisPassword="], "auth.redisPassword"),
        (["auth.learnerToken="], "auth.learnerToken"),
        (["auth.learnerToken=test-token"], "must differ from auth.apiToken"),
        (["auth.redisPassword=has space"], "redisPassword"),
    ],
)
def test_missing_or_unsafe_credentials_are_refused_with_their_value_name(sets: list[str], message: str) -> None:
    argv = ["template", "aer", str(CHART), "--set", TOKEN]
    for item in sets:
        argv += ["--set", item]
    result = helm(*argv)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_the_learner_calls_with_its_own_token_which_the_coefficient_service_requires(
    variants: dict[str, list[dict[str, Any]]],
) -> None:
    specs = pod_specs(variants["1-node"])
    learner = env_of(container(specs["learner"], "learner"))["AERPLANE_LEARNER_TOKEN"]
    service = env_of(container(specs["coefficient"], "coefficient"))["AERPLANE_LEARNER_TOKEN"]
    assert learner == service
    assert learner["valueFrom"]["secretKeyRef"] == {"name": "aer-aerplane-auth", "key": "learner-token"}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_network_policies_let_only_aerplane_pods_reach_redis_and_grpc(
    variants: dict[str, list[dict[str, Any]]],
) -> None:
    for variant in ("1-node", "2-node"):
        docs = variants[variant]
        policies = kinds(docs)["NetworkPolicy"]
        specs = pod_specs(docs)
        labels = {component: t["metadata"]["labels"] for component, t in specs.items()}
        redis = policies["aer-aerplane-redis"]["spec"]
        assert _selects(redis["podSelector"]["matchLabels"], labels["redis"]) and redis["policyTypes"] == ["Ingress"]
        (rule,) = redis["ingress"]
        assert [p["port"] for p in rule["ports"]] == ["redis"]
        (source,) = rule["from"]
        allowed = source["podSelector"]["matchLabels"]
        for component in ("coefficient", "reward", "generation", "learner"):
            assert _selects(allowed, labels[component]), (variant, component)
        assert not _selects(allowed, {"app.kubernetes.io/name": "aerplane", "app.kubernetes.io/instance": "other"})
        coefficient = policies["aer-aerplane-coefficient"]["spec"]
        assert _selects(coefficient["podSelector"]["matchLabels"], labels["coefficient"])
        grpc, http = coefficient["ingress"]
        assert [p["port"] for p in grpc["ports"]] == ["grpc"] and grpc["from"][0]["podSelector"][
            "matchLabels"
        ] == allowed
        assert [p["port"] for p in http["ports"]] == ["http"] and "from" not in http  # REST and /metrics stay reachable
        # The named ports exist on the selected pods.
        assert "redis" in {p["name"] for p in container(specs["redis"], "redis")["ports"]}
        assert {"grpc", "http"} <= {p["name"] for p in container(specs["coefficient"], "coefficient")["ports"]}
    external = kinds(render("redis.url=redis://:pw@redis.example:6379/0", "auth.redisPassword="))
    assert list(external["NetworkPolicy"]) == ["aer-aerplane-coefficient"]  # no Redis of ours to guard
    assert "NetworkPolicy" not in kinds(variants["all-on"])  # networkPolicy.enabled=false there


def test_no_pod_disruption_budget_blocks_a_drain_by_default(variants: dict[str, list[dict[str, Any]]]) -> None:
    for pdb in kinds(variants["1-node"]).get("PodDisruptionBudget", {}).values():
        assert pdb["spec"].get("maxUnavailable") not in (0, "0", "0%"), pdb["metadata"]["name"]
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] != "learner"


def test_pod_labels_carry_no_chart_version_so_a_chart_bump_restarts_nothing(tmp_path: Path) -> None:
    bumped = tmp_path / "aerplane"
    shutil.copytree(CHART, bumped)
    chart = yaml.safe_load((bumped / "Chart.yaml").read_text())
    chart["version"], chart["appVersion"] = "9.9.9", chart["appVersion"]
    (bumped / "Chart.yaml").write_text(yaml.safe_dump(chart))
    before, after = pod_specs(render()), pod_specs(render(chart=bumped))
    for component, template in before.items():
        labels = template["metadata"]["labels"]
        assert "helm.sh/chart" not in labels and "app.kubernetes.io/version" not in labels, component
        assert template == after[component], f"{component}: the pod template changes with the chart version"
    for d in render():
        if d["kind"] in ("Deployment", "StatefulSet"):
            assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()


# --- escape hatches -----------------------------------------------------------------------------------------------


def test_escape_hatches_reach_the_pods(variants: dict[str, list[dict[str, Any]]]) -> None:
    specs = pod_specs(variants["all-on"])
    learner = specs["learner"]["spec"]
    assert learner["runtimeClassName"] == "nvidia" and learner["schedulerName"] == "volcano"
    assert learner["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert [c["name"] for c in learner["initContainers"]] == ["model", "warm-cache"]
    assert {v["name"] for v in learner["volumes"]} >= {"runs", "cache", "dshm", "datasets"}
    main = container(specs["learner"], "learner")
    assert {m["name"] for m in main["volumeMounts"]} >= {"datasets"}
    assert "WANDB_API_KEY" in env_of(main)
    assert specs["learner"]["metadata"]["annotations"]["example.com/team"] == "rl"
    assert "HF_HUB_OFFLINE" in env_of(container(specs["generation"], "generation"))
    assert specs["generation"]["spec"]["runtimeClassName"] == "nvidia"


@pytest.mark.parametrize(
    "override", ["learner.extraEnvs[0].name=X", "coefficient.runtimeClass=nvidia", "learner.nccl.GLOO_X=1"]
)
def test_schema_stays_strict_beside_the_escape_hatches(override: str) -> None:
    result = helm("template", "aer", str(CHART), "--set", TOKEN, "--set", override)
    assert result.returncode != 0, f"{override} was accepted"
