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

Plots: one small panel per configuration holding its seeds (a colour per seed), shared axes: entropy with each run's H*
(dashed), α, mean λ, training accuracy and response length.
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
from pathlib import Path
from typing import Any

from aerplane.launcher.report import ReportError, read_metrics, series

PLOTS = {
    "entropy": ("mean_entropy", "Policy entropy H per configuration (dashed: H*, shaded: ±20 %)", "H (nats)"),
    "alpha": ("alpha", "Entropy coefficient α", "α"),
    "prompt_weight": ("mean_prompt_weight", "Mean prompt weight λ", "mean λ"),
    "accuracy": ("accuracy", "Training accuracy", "mean reward"),
    "response_length": ("response_length", "Response length", "tokens"),
}
TRACK_BAND = 0.2


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def tracking(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Tracking of H*, counted two ways: from α's first positive step (`tracking_error`, `within_band`) and from the
    first step where H ≤ 1.2·H* (`tracking_error_engaged`, `within_band_engaged`), which compares controllers that
    engage at different steps (one with a floor α_min > 0 has α > 0 from the start). Also the lowest H/H*."""
    errors = [
        (i, abs(r["mean_entropy"] - r["target_entropy"]) / r["target_entropy"], r["mean_entropy"] / r["target_entropy"])
        for i, r in enumerate(records)
        if _finite(r.get("mean_entropy")) and _finite(r.get("target_entropy")) and r["target_entropy"] > 0
    ]
    alpha_start = next((i for i, r in enumerate(records) if _finite(r.get("alpha")) and r["alpha"] > 0), None)
    engaged_start = next((i for i, _, ratio in errors if ratio <= 1.2), None)
    out: dict[str, Any] = {
        "first_positive_alpha_step": records[alpha_start]["step"] if alpha_start is not None else None,
        "engaged_step": records[engaged_start]["step"] if engaged_start is not None else None,
        "min_entropy_ratio": min((ratio for _, _, ratio in errors), default=None),
    }
    for suffix, start in (("", alpha_start), ("_engaged", engaged_start)):
        counted = [e for i, e, _ in errors if start is not None and i >= start]
        out[f"tracking_error{suffix}"] = sum(counted) / len(counted) if counted else None
        out[f"within_band{suffix}"] = sum(1 for e in counted if e <= TRACK_BAND) / len(counted) if counted else None
        out[f"tracked_steps{suffix}"] = len(counted)
    return out


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
        "tracking_error_engaged",
        "within_band_engaged",
        "min_entropy_ratio",
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
    head += ["held-out SE", "final H", "min H", "min H/H*", "tracking err", "in ±20 %"]
    head += ["err from H≤1.2H*", "in ±20 % from H≤1.2H*", "min/run"]
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
            _pm(s["min_entropy_ratio"], 2),
            _pm(s["tracking_error"]),
            _pm(s["within_band"], 2),
            _pm(s["tracking_error_engaged"]),
            _pm(s["within_band_engaged"], 2),
            _minutes(s["wall_seconds"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


SEED_COLUMNS = (
    ("tracking_error", "tracking err"),
    ("within_band", "in ±20 %"),
    ("tracking_error_engaged", "err from H≤1.2H*"),
    ("within_band_engaged", "in ±20 % from H≤1.2H*"),
    ("min_entropy_ratio", "min H/H*"),
)


def seed_table(folders: list[Path], labels: list[str]) -> list[str]:
    """Markdown: each named configuration's finished runs across comparison folders, one row per seed, then the
    mean ± standard deviation over all its seeds: both tracking definitions, the lowest H/H*, and held-out avg@k
    (largest k) with its standard error over problems."""
    found: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for folder in folders:
        for c in collect(folder)["configs"]:
            if c["label"] in found:
                found[c["label"]] += [{**r, "folder": folder.name} for r in c["runs"]]
    missing = [label for label, runs in found.items() if not runs]
    if missing:
        raise ReportError(f"no finished run of {', '.join(map(repr, missing))} in {', '.join(map(str, folders))}")
    head = ["configuration", "seed", *(title for _, title in SEED_COLUMNS), "avg@k ± SE", "folder"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def held_out(run: dict[str, Any]) -> tuple[float | None, float | None]:
        by_k = run["eval"]["by_k"]
        if not by_k:
            return None, None
        top = by_k[max(by_k, key=int)]
        return top.get("avg"), top.get("avg_se")

    def num(value: Any, digits: int = 3) -> str:
        return f"{value:.{digits}f}" if _finite(value) else "–"

    for label, runs in found.items():
        for r in sorted(runs, key=lambda r: r["seed"]):
            avg, se = held_out(r)
            cells = [num(r.get(key), 2 if "band" in key or "ratio" in key else 3) for key, _ in SEED_COLUMNS]
            score = f"{num(avg)} ± {num(se)}" if avg is not None else "–"
            lines.append(f"| `{label}` | {r['seed']} | " + " | ".join(cells) + f" | {score} | {r['folder']} |")
        cells = [
            _pm(_mean_std([r.get(key) for r in runs]), 2 if "band" in key or "ratio" in key else 3)
            for key, _ in SEED_COLUMNS
        ]
        avgs, ses = zip(*(held_out(r) for r in runs), strict=True)
        mean_se = _mean_std(list(ses))["mean"]
        score = f"{_pm(_mean_std(list(avgs)))} (SE {num(mean_se)})"
        lines.append(f"| **`{label}`, mean of {len(runs)}** | | " + " | ".join(cells) + f" | {score} | |")
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
    if not history:
        return []
    last = history[-1]
    if last.get("command") == command and last.get("git_revision") == revision:
        return []
    return [
        f"- last continued ({len(history)} invocations) with `{shlex.join(last['command'])}` at revision "
        f"`{str(last.get('git_revision', '?'))[:12]}`"
    ]


def write_markdown(results: dict[str, Any], out_dir: Path, plots: list[Path]) -> Path:
    setup = results["setup"]
    finished = sum(len(c["runs"]) for c in results["configs"])
    pending = sum(len(c["not_finished"]) for c in results["configs"])
    lines = [
        "# aerplane compare",
        "",
        f"- command: `{shlex.join(results['command'])}`",
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
        "those steps within 20 % of H*. The same two counted from the first step where H ≤ 1.2·H* (controllers that "
        "engage at different steps compare fairly there). min H/H*: the lowest entropy relative to the target.",
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
    """One figure per quantity, one small panel per configuration holding its seeds (one colour per seed, the same in
    every panel), shared axes; the entropy panels shade ±20 % around each seed's H* and dash H*."""
    import matplotlib.pyplot as plt

    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    configs = [c for c in results["configs"] if c["runs"]] or results["configs"][:1]
    seeds = sorted({r["seed"] for c in configs for r in c["runs"]})
    color = {seed: colors[i % len(colors)] for i, seed in enumerate(seeds)}
    records = {(c["label"], r["seed"]): read_metrics(out_dir / r["run_dir"]) for c in configs for r in c["runs"]}
    cols = min(3, max(1, len(configs)))
    rows = (len(configs) + cols - 1) // cols
    paths = []
    for name, (key, title, ylabel) in PLOTS.items():
        fig, axes = plt.subplots(
            rows, cols, figsize=(3.6 * cols, 2.6 * rows + 0.6), squeeze=False, sharex=True, sharey=True
        )
        for ax, c in zip(axes.flat, configs, strict=False):
            for r in c["runs"]:
                recs = records[(c["label"], r["seed"])]
                ax.plot(*series(recs, key), color=color[r["seed"]], linewidth=1.3, marker=".", markersize=3)
                xs, ys = series(recs, "target_entropy") if name == "entropy" else ([], [])
                if xs:
                    ax.plot(xs, ys, color=color[r["seed"]], linestyle="--", linewidth=0.9)
                    lo = [y * (1 - TRACK_BAND) for y in ys]
                    hi = [y * (1 + TRACK_BAND) for y in ys]
                    ax.fill_between(xs, lo, hi, color=color[r["seed"]], alpha=0.12, linewidth=0)
            ax.set_title(c["label"], fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for ax in axes[-1]:
            ax.set_xlabel("step", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel, fontsize=8)
        for ax in list(axes.flat)[len(configs) :]:
            ax.axis("off")
        handles = [plt.Line2D([], [], color=color[s], label=f"seed {s}") for s in seeds]
        if name == "entropy":
            handles.append(plt.Line2D([], [], color="grey", linestyle="--", label="H* (shaded: ±20 %)"))
        fig.legend(handles=handles, loc="upper right", fontsize=7, ncol=len(handles))
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        path = plots_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_compare_report(out_dir: Path) -> Path:
    """Write results.json, plots/*.png and report.md into `out_dir`; returns the report's path."""
    results = collect(out_dir)
    tmp = out_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    tmp.replace(out_dir / "results.json")
    plots = write_plots(results, out_dir)
    return write_markdown(results, out_dir, plots)
