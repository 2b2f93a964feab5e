"""Launcher subcommands (`aerplane simulate`, ...): argument parsing only; the work is imported when a command runs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_simulate(subparsers)


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="replay an entropy-control strategy over a synthetic or recorded entropy trace",
        description="Print per step the entropy H, target H*, coefficient α and mean prompt weight λ that a "
        "strategy would give, on a synthetic collapsing-entropy trace (closed loop: α slows the collapse) or on a "
        "recorded run's metrics.jsonl (open loop). Tune parameters here before spending GPU hours.",
    )
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
