"""The run report: plots and `report.md` from a run directory's `metrics.jsonl` (and `eval.json` when present).

`aerplane up` writes it at the end of a run; `aerplane report RUN_DIR` writes it again later (for example after a
run was interrupted). Everything here reads files only: no services are needed.

Layout of a run directory (the parts this module reads and writes):

    run.json          the run's configuration, written by `aerplane up`
    metrics.jsonl     one JSON object per learner step (written by the learner)
    eval.json         held-out evaluation results (written by `aerplane up`)
    plots/*.png       written here
    report.md         written here
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aerplane.launcher.view import fmt

PLOTS = ("entropy", "alpha", "prompt_weight", "accuracy", "response_length")
# aer's PID terms of the next α (metrics.jsonl keys), as the α plot and the step table show them.
TERMS = (("p_term", "P (kp·e)", ":"), ("i_term", "I (integral)", "--"), ("d_term", "D (derivative)", "-."))


class ReportError(RuntimeError):
    pass


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Per-step records from metrics.jsonl; the last record wins for a repeated step (a resumed run)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise ReportError(f"{path}: not found (is {run_dir} a run directory?)")
    by_step: dict[int, dict[str, Any]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            raise ReportError(f"{path}:{lineno}: expected an object with an integer 'step'")
        by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for rec in records:
        value = rec.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            xs.append(rec["step"])
            ys.append(float(value))
    return xs, ys


def _difficulty_series(records: list[dict[str, Any]], key: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for rec in records:
        for bucket, value in (rec.get(key) or {}).items():
            if isinstance(value, int | float) and math.isfinite(value):
                xs, ys = out.setdefault(bucket, ([], []))
                xs.append(rec["step"])
                ys.append(float(value))
    return out


def last_value(records: list[dict[str, Any]], key: str) -> float | None:
    for rec in reversed(records):
        value = rec.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def step_figure(title: str, ylabel: str, size: tuple[float, float] = (6.4, 3.6)):  # -> (Figure, Axes)
    """A figure with one per-step axis: integer steps on x, a light grid (the plots of run and comparison reports)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=size, dpi=100)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def save_figure(fig, ax, path: Path, legend_size: int = 8) -> Path:  # matplotlib objects
    """Legend (when anything is labelled), tight layout, PNG to `path`, and the figure closed."""
    import matplotlib.pyplot as plt

    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    def figure(name: str, title: str, ylabel: str):
        return (*step_figure(title, ylabel), out_dir / f"{name}.png")

    def save(fig, ax, path: Path) -> None:
        paths.append(save_figure(fig, ax, path))

    fig, ax, path = figure("entropy", "Policy entropy vs target", "mean token entropy (nats)")
    ax.plot(*series(records, "mean_entropy"), marker=".", label="H (mean)")
    for bucket, (xs, ys) in sorted(_difficulty_series(records, "entropy_by_difficulty").items()):
        ax.plot(xs, ys, linestyle=":", label=f"H ({bucket})")
    h0, target = last_value(records, "initial_entropy"), last_value(records, "target_entropy")
    if h0 is not None:
        ax.axhline(h0, color="grey", linestyle="--", label=f"H_0 = {h0:.3f}")
    xs, ys = series(records, "target_entropy")
    if xs:
        ax.plot(xs, ys, color="red", linestyle="--", label=f"H* = {target:.3f}" if target is not None else "H*")
    save(fig, ax, path)

    fig, ax, path = figure("alpha", "Entropy coefficient α", "α")
    ax.plot(*series(records, "alpha"), marker=".", label="α_t")
    for key, label, style in TERMS:  # the controller's terms of α_{t+1} = clip(P + I + D), drawn at t + 1
        xs, ys = series(records, key)
        if xs:
            ax.plot([x + 1 for x in xs], ys, linestyle=style, label=label)
    save(fig, ax, path)

    fig, ax, path = figure("prompt_weight", "Mean per-prompt weight λ", "mean λ")
    ax.plot(*series(records, "mean_prompt_weight"), marker=".", label="mean λ")
    ax.set_ylim(-0.05, 1.05)
    save(fig, ax, path)

    fig, ax, path = figure("accuracy", "Training accuracy", "mean reward")
    ax.plot(*series(records, "accuracy"), marker=".", label="overall")
    for bucket, (xs, ys) in sorted(_difficulty_series(records, "accuracy_by_difficulty").items()):
        ax.plot(xs, ys, marker=".", linestyle="--", label=bucket)
    ax.set_ylim(-0.05, 1.05)
    save(fig, ax, path)

    fig, ax, path = figure("response_length", "Response length", "tokens")
    ax.plot(*series(records, "response_length"), marker=".", label="mean response tokens")
    save(fig, ax, path)
    return paths


def metrics_table(records: list[dict[str, Any]], max_rows: int = 20) -> str:
    """The per-step table of report.md (first and last rows when the run is long); the controller's P, I and D
    terms of the next α where the strategy reported them."""
    terms = [  # the terms the step's report produced: they make the next row's α
        (key, f"next {label.split(' ')[0]}") for key, label, _ in TERMS if any(r.get(key) is not None for r in records)
    ]
    cols = [
        ("step", "step"),
        ("accuracy", "acc"),
        ("mean_entropy", "H"),
        ("target_entropy", "H*"),
        ("alpha", "α"),
        *terms,
        ("mean_prompt_weight", "mean λ"),
        ("response_length", "resp len"),
        ("tokens_per_s", "tok/s"),
        ("step_seconds", "step s"),
    ]
    rows = records
    if len(records) > max_rows:
        half = max_rows // 2
        rows = records[:half] + [None] + records[-half:]  # type: ignore[list-item]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for rec in rows:
        if rec is None:
            lines.append("| … |" + " |" * (len(cols) - 1))
            continue
        lines.append("| " + " | ".join(fmt(rec.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines)


def write_report(run_dir: Path) -> Path:
    """Write plots/*.png and report.md for `run_dir`; returns the report's path."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        raise ReportError(f"{run_dir / 'metrics.jsonl'}: no steps recorded yet")
    plots = write_plots(records, run_dir / "plots")
    config = _read_json(run_dir / "run.json")
    evaluation = _read_json(run_dir / "eval.json")

    first, last = records[0], records[-1]
    out = [f"# aerplane run `{config.get('run_id', run_dir.name)}`", ""]
    out += [
        f"{len(records)} steps, strategy `{config.get('strategy', last.get('strategy', '?'))}`, "
        f"model `{config.get('model', '?')}`, backend `{config.get('backend', '?')}`.",
        "",
        "## Summary",
        "",
        "| | first step | last step |",
        "|---|---|---|",
    ]
    for key, label in [
        ("accuracy", "accuracy"),
        ("mean_entropy", "entropy H"),
        ("target_entropy", "target H*"),
        ("alpha", "α"),
        ("mean_prompt_weight", "mean λ"),
        ("response_length", "response length"),
    ]:
        out.append(f"| {label} | {fmt(first.get(key))} | {fmt(last.get(key))} |")
    h0 = last_value(records, "initial_entropy")
    out += ["", f"Initial entropy H_0 = {fmt(h0)}; target H* = {fmt(last_value(records, 'target_entropy'))}.", ""]
    if evaluation:
        out += ["## Held-out evaluation", ""]
        out += ["| split | problems | k | avg@k | pass@k |", "|---|---|---|---|---|"]
        for split in evaluation.get("splits", []):
            out.append(
                f"| {split['name']} | {split['problems']} | {split['k']} | {fmt(split['avg_at_k'])} | "
                f"{fmt(split['pass_at_k'])} |"
            )
        out.append("")
    out += ["## Plots", ""]
    for p in plots:
        out.append(f"![{p.stem}](plots/{p.name})")
    out += ["", "## Per-step metrics", "", metrics_table(records), ""]
    if config:
        out += ["## Configuration", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(out))
    return path


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc.msg})") from None
    return data if isinstance(data, dict) else {}
