"""`aerplane compare`: a matrix of entropy-control configurations (strategies × parameters × seeds) on one setup.

    aerplane compare --strategies none,fixed:alpha=1e-3,fixed:alpha=1e-2,skywork,aer --seeds 0,1
    aerplane compare --matrix docs/results/reference.toml --out runs/compare-ref
    aerplane compare --out runs/compare-ref            # continue an interrupted comparison

A configuration is a strategy plus parameters: `aer:rho=0.8:eta=2e-3` on the command line (parameters after the
name, each `key=value`, separated by `:`), or a `[[config]]` table in a TOML/YAML matrix file (see `load_matrix`).
Every configuration runs on the same setup (model, data, batch, steps, sampling, evaluation) once per seed, and
every (configuration, seed) is a normal run directory under `OUT/runs/` with its own report.

Runs go one after another. Redis and the coefficient service start once and serve every run (the coefficient
service holds many runs; Redis keys are namespaced by run). Reward and generation are bound to one run's streams,
so each run starts its own (on CPU vLLM starts in well under a minute with the embedded model).

Resuming: `OUT/compare.json` records the matrix, the exact command, the git revision and each run's status. Running
the command again, or `aerplane compare --out OUT` alone, continues: a finished run (its run.json says so) is never
redone; an interrupted one continues from its last checkpoint (`aerplane up --resume` semantics, with the
coefficient state saved in the checkpoint and in the comparison's own Redis, which persists under `OUT/redis`).
A different setup in the same OUT is refused rather than mixed in.

After each run the comparison report is written again — `OUT/report.md`, `OUT/results.json` and overlaid
`OUT/plots/*.png` (`aerplane.launcher.compare_report`) — so partial results are readable while the matrix runs.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aerplane.common.settings import SettingsError, load_settings
from aerplane.launcher.settings import SECTION, SETUP_FIELDS, Ports, UpSettings
from aerplane.launcher.up import Interrupted, Stack, UpError, execute, raise_interrupted, validate

STATE_FILE = "compare.json"


class CompareError(RuntimeError):
    """Bad matrix or options: one clear line for the user."""


@dataclass(frozen=True)
class ConfigSpec:
    """One configuration of the matrix: a label, a strategy and its parameters, and the seeds it runs with."""

    label: str
    strategy: str
    params: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.label).strip("-").lower() or "config"

    def numeric_and_options(self) -> tuple[dict[str, float], dict[str, str]]:
        """Parameters split as UpSettings wants them (numbers; string options such as aer's `weighting`)."""
        from aerplane.core.strategies import build_strategy

        try:
            strategy = build_strategy(self.strategy, **self.params)
        except ValueError as exc:
            raise CompareError(f"configuration {self.label!r}: {exc}") from None
        given = set(self.params)
        numeric = {k: float(v) for k, v in strategy.numeric_params.items() if k in given}
        options = {k: str(v) for k, v in strategy.options.items() if k in given}
        return numeric, options


def parse_spec(text: str) -> ConfigSpec:
    """`aer`, `fixed:alpha=1e-3`, `aer:rho=0.8:weighting=uniform` → a ConfigSpec labelled with the text itself."""
    from aerplane.core.strategies import parse_spec as parse_strategy

    text = text.strip()
    try:
        name, params = parse_strategy(text)
    except ValueError as exc:
        raise CompareError(f"--strategies {text!r}: {exc}") from None
    spec = ConfigSpec(label=text, strategy=name, params=params)
    spec.numeric_and_options()  # validate now, before anything starts
    return spec


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise CompareError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise CompareError(f"--seeds: expected distinct non-negative integers, got {text!r}")
    return seeds


def load_matrix(path: Path) -> dict[str, Any]:
    """A matrix file (TOML, or YAML by suffix):

        seeds = [0, 1]                 # default seeds of every configuration
        [setup]                        # any `aerplane up` option shared by all runs (steps, lr, model, ...)
        steps = 24
        lr = 1e-4
        [[config]]
        label = "aer"                  # optional; default: the strategy and its parameters
        strategy = "aer"
        params = { rho = 0.8 }
        seeds = [0, 1, 2]              # optional, overrides the default seeds

    Returns {"setup": {...}, "configs": [ConfigSpec, ...]}.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise CompareError(f"--matrix {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except Exception as exc:  # the parsers' own errors say where
        raise CompareError(f"--matrix {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CompareError(f"--matrix {path}: expected a table with `setup`, `seeds` and `config` entries")
    unknown = set(data) - {"setup", "seeds", "config"}
    if unknown:
        raise CompareError(f"--matrix {path}: unknown key(s) {', '.join(sorted(unknown))} (setup, seeds, config)")
    setup = data.get("setup") or {}
    if not isinstance(setup, dict):
        raise CompareError(f"--matrix {path}: setup must be a table")
    default_seeds = _seed_list(data.get("seeds", [0]), f"{path}: seeds")
    configs = []
    for i, entry in enumerate(data.get("config") or []):
        where = f"{path}: config[{i}]"
        if not isinstance(entry, dict) or "strategy" not in entry:
            raise CompareError(f"{where}: expected a table with at least `strategy`")
        extra = set(entry) - {"label", "strategy", "params", "seeds"}
        if extra:
            raise CompareError(f"{where}: unknown key(s) {', '.join(sorted(extra))} (label, strategy, params, seeds)")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise CompareError(f"{where}.params: must be a table of key = value")
        label = entry.get("label") or ":".join([entry["strategy"], *(f"{k}={v}" for k, v in params.items())])
        spec = ConfigSpec(
            label=str(label),
            strategy=str(entry["strategy"]),
            params=dict(params),
            seeds=_seed_list(entry.get("seeds", default_seeds), f"{where}.seeds"),
        )
        try:
            spec.numeric_and_options()
        except CompareError as exc:
            raise CompareError(f"{where}: {exc}") from None
        configs.append(spec)
    return {"setup": setup, "configs": configs, "seeds": default_seeds}


def _seed_list(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value or not all(isinstance(s, int) and s >= 0 for s in value):
        raise CompareError(f"{where}: expected a non-empty list of non-negative integers")
    if len(set(value)) != len(value):
        raise CompareError(f"{where}: seeds repeat")
    return tuple(value)


def build_setup(overrides: dict[str, Any]) -> dict[str, Any]:
    """The shared setup: UpSettings' defaults with `overrides` (from the matrix file, then the flags) on top."""
    base = UpSettings().model_dump()
    unknown = set(overrides) - set(SETUP_FIELDS)
    if unknown:
        raise CompareError(
            f"setup: unknown option(s) {', '.join(sorted(unknown))}; shared options are {', '.join(SETUP_FIELDS)}"
        )
    return {name: overrides.get(name, base[name]) for name in SETUP_FIELDS}


def git_revision() -> str:
    root = Path(__file__).resolve().parents[3]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


# --- the comparison's state file ------------------------------------------------------------------------------------


@dataclass
class RunEntry:
    key: str
    label: str
    seed: int
    run_dir: str  # relative to the comparison folder
    run_id: str
    status: str = "pending"  # pending | running | finished | failed
    wall_seconds: float = 0.0
    attempts: int = 0


@dataclass
class CompareState:
    out: Path
    setup: dict[str, Any]
    configs: list[ConfigSpec]
    runs: dict[str, RunEntry]
    command: list[str]
    git_revision: str
    created: float
    machine: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)  # every invocation: command, revision, time
    keep_checkpoints: bool = False  # this invocation's choice (not saved)

    def save(self) -> None:
        data = {
            "setup": self.setup,
            "configs": [asdict(c) for c in self.configs],
            "runs": {k: asdict(r) for k, r in self.runs.items()},
            "command": self.command,
            "git_revision": self.git_revision,
            "created": self.created,
            "machine": self.machine,
            "history": self.history,
        }
        tmp = self.out / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.out / STATE_FILE)

    @classmethod
    def load(cls, out: Path) -> CompareState | None:
        path = out / STATE_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            configs = [ConfigSpec(c["label"], c["strategy"], c["params"], tuple(c["seeds"])) for c in data["configs"]]
            runs = {k: RunEntry(**r) for k, r in data["runs"].items()}
            return cls(
                out=out,
                setup=data["setup"],
                configs=configs,
                runs=runs,
                command=data["command"],
                git_revision=data["git_revision"],
                created=data["created"],
                machine=data.get("machine", {}),
                history=data.get("history", []),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CompareError(f"{path}: not a comparison state file ({exc})") from None

    def ordered_runs(self) -> list[RunEntry]:
        """Seed-major order: every configuration's first seed, then every second seed, ... (early partial results
        cover every configuration)."""
        order = {c.label: i for i, c in enumerate(self.configs)}
        return sorted(self.runs.values(), key=lambda r: (r.seed, order.get(r.label, 0)))


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    info["python"] = platform.python_version()
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def plan(out: Path, setup: dict[str, Any] | None, configs: list[ConfigSpec], command: list[str]) -> CompareState:
    """The state to run: a new comparison, or the one in `out` (extended by new configurations, same setup)."""
    state = CompareState.load(out)
    if state is None:
        if setup is None or not configs:
            raise CompareError(f"{out} holds no comparison yet: give --strategies (or --matrix) to start one")
        state = CompareState(
            out=out,
            setup=setup,
            configs=[],
            runs={},
            command=command,
            git_revision=git_revision(),
            created=time.time(),
            machine=machine_info(),
        )
    else:
        state.setup = build_setup(state.setup)  # options added since the comparison started take their defaults
    if setup is not None and setup != state.setup:
        diff = [f"{k} ({state.setup.get(k)!r} there, {v!r} now)" for k, v in setup.items() if v != state.setup.get(k)]
        raise CompareError(
            f"{out} holds a comparison with another setup: {'; '.join(diff)}. Continue it with "
            f"`aerplane compare --out {out}` or choose another --out"
        )
    known = {c.label: c for c in state.configs}
    for spec in configs:
        if spec.label in known and known[spec.label] != spec:
            if (known[spec.label].strategy, known[spec.label].params) != (spec.strategy, spec.params):
                raise CompareError(f"configuration {spec.label!r} in {out} has other parameters; relabel it")
            seeds = tuple(dict.fromkeys(known[spec.label].seeds + spec.seeds))
            merged = ConfigSpec(spec.label, spec.strategy, spec.params, seeds)
            state.configs[state.configs.index(known[spec.label])] = merged
        elif spec.label not in known:
            state.configs.append(spec)
    prefix = re.sub(r"[^a-z0-9]+", "-", out.resolve().name.lower()).strip("-")[:24] or "compare"
    for spec in state.configs:
        for seed in spec.seeds:
            key = f"{spec.slug}-s{seed}"
            if key not in state.runs:
                state.runs[key] = RunEntry(
                    key=key, label=spec.label, seed=seed, run_dir=f"runs/{key}", run_id=f"{prefix}-{key}"
                )
    state.history.append({"command": command, "git_revision": git_revision(), "time": time.time()})
    return state


# --- running the matrix ---------------------------------------------------------------------------------------------


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class _Progress:
    """The matrix-level progress line: which run, how many done, and an ETA from the runs finished so far."""

    def __init__(self, state: CompareState) -> None:
        self.state = state

    def eta(self) -> float | None:
        done = [r for r in self.state.runs.values() if r.status == "finished" and r.wall_seconds > 0]
        left = [r for r in self.state.runs.values() if r.status != "finished"]
        if not done:
            return None
        return sum(r.wall_seconds for r in done) / len(done) * len(left)

    def line(self, entry: RunEntry, index: int, total: int) -> str:
        done = sum(1 for r in self.state.runs.values() if r.status == "finished")
        eta = self.eta()
        eta_text = f"matrix ETA {_fmt_duration(eta)}" if eta is not None else "matrix ETA after the first run"
        resumed = " (resuming)" if entry.attempts > 1 else ""
        return (
            f"[compare] run {index}/{total}: {entry.label} seed {entry.seed}{resumed} — {done} finished, "
            f"{total - done} to go, {eta_text}; run dir {self.state.out / entry.run_dir}"
        )


def run_compare(
    out: Path,
    setup: dict[str, Any] | None,
    configs: list[ConfigSpec],
    *,
    live: bool | None,
    coefficient_http: int,
    keep_checkpoints: bool = False,
) -> int:
    """Run (or continue) the comparison in `out`; returns the exit code."""
    from aerplane.launcher.compare_report import write_compare_report

    command = [Path(sys.argv[0]).name if sys.argv and sys.argv[0].endswith("aerplane") else "aerplane", *sys.argv[1:]]
    try:
        out.mkdir(parents=True, exist_ok=True)
        state = plan(out, setup, configs, command)
        state.keep_checkpoints = keep_checkpoints
        base = load_settings(UpSettings, state.setup, section=f"{SECTION} setup")
        facts = validate(base, shared_ports=tuple(Ports.model_fields))
    except (CompareError, UpError, SettingsError) as exc:
        print(f"aerplane compare: {exc}", file=sys.stderr)
        return 2
    state.save()
    pending = [r for r in state.ordered_runs() if r.status != "finished"]
    total = len(state.runs)
    print(
        f"[compare] {len(state.configs)} configurations, {total} runs ({total - len(pending)} already finished) "
        f"in {out}; revision {state.git_revision[:12]}",
        flush=True,
    )
    if not pending:
        print(f"[compare] nothing left to run; report: {write_compare_report(out)}", flush=True)
        return 0

    shared_ports = Ports.free()
    if coefficient_http:
        shared_ports.coefficient_http = coefficient_http
    shared = Stack(base.model_copy(update={"ports": shared_ports}), out, "compare", facts)  # redis_url: the env's
    progress = _Progress(state)
    code = 0
    previous = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            shared.start_shared(lambda text: print(f"[compare] {text}", flush=True))
        except Exception as exc:  # a failed start of the shared services: name it
            print(f"aerplane compare: could not start the shared services: {exc}", file=sys.stderr)
            return 1
        print(f"[compare] REST API: http://127.0.0.1:{shared_ports.coefficient_http}/v1/runs", flush=True)
        position = {r.key: i for i, r in enumerate(state.ordered_runs(), 1)}
        for entry in pending:
            code = _run_one(state, entry, position[entry.key], total, shared, shared_ports, facts, live, progress)
            state.save()
            write_compare_report(out)
            if code >= 128 or code == 2:
                break
            code = 0
    except Interrupted as exc:
        code = 128 + exc.signum
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        shared.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = [r for r in state.runs.values() if r.status == "failed"]
    report = write_compare_report(out)
    if code >= 128:
        print(f"[compare] interrupted; run the same command again to continue. Report so far: {report}", flush=True)
        return code
    print(f"[compare] report: {report}", flush=True)
    if failed:
        print(f"[compare] {len(failed)} run(s) failed: {', '.join(r.key for r in failed)}; rerun to retry them")
        return 1
    return 0


def _run_one(
    state: CompareState,
    entry: RunEntry,
    index: int,
    total: int,
    shared: Stack,
    shared_ports: Ports,
    facts: dict[str, Any],
    live: bool | None,
    progress: _Progress,
) -> int:
    spec = next(c for c in state.configs if c.label == entry.label)
    numeric, options = spec.numeric_and_options()
    run_dir = state.out / entry.run_dir
    resume = _has_checkpoint(run_dir)
    if not resume:
        # A first attempt, or one interrupted before its first checkpoint (or whose checkpoints did not travel, e.g.
        # a fresh clone of a committed comparison): nothing to continue from, so the run starts over — in a clean
        # directory, and without what an earlier attempt left in the shared Redis (its streams, and the
        # coefficient service's record of the run, which would refuse a new start).
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        clear_run_state(shared.redis_url, entry.run_id)
    ports = Ports.free()
    ports.coefficient_grpc, ports.coefficient_http = shared_ports.coefficient_grpc, shared_ports.coefficient_http
    cfg = UpSettings(
        **state.setup,
        strategy=spec.strategy,
        params=numeric,
        options=options,
        seed=entry.seed,
        run_dir=str(run_dir),
        run_id=entry.run_id,
        resume=resume,
        ports=ports,
        live=live,
        redis_url=shared.redis_url,
    )
    entry.attempts += 1
    entry.status = "running"
    state.save()
    print(progress.line(entry, index, total), flush=True)
    started = time.monotonic()
    try:
        code = execute(cfg, run_dir, entry.run_id, facts, shared=shared, title_prefix=f"[{index}/{total}] ")
    finally:
        entry.wall_seconds += time.monotonic() - started
    entry.status = "finished" if code == 0 else ("pending" if code >= 128 else "failed")
    if code == 0 and not state.keep_checkpoints:
        freed = prune_finished_run(run_dir)
        if freed:
            print(
                f"[compare] {entry.key}: removed checkpoints and old weights ({freed / 2**30:.1f} GiB); "
                "the final weights stay",
                flush=True,
            )
    return code


def clear_run_state(redis_url: str, run_id: str) -> int:
    """Delete every Redis key of run `run_id` (`aerplane:{run_id}:*`: its streams and its coefficient record);
    returns how many went. Other runs' keys are untouched."""
    from aerplane.common.redis_client import connect

    client = connect(redis_url)
    try:
        keys = list(client.scan_iter(match=f"aerplane:{run_id}:*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def _has_checkpoint(run_dir: Path) -> bool:
    from aerplane.common.run_layout import latest_checkpoint

    return (run_dir / "run.json").exists() and latest_checkpoint(run_dir / "checkpoints") is not None


def prune_finished_run(run_dir: Path) -> int:
    """Delete a finished run's checkpoints and every weights version but the last; returns the bytes freed.

    A finished run is never resumed, and on SmolLM2 each checkpoint (weights + Adam state) and weights version cost
    1.6 GB and 0.5 GB: a 16-run comparison would otherwise fill tens of GB. The final policy stays loadable.
    """
    import shutil

    from aerplane.common.run_layout import list_versions

    doomed = [run_dir / "checkpoints", *(path for _, path in list_versions(run_dir / "weights")[:-1])]
    freed = 0
    for path in doomed:
        if path.exists():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
    return freed


def main_from_args(args: Any) -> int:
    """`aerplane compare` with parsed arguments (see `launcher.entry`; its options are `settings.CompareOptions`)."""
    from aerplane.common.flags import given_overrides, settings_from_args
    from aerplane.launcher.settings import CompareOptions

    options = settings_from_args(CompareOptions, args, args.option_flags, section="compare")
    try:
        file_setup: dict[str, Any] = {}
        configs: list[ConfigSpec] = []
        seeds = parse_seeds(options.seeds) if options.seeds else None
        if options.matrix:
            matrix = load_matrix(options.matrix)
            file_setup = matrix["setup"]
            configs = matrix["configs"]
            if seeds is not None:
                configs = [ConfigSpec(c.label, c.strategy, c.params, seeds) for c in configs]
        if options.strategies:
            specs = [parse_spec(s) for s in _split_strategies(options.strategies)]
            configs += [ConfigSpec(s.label, s.strategy, s.params, seeds or (0,)) for s in specs]
        flags = given_overrides(args, args.setup_flags)
        setup = build_setup({**file_setup, **flags}) if (configs or flags) else None
        labels = [c.label for c in configs]
        if len(set(labels)) != len(labels):
            repeated = sorted({x for x in labels if labels.count(x) > 1})
            raise CompareError(f"configurations repeat: {', '.join(repeated)}")
    except CompareError as exc:
        print(f"aerplane compare: {exc}", file=sys.stderr)
        return 2
    out = options.out or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    if setup is None and not (out / STATE_FILE).exists():
        print("aerplane compare: give --strategies or --matrix (or --out of a comparison to continue)", file=sys.stderr)
        return 2
    return run_compare(
        out,
        setup,
        configs,
        live=options.live,
        coefficient_http=options.coefficient_http_port or 0,
        keep_checkpoints=options.keep_checkpoints,
    )


def _split_strategies(text: str) -> list[str]:
    """`none,fixed:alpha=1e-3,aer:rho=0.8:eta=2e-3` → one item per configuration."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise CompareError("--strategies: expected a comma-separated list such as none,fixed:alpha=1e-3,aer")
    return items
