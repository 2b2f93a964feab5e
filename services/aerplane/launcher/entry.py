"""Launcher subcommands (`aerplane up`, `aerplane report`, `aerplane simulate`): argument parsing only; the work is
imported when a command runs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_up(subparsers)
    _add_compare(subparsers)
    _add_report(subparsers)
    _add_simulate(subparsers)


def _add_up(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "up",
        help="run a whole AER training run on this machine (Redis, all services, learner, eval, report)",
        description="Start Redis, the coefficient, reward and generation services and the learner as local "
        "processes, train, evaluate the final policy on a held-out split, and write a report into the run "
        "directory. Ctrl-C stops everything.",
        epilog="The defaults are a CPU demo regime (docs/results/README.md): SmolLM2-135M at lr 2e-4, where entropy "
        "collapses within the run and AER engages; with --strategy aer, η = 0.01 and α_max = 0.03 unless given "
        "(the services' own defaults are DESIGN's 1e-3 and 1e-2, placed for GPU-scale learning rates).",
    )
    from aerplane.launcher.up import UpConfig

    d = UpConfig()
    r = p.add_argument_group("run")
    r.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    r.add_argument("--model", default="smollm2-135m", help="smollm2-135m | tiny | a model folder")
    r.add_argument("--task", default="mixed", help="training tasks: mixed (default), easy, easy-tier (reasoning-gym "
                   "arithmetic at three, two or one difficulty tier), or a reasoning-gym dataset name")  # fmt: skip
    r.add_argument("--data", default=None, help="verl-style jsonl/parquet of prompts and answers, instead of --task")
    r.add_argument("--backend", default="auto", help="vllm | transformers | auto (vllm when installed)")
    r.add_argument("--run-dir", default=None, help="run directory (default runs/<run-id>)")
    r.add_argument("--run-id", default=None, help="run id (default aer-<date>-<time>-<random>)")
    r.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    r.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    b = p.add_argument_group("batch and sampling")
    b.add_argument(
        "--prompts-per-step",
        type=int,
        default=d.prompts_per_step,
        help=f"prompts per step (default {d.prompts_per_step})",
    )
    b.add_argument(
        "--samples-per-prompt",
        "-G",
        type=int,
        default=d.samples_per_prompt,
        help=f"G, responses per prompt (default {d.samples_per_prompt})",
    )
    b.add_argument("--max-tokens", type=int, default=d.max_tokens, help=f"max response tokens (default {d.max_tokens})")
    b.add_argument(
        "--temperature", type=float, default=d.temperature, help=f"sampling temperature (default {d.temperature})"
    )
    b.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr:g})")
    b.add_argument("--dtype", default="auto", help="learner compute: float32 | bfloat16 (mixed precision, float32 "
                   "master weights) | auto (bfloat16 on a CUDA GPU, float32 on CPU; default)")  # fmt: skip
    b.add_argument("--nproc", type=int, default=1, help="learner processes (DDP ranks; default 1)")
    b.add_argument("--checkpoint-interval", type=int, default=5, help="checkpoint every N steps and at the end (5)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (default 0: at the end only)")
    e.add_argument("--eval-split", default="rg-heldout", help="rg-heldout | champ (default rg-heldout)")
    e.add_argument("--eval-size", type=int, default=d.eval_size, help=f"held-out problems (default {d.eval_size})")
    e.add_argument(
        "--eval-k",
        type=int,
        default=d.eval_k,
        help=f"samples per problem for avg@k / pass@k, k = 1, 4, 8 up to it (default {d.eval_k})",
    )
    e.add_argument("--eval-seed", type=int, default=0,
                   help="held-out problems and their sampling seeds, independent of --seed (default 0)")  # fmt: skip
    s = p.add_argument_group("services")
    s.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults below")
    for flag, default in _PORT_FLAGS.items():
        s.add_argument(f"--{flag.replace('_', '-')}-port", dest=f"port_{flag}", type=int, default=None,
                       help=f"default {default}")  # fmt: skip
    s.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="live terminal view (default: when stdout is a terminal)")  # fmt: skip
    s.add_argument("--max-failures", type=int, default=d.max_failures,
                   help="a service that dies is restarted (the learner with --resume); this many failures of one "
                   f"service within --failure-window seconds stop the run (default {d.max_failures})")  # fmt: skip
    s.add_argument("--failure-window", type=float, default=d.failure_window,
                   help=f"seconds (default {d.failure_window:g})")  # fmt: skip
    _add_strategy_flags(p)
    p.set_defaults(func=_up)


_PORT_FLAGS = {  # UpConfig.Ports field -> default, as in DESIGN §2
    "coefficient_grpc": 50051, "coefficient_http": 8000, "reward_http": 8001, "generation_http": 8002,
    "vllm": 8100, "learner_http": 8003,
}  # fmt: skip


def _up(args: argparse.Namespace) -> int:
    import os
    import sys

    from aerplane.launcher.simulate import SimulateError, strategy_from_args
    from aerplane.launcher.up import UP_AER_PARAMS

    if args.strategy == "aer":  # the CPU demo regime's η and α_max unless given (up.UP_AER_PARAMS)
        for name, value in UP_AER_PARAMS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    try:
        strategy = strategy_from_args(args)
    except (ValueError, SimulateError) as exc:
        print(f"aerplane up: invalid strategy parameters: {exc}", file=sys.stderr)
        return 2

    from aerplane.launcher.up import Ports, UpConfig, run_up

    params = {k: float(v) for k, v in strategy.numeric_params.items()}
    ports = Ports.free() if args.free_ports else Ports()
    for name in _PORT_FLAGS:
        if getattr(args, f"port_{name}") is not None:
            setattr(ports, name, getattr(args, f"port_{name}"))
    cfg = UpConfig(
        steps=args.steps, model=args.model, task=args.task, data=args.data, strategy=args.strategy,
        params=params, options=dict(strategy.options), backend=args.backend, run_dir=args.run_dir,
        run_id=args.run_id, resume=args.resume, eval_every=args.eval_every, eval_split=args.eval_split,
        eval_size=args.eval_size, eval_k=args.eval_k, eval_seed=args.eval_seed,
        prompts_per_step=args.prompts_per_step, samples_per_prompt=args.samples_per_prompt,
        max_tokens=args.max_tokens, temperature=args.temperature, lr=args.lr, dtype=args.dtype, seed=args.seed,
        nproc=args.nproc, checkpoint_interval=args.checkpoint_interval, ports=ports,
        live=args.live, redis_url=os.environ.get("AERPLANE_REDIS_URL") or None,
        max_failures=args.max_failures, failure_window=args.failure_window,
    )  # fmt: skip
    return run_up(cfg)


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="run a matrix of entropy-control configurations × seeds on one setup and compare them",
        description="Run every configuration (a strategy plus parameters) once per seed on one shared setup, one run "
        "after another on a shared Redis and coefficient service; each run is a normal run directory under "
        "OUT/runs/. Writes OUT/report.md, OUT/results.json and overlaid plots. Rerunning the same command (or "
        "`aerplane compare --out OUT`) continues an interrupted comparison; finished runs are never redone.",
        epilog="example: aerplane compare --strategies none,fixed:alpha=1e-3,fixed:alpha=1e-2,skywork,aer --seeds 0,1",
    )
    m = p.add_argument_group("matrix")
    m.add_argument("--strategies", help="comma-separated configurations: NAME[:KEY=VALUE[:KEY=VALUE...]], "
                   "e.g. none,fixed:alpha=1e-3,aer:rho=0.8:weighting=uniform")  # fmt: skip
    m.add_argument("--seeds", help="comma-separated seeds for every configuration (default 0)")
    m.add_argument("--matrix", metavar="FILE", help="TOML or YAML file with setup, seeds and [[config]] tables")
    m.add_argument("--out", help="comparison folder (default runs/compare-<date>-<time>); reuse it to continue")
    s = p.add_argument_group("shared setup (default: the `aerplane up` defaults, or the matrix file's setup)")
    s.add_argument("--steps", type=int)
    s.add_argument("--model")
    s.add_argument("--task")
    s.add_argument("--data")
    s.add_argument("--backend")
    s.add_argument("--prompts-per-step", type=int)
    s.add_argument("--samples-per-prompt", "-G", type=int)
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--temperature", type=float)
    s.add_argument("--lr", type=float)
    s.add_argument("--dtype")
    s.add_argument("--nproc", type=int)
    s.add_argument("--checkpoint-interval", type=int)
    s.add_argument("--eval-every", type=int)
    s.add_argument("--eval-split")
    s.add_argument("--eval-size", type=int)
    s.add_argument("--eval-k", type=int)
    s.add_argument("--eval-seed", type=int)
    o = p.add_argument_group("services and view")
    o.add_argument("--coefficient-http-port", type=int, default=None,
                   help="REST port of the shared coefficient service (default: a free port)")  # fmt: skip
    o.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="live terminal view per run (default: when stdout is a terminal)")  # fmt: skip
    o.add_argument("--keep-checkpoints", action="store_true",
                   help="keep finished runs' checkpoints and every weights version (default: only the final "
                   "weights stay; a SmolLM2 run's checkpoints take GBs)")  # fmt: skip
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from aerplane.launcher.compare import main_from_args

    return main_from_args(args)


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write (again) the plots and report.md of a run directory",
        description="Reads RUN_DIR/metrics.jsonl (and eval.json, run.json) and writes RUN_DIR/plots/*.png and "
        "RUN_DIR/report.md. Needs no running service.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (`aerplane up`) or a comparison folder "
                   "(`aerplane compare`)")  # fmt: skip
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from aerplane.launcher.report import ReportError, write_report

    try:
        if (Path(args.run_dir) / "compare.json").exists():
            from aerplane.launcher.compare_report import write_compare_report

            path = write_compare_report(Path(args.run_dir))
        else:
            path = write_report(Path(args.run_dir))
    except ReportError as exc:
        print(f"aerplane report: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _add_strategy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", default="aer", help="none | fixed | skywork | aer (default aer)")
    g = p.add_argument_group("strategy parameters (defaults: DESIGN §1; only those of the chosen strategy apply)")
    g.add_argument("--rho", type=float, default=None, help="aer: target H* = rho·H_0")
    g.add_argument("--tau", type=float, default=None, help="aer: accuracy threshold of the threshold weighting")
    g.add_argument("--eta", type=float, default=None, help="aer: step size of the α update")
    g.add_argument("--alpha-min", type=float, default=None, help="aer, skywork: lower bound of α")
    g.add_argument("--alpha-max", type=float, default=None, help="aer, skywork: upper bound of α")
    g.add_argument("--alpha-init", type=float, default=None, help="aer, skywork: α_0")
    g.add_argument("--anchor-steps", type=float, default=None, help="aer: observations averaged into H_0")
    g.add_argument("--weighting", default=None, help="aer: threshold | linear | uniform")
    g.add_argument("--target-entropy", type=float, default=None, help="skywork: H_target; aer: absolute H*")
    g.add_argument("--alpha", type=float, default=None, help="fixed: the constant α")
    g.add_argument("--delta", type=float, default=None, help="skywork: α step")
    g.add_argument("--param", action="append", metavar="KEY=VALUE", help="any strategy parameter (repeatable)")


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="replay an entropy-control strategy over a synthetic or recorded entropy trace",
        description="Print per step the entropy H, target H*, coefficient α and mean prompt weight λ that a "
        "strategy would give, on a synthetic collapsing-entropy trace (closed loop: α slows the collapse) or on a "
        "recorded run's metrics.jsonl (open loop). Tune parameters here before spending GPU hours.",
    )
    _add_strategy_flags(p)
    t = p.add_argument_group("trace")
    t.add_argument("--from-metrics", metavar="PATH", help="replay a recorded run's metrics.jsonl instead")
    t.add_argument("--steps", type=int, default=60, help="synthetic: steps (default 60)")
    t.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    t.add_argument("--h0", type=float, default=1.5, help="synthetic: initial entropy in nats (default 1.5)")
    t.add_argument("--decay", type=float, default=0.04, help="synthetic: entropy lost per step, fraction (0.04)")
    t.add_argument("--response", type=float, default=10.0, help="synthetic: entropy gained per unit α·λ (10)")
    t.add_argument("--noise", type=float, default=0.01, help="synthetic: std of the per-step noise (0.01)")
    t.add_argument("--prompts", type=int, default=16, help="synthetic: prompts per step (16)")
    t.add_argument("--group-size", type=int, default=8, help="synthetic: samples per prompt (8)")
    o = p.add_argument_group("output")
    o.add_argument("--every", type=int, default=1, help="print every N-th step (and the last)")
    o.add_argument("--json", action="store_true", help="one JSON object per step instead of a table")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from aerplane.launcher.simulate import main

    return main(args)
