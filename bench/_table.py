"""`make bench`: every benchmark in bench/, one after another, then one table of every headline figure with its
baseline, ratio and target, written to a JSON file.

    .venv/bin/python bench/_table.py                       # every bench, default sizes
    .venv/bin/python bench/_table.py reward overhead       # some of them
    .venv/bin/python bench/_table.py --out runs/bench.json

Each `bench/<name>.py` prints its own tables and ends with JSON lines (DESIGN §7): `bench`, `metric`, `value` (the
ratio or figure), `baseline`, `target`, `better`, `figures`. They are collected as the benches print them, and the
summary marks each against its target (`ok` / `MISSED`; `–` where a metric has none). Benchmarks report, they never
assert: the exit status is the benches' own (a bench that crashed), not whether targets were met.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def benches() -> list[str]:
    return sorted(p.stem for p in BENCH.glob("[!_]*.py"))


def run_bench(name: str) -> tuple[int, list[dict]]:
    """Run bench/<name>.py, echoing its output; returns its exit status and its JSON lines."""
    lines: list[dict] = []
    proc = subprocess.Popen([sys.executable, str(BENCH / f"{name}.py")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith('{"bench"'):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return proc.wait(), lines


def verdict(line: dict) -> str:
    target, value = line.get("target"), line.get("value")
    if target is None or value is None:
        return "–"
    met = value <= target if line.get("better") == "lower" else value >= target
    return "ok" if met else "MISSED"


def summary_table(results: list[dict]) -> str:
    """One line per headline figure, the columns as wide as their longest entry."""
    rows = [("bench", "metric", "value", "target", "", "baseline")]
    for line in results:
        better = "≤" if line.get("better") == "lower" else "≥"
        target = "" if line.get("target") is None else f"{better}{line['target']}"
        rows.append(
            (line["bench"], line["metric"], str(line["value"]), target, verdict(line), line.get("baseline", ""))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        f"{b:<{widths[0]}}  {m:<{widths[1]}}  {v:>{widths[2]}}  {t:>{widths[3]}}  {d:<{widths[4]}}  {base}".rstrip()
        for b, m, v, t, d, base in rows
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"benches to run (default all: {', '.join(benches())})")
    parser.add_argument("--out", default=None, help="JSON file (default runs/bench-<time>.json)")
    args = parser.parse_args()
    names = args.names or benches()
    unknown = sorted(set(names) - set(benches()))
    if unknown:
        parser.error(f"no such bench: {', '.join(unknown)} (have {', '.join(benches())})")

    results: list[dict] = []
    failed: list[str] = []
    for name in names:
        print(f"\n=== bench/{name}.py ===", flush=True)
        started = time.monotonic()
        code, lines = run_bench(name)
        if code != 0:
            failed.append(name)
        for line in lines:
            line["seconds"] = round(time.monotonic() - started, 1)
        results += lines

    print("\n=== every headline figure ===")
    print(summary_table(results))
    out = Path(args.out) if args.out else ROOT / "runs" / time.strftime("bench-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": {"platform": platform.platform(), "python": platform.python_version()},
                "benches": names,
                "failed": failed,
                "results": [{**line, "verdict": verdict(line)} for line in results],
            },
            indent=2,
        )
    )
    print(f"\nwritten: {out}")
    if failed:
        print(f"benches that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
