"""Control-plane overhead of an `aerplane up` step: the share of the learner's step wall time spent outside model
compute and generation.

    .venv/bin/python bench/overhead.py                               # a fresh 6-step aerplane up on SmolLM2-135M
    .venv/bin/python bench/overhead.py --run-dir docs/results/2026-12-01-reference/runs/none-s1   # a finished run

A real run (Redis, coefficient, reward and generation services, the learner; the CPU demo regime of `aerplane up`
unless told otherwise), then its `metrics.jsonl`: each step's wall time (`step_seconds`, the baseline) and the
learner's phase timings split it into
- model compute: `forward_backward` (the forward, backward and optimizer step);
- generation: `wait_rollouts` (the learner idle until the step's samples are generated and scored; generation of the
  next step overlaps training, so this is the part it does not hide);
- weight sync and checkpoints: `publish_weights`, `checkpoint` (moving the model to generation and to disk);
- control plane: the rest — the coefficient service's GetCoefficients and ReportEntropy (`coefficients`,
  `report`), collecting and decoding the samples, batching, the consumed-rollout record, metrics.
The headline is the control plane's share of the step (target < 2 %, issue 15), the median over the steps after the
first (step 0 carries one-off warm-up). Benchmarks report; they never assert.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = ("forward_backward",)
GENERATION = ("wait_rollouts",)
WEIGHTS = ("publish_weights", "checkpoint")


def run_up(run_dir: Path, steps: int, model: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "aerplane.cli",
        "up",
        "--run-dir",
        str(run_dir),
        "--steps",
        str(steps),
        "--model",
        model,
        "--free-ports",
        "--no-live",
        "--eval-size",
        "4",
        "--eval-k",
        "1",
    ]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def split_steps(rows: list[dict]) -> list[dict[str, float]]:
    out = []
    for r in rows:
        phases = r.get("phases") or {}
        total = float(r["step_seconds"])
        model = sum(phases.get(p, 0.0) for p in MODEL)
        generation = sum(phases.get(p, 0.0) for p in GENERATION)
        weights = sum(phases.get(p, 0.0) for p in WEIGHTS)
        named_control = phases.get("coefficients", 0.0) + phases.get("report", 0.0)
        control = max(0.0, total - model - generation - weights)
        out.append(
            {
                "step": r["step"],
                "total": total,
                "model": model,
                "generation": generation,
                "weights": weights,
                "control": control,
                "coefficient_rpcs": named_control,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", help="read this finished run instead of starting one")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="aerplane-overhead-")) / "run"
        run_up(run_dir, args.steps, args.model)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = split_steps(rows)
    steady = steps[1:] or steps
    keys = ("total", "model", "generation", "weights", "control", "coefficient_rpcs")
    med = {k: statistics.median(s[k] for s in steady) for k in keys}
    share = statistics.median(s["control"] / s["total"] for s in steady if s["total"] > 0)
    with_weights = statistics.median((s["control"] + s["weights"]) / s["total"] for s in steady if s["total"] > 0)

    print(f"\naerplane up step wall time, {run_dir} (median of steps 1..{len(steps) - 1})")
    print(f"{'part':<52}{'seconds':>10}{'share':>9}")
    labels = {
        "model": "model compute (forward_backward)",
        "generation": "generation not hidden by training (wait_rollouts)",
        "weights": "weight sync and checkpoints",
        "control": "control plane (everything else)",
        "coefficient_rpcs": "  of which GetCoefficients + ReportEntropy",
        "total": "step (baseline)",
    }
    for k in ("model", "generation", "weights", "control", "coefficient_rpcs", "total"):
        print(f"{labels[k]:<52}{med[k]:>10.3f}{100 * med[k] / med['total']:>8.2f}%")
    weights_note = f"with weight sync: {100 * with_weights:.2f} %"
    print(f"control-plane share of a step: {100 * share:.2f} % (target < 2 %); {weights_note}")
    print(
        json.dumps(
            {
                "bench": "overhead",
                "metric": "control_plane_share_of_step",
                "value": round(share, 5),
                "baseline": "aerplane up step wall time (learner's step_seconds)",
                "target": 0.02,
                "better": "lower",
                "figures": {
                    "median_s": med,
                    "with_weight_sync_share": with_weights,
                    "steps": len(steps),
                    "run_dir": str(run_dir),
                    "per_step": steps,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
