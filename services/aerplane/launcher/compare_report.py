"""The comparison report of `aerplane compare`: `results.json`, `report.md` and overlaid plots, from files only.

Reads `OUT/compare.json` (the matrix, command, revision, each run's status and wall time) and every finished run's
`metrics.jsonl` and `eval.json`; runs not finished yet are listed as such and left out of the numbers. Per
configuration, over its finished seeds (mean ± sample standard deviation; "±" is omitted with one seed):

- held-out avg@k and pass@k for k = 1, 4, 8 (as many as the evaluation drew), with the held-out standard error
  (the mean over seeds of each run's standard error over problems: what the held-out set itself can resolve);
- held-out accuracy per difficulty bucket;
- final and minimum training entropy (token mean per step);
- the tracking error, mean |H − H*| / H* over the steps after α first becomes positive (none when α never does,
  or the strategy has no target);
- the share of those steps within ±20 % of H*;
- wall time per run.

Plots overlay every run per step, one colour per configuration (seeds share it): entropy with each run's H*
(dashed), α, mean λ, training accuracy and response length.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from aerplane.launcher.report import ReportError, read_metrics, save_figure, series, step_figure

PLOTS = {
    "entropy": ("mean_entropy", "Policy entropy H (dashed: each run's H*)", "mean token entropy (nats)"),
    "alpha": ("alpha", "Entropy coefficient α", "α"),
    "prompt_weight": ("mean_prompt_weight", "Mean prompt weight λ", "mean λ"),
    "accuracy": ("accuracy", "Training accuracy", "mean reward"),
    "response_length": ("response_length", "Response length", "tokens"),
}
TRACK_BAND = 0.2


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def tracking(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Tracking of H* after α first becomes positive: mean |H − H*|/H*, share within ±20 %, steps counted."""
    start = next((i for i, r in enumerate(records) if _finite(r.get("alpha")) and r["alpha"] > 0), None)
    if start is None:
        return {"first_positive_alpha_step": None, "tracking_error": None, "within_band": None, "tracked_steps": 0}
    errors = [
        abs(r["mean_entropy"] - r["target_entropy"]) / r["target_entropy"]
        for r in records[start:]
        if _finite(r.get("mean_entropy")) and _finite(r.get("target_entropy")) and r["target_entropy"] > 0
    ]
    if not errors:
        return {
            "first_positive_alpha_step": records[start]["step"],
            "tracking_error": None,
            "within_band": None,
            "tracked_steps": 0,
        }
    return {
        "first_positive_alpha_step": records[start]["step"],
        "tracking_error": sum(errors) / len(errors),
        "within_band": sum(1 for e in errors if e <= TRACK_BAND) / len(errors),
        "tracked_steps": len(errors),
    }


def run_summary(run_dir: Path) -> dict[str, Any]:
    """The numbers of one finished run."""
    records = read_metrics(run_dir)
    entropies = [r["mean_entropy"] for r in records if _finite(r.get("mean_entropy"))]
    eval_path = run_dir / "eval.json"
    evaluation = json.loads(eval_path.read_text())["splits"][-1] if eval_path.exists() else {}
    alphas = [r["alpha"] for r in records if _finite(r.get("alpha"))]
    return {
        "steps": len(records),
        "initial_entropy": next((r["initial_entropy"] for r in records if _finite(r.get("initial_entropy"))), None),
        "target_entropy": next(
            (r["target_entropy"] for r in reversed(records) if _finite(r.get("target_entropy"))), None
        ),
        "final_entropy": entropies[-1] if entropies else None,
        "min_entropy": min(entropies) if entropies else None,
        "max_alpha": max(alphas) if alphas else None,
        **tracking(records),
        "eval": {
            "by_k": evaluation.get("by_k", {}),
            "problems": evaluation.get("problems"),
            "k": evaluation.get("k"),
            "by_difficulty": evaluation.get("avg_at_k_by_difficulty", {}),
        },
    }


def _mean_std(values: list[float]) -> dict[str, float | int | None]:
    values = [v for v in values if _finite(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over the seeds of one configuration."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    ks = sorted({k for r in runs for k in r["eval"]["by_k"]}, key=int)
    out["eval"] = {
        k: {
            metric: _mean_std([r["eval"]["by_k"].get(k, {}).get(metric) for r in runs])
            for metric in ("avg", "pass", "avg_se", "pass_se")
        }
        for k in ks
    }
    buckets = sorted({b for r in runs for b in r["eval"]["by_difficulty"]})
    out["by_difficulty"] = {b: _mean_std([r["eval"]["by_difficulty"].get(b) for r in runs]) for b in buckets}
    for key in (
        "final_entropy",
        "min_entropy",
        "tracking_error",
        "within_band",
        "wall_seconds",
        "initial_entropy",
        "target_entropy",
        "max_alpha",
    ):
        out[key] = _mean_std([r.get(key) for r in runs])
    out["problems"] = next((r["eval"]["problems"] for r in runs if r["eval"]["problems"]), None)
    return out


def collect(out_dir: Path) -> dict[str, Any]:
    state_path = out_dir / "compare.json"
    if not state_path.exists():
        raise ReportError(f"{state_path}: not found (is {out_dir} a comparison folder?)")
    state = json.loads(state_path.read_text())
    configs = []
    for spec in state["configs"]:
        runs, missing = [], []
        for key, entry in sorted(state["runs"].items()):
            if entry["label"] != spec["label"]:
                continue
            run_dir = out_dir / entry["run_dir"]
            if entry["status"] != "finished":
                missing.append({"seed": entry["seed"], "status": entry["status"]})
                continue
            summary = run_summary(run_dir)
            runs.append(
                {
                    "key": key,
                    "seed": entry["seed"],
                    "run_dir": entry["run_dir"],
                    "wall_seconds": entry["wall_seconds"],
                    **summary,
                }
            )
        configs.append({**spec, "runs": runs, "not_finished": missing, "summary": aggregate(runs) if runs else None})
    return {
        "command": state["command"],
        "git_revision": state["git_revision"],
        "history": state.get("history", []),
        "machine": state.get("machine", {}),
        "setup": state["setup"],
        "configs": configs,
    }


# --- report.md ------------------------------------------------------------------------------------------------------


def _pm(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.{digits}f}"
    return text


def _minutes(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return f"{stat['mean'] / 60:.1f}"


def results_table(results: dict[str, Any]) -> list[str]:
    """The markdown results table (also quoted in the README)."""
    configs = [c for c in results["configs"] if c["summary"]]
    ks = sorted({k for c in configs for k in c["summary"]["eval"]}, key=int)
    head = ["configuration", "seeds"]
    for k in ks:
        head += [f"avg@{k}", f"pass@{k}"]
    head += ["held-out SE", "final H", "min H", "tracking err", "in ±20 %", "min/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in configs:
        s = c["summary"]
        row = [f"`{c['label']}`", str(len(s["seeds"]))]
        for k in ks:
            row += [_pm(s["eval"].get(k, {}).get("avg")), _pm(s["eval"].get(k, {}).get("pass"))]
        top = str(ks[-1]) if ks else None
        se = s["eval"].get(top, {}).get("avg_se", {}).get("mean") if top else None
        row += [
            f"{se:.3f}" if se is not None else "–",
            _pm(s["final_entropy"]),
            _pm(s["min_entropy"]),
            _pm(s["tracking_error"]),
            _pm(s["within_band"], 2),
            _minutes(s["wall_seconds"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def difficulty_table(results: dict[str, Any]) -> list[str]:
    configs = [c for c in results["configs"] if c["summary"]]
    buckets = sorted({b for c in configs for b in c["summary"]["by_difficulty"]})
    if not buckets:
        return []
    lines = ["| configuration | " + " | ".join(buckets) + " |", "|---|" + "---|" * len(buckets)]
    for c in configs:
        by = c["summary"]["by_difficulty"]
        lines.append(f"| `{c['label']}` | " + " | ".join(_pm(by.get(b)) for b in buckets) + " |")
    return lines


def spread_notes(results: dict[str, Any]) -> list[str]:
    """Pairs of configurations whose avg@k differs by less than their seed spread (or the held-out SE)."""
    configs = [c for c in results["configs"] if c["summary"] and c["summary"]["eval"]]
    if len(configs) < 2:
        return []
    k = max(configs[0]["summary"]["eval"], key=int)
    notes = []
    best = max(configs, key=lambda c: c["summary"]["eval"].get(k, {}).get("avg", {}).get("mean") or -1)
    b = best["summary"]["eval"][k]
    for c in configs:
        if c is best:
            continue
        e = c["summary"]["eval"].get(k)
        if not e or e["avg"]["mean"] is None:
            continue
        gap = b["avg"]["mean"] - e["avg"]["mean"]
        spread = max(
            x
            for x in (b["avg"]["std"], e["avg"]["std"], b["avg_se"]["mean"], e["avg_se"]["mean"], 0.0)
            if x is not None
        )
        verdict = "within the seed spread / held-out SE" if gap <= spread else "larger than the seed spread"
        notes.append(f"- `{best['label']}` − `{c['label']}`: avg@{k} {gap:+.3f} ({verdict}, ±{spread:.3f})")
    return notes


def _continued(history: list[dict[str, Any]], command: list[str], revision: str) -> list[str]:
    """A line naming the latest invocation when it differs from the first (a resumed comparison may have been
    continued with another matrix file name or at another revision)."""
    from aerplane.launcher.compare import quote_command

    if not history:
        return []
    last = history[-1]
    if last.get("command") == command and last.get("git_revision") == revision:
        return []
    return [
        f"- last continued ({len(history)} invocations) with `{quote_command(last['command'])}` at revision "
        f"`{str(last.get('git_revision', '?'))[:12]}`"
    ]


def write_markdown(results: dict[str, Any], out_dir: Path, plots: list[Path]) -> Path:
    from aerplane.launcher.compare import quote_command

    setup = results["setup"]
    finished = sum(len(c["runs"]) for c in results["configs"])
    pending = sum(len(c["not_finished"]) for c in results["configs"])
    lines = [
        "# aerplane compare",
        "",
        f"- command: `{quote_command(results['command'])}`",
        f"- git revision: `{results['git_revision']}`",
        *_continued(results.get("history", []), results["command"], results["git_revision"]),
        f"- machine: {results['machine'].get('cpus', '?')} CPUs, {results['machine'].get('platform', '?')}"
        + (f", {results['machine']['gpu']}" if results["machine"].get("gpu") else ""),
        f"- runs: {finished} finished" + (f", {pending} not finished yet" if pending else ""),
        f"- setup: model `{setup['model']}`, task `{setup['data'] or setup['task']}`, {setup['steps']} steps of "
        f"{setup['prompts_per_step']} prompts × G = {setup['samples_per_prompt']} × ≤ {setup['max_tokens']} tokens, "
        f"lr {setup['lr']:g}, temperature {setup['temperature']:g}; held-out `{setup['eval_split']}` "
        f"{setup['eval_size']} problems × {setup['eval_k']} samples",
        "",
        "## Results",
        "",
        "Mean ± standard deviation over seeds. avg@k: mean reward of each problem's first k samples; pass@k: "
        "unbiased estimate from all samples. Held-out SE: standard error over problems of avg@k (largest k). "
        "Tracking error: mean |H − H*| / H* over the steps after α first becomes positive; in ±20 %: the share of "
        "those steps within 20 % of H*.",
        "",
        *results_table(results),
        "",
    ]
    notes = spread_notes(results)
    if notes:
        lines += ["Differences to the best configuration on held-out avg@k:", "", *notes, ""]
    diff = difficulty_table(results)
    if diff:
        lines += ["## Held-out accuracy per difficulty", "", *diff, ""]
    lines += ["## Per step", ""]
    for path in plots:
        lines += [f"![{path.stem}](plots/{path.name})", ""]
    lines += [
        "## Runs",
        "",
        "| configuration | seed | run | steps | H_0 | H* | first α > 0 | wall min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in results["configs"]:
        for r in c["runs"]:
            link = f"[{r['key']}]({r['run_dir']}/report.md)"

            def f(v: Any) -> str:
                return f"{v:.3f}" if _finite(v) else "–"

            first = r["first_positive_alpha_step"]
            lines.append(
                f"| `{c['label']}` | {r['seed']} | {link} | {r['steps']} | {f(r['initial_entropy'])} | "
                f"{f(r['target_entropy'])} | {first if first is not None else '–'} | "
                f"{r['wall_seconds'] / 60:.1f} |"
            )
        for m in c["not_finished"]:
            lines.append(f"| `{c['label']}` | {m['seed']} | {m['status']} | | | | | |")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    records = {
        (c["label"], r["seed"]): read_metrics(out_dir / r["run_dir"]) for c in results["configs"] for r in c["runs"]
    }
    paths = []
    for name, (key, title, ylabel) in PLOTS.items():
        fig, ax = step_figure(title, ylabel, size=(7.2, 4.0))
        for i, c in enumerate(results["configs"]):
            color = colors[i % len(colors)]
            for j, r in enumerate(c["runs"]):
                recs = records[(c["label"], r["seed"])]
                ax.plot(
                    *series(recs, key),
                    color=color,
                    alpha=0.9 if j == 0 else 0.55,
                    linewidth=1.3,
                    label=c["label"] if j == 0 else None,
                )
                target = series(recs, "target_entropy") if name == "entropy" else ([], [])
                if target[0]:
                    ax.plot(*target, color=color, linestyle="--", linewidth=0.9, alpha=0.7)
        paths.append(save_figure(fig, ax, plots_dir / f"{name}.png", legend_size=7))
    return paths


def write_compare_report(out_dir: Path) -> Path:
    """Write results.json, plots/*.png and report.md into `out_dir`; returns the report's path."""
    results = collect(out_dir)
    tmp = out_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    tmp.replace(out_dir / "results.json")
    plots = write_plots(results, out_dir)
    return write_markdown(results, out_dir, plots)
