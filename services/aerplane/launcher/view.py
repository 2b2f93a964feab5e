"""The live terminal view of `aerplane up` (rich), and its plain-line fallback for logs and CI.

The view only reads: the learner's last `metrics.jsonl` record and the coefficient service's REST state, so it can
never slow the run down or change it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def _display_step(rec: dict[str, Any]) -> str:
    """Steps are 0-based in metrics.jsonl; people count the steps done."""
    step = rec.get("step")
    return str(step + 1) if isinstance(step, int) else "–"


class PlainView:
    """One line per step: what CI logs and `aerplane up > file` show."""

    def __init__(self, total_steps: int, urls: dict[str, str], curl: str) -> None:
        self.total = total_steps
        self._last_step: int | None = None
        print(f"console: {urls['console']}  (watch and steer the run in a browser)", flush=True)
        print(f"REST API: {urls['rest']}  (docs: {urls['docs']})", flush=True)
        print(f"override α: {curl}", flush=True)
        print("metrics: " + "  ".join(f"{k}={v}" for k, v in urls.items() if k.startswith("metrics:")), flush=True)

    def status(self, text: str) -> None:
        print(text, flush=True)

    def event(self, text: str) -> None:
        """A supervision event (a service exited, restarted, recovered)."""
        print(f"[supervisor] {text}", flush=True)

    def update(self, rec: dict[str, Any] | None, state: dict[str, Any] | None) -> None:
        if not rec or rec.get("step") == self._last_step:
            return
        self._last_step = rec.get("step")
        print(
            f"step {_display_step(rec)}/{self.total}  acc {fmt(rec.get('accuracy'), 3)}  "
            f"H {fmt(rec.get('mean_entropy'))} (H* {fmt(rec.get('target_entropy'))})  α {fmt(rec.get('alpha'))}  "
            f"mean λ {fmt(rec.get('mean_prompt_weight'), 3)}  tok/s {fmt(rec.get('tokens_per_s'), 1)}  "
            f"step {fmt(rec.get('step_seconds'), 1)}s",
            flush=True,
        )

    def close(self) -> None:
        return


class LiveView:
    """A rich Live panel: progress with ETA, the AER readings, and where to reach the run."""

    def __init__(self, total_steps: int, urls: dict[str, str], curl: str, title: str) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.total = total_steps
        self.urls = urls
        self.curl = curl
        self.title = title
        self.console = Console(stderr=False)
        self.progress = Progress(
            TextColumn("[bold]steps"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            speed_estimate_period=3600,  # a step takes tens of seconds: estimate the ETA over the whole run
        )
        self.task = self.progress.add_task("steps", total=total_steps)
        self.status_text = "starting…"
        self.events: list[str] = []  # the last supervision events, newest last
        self.rec: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.started = time.monotonic()
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def status(self, text: str) -> None:
        self.status_text = text
        self.live.update(self._render())

    def event(self, text: str) -> None:
        self.events = [*self.events[-2:], f"{time.strftime('%H:%M:%S')} {text}"]
        self.live.update(self._render())

    def update(self, rec: dict[str, Any] | None, state: dict[str, Any] | None) -> None:
        if rec:
            self.rec = rec
            step = rec.get("step")
            if isinstance(step, int):
                self.progress.update(self.task, completed=min(step + 1, self.total))
        if state:
            self.state = state
        self.live.update(self._render())

    def _render(self):  # a rich renderable
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table

        r, s = self.rec, self.state
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_column(style="bold")
        table.add_column()
        h0 = s.get("initial_entropy", r.get("initial_entropy"))
        target = s.get("target_entropy", r.get("target_entropy"))
        table.add_row("step", _display_step(r), "accuracy", fmt(r.get("accuracy"), 3))
        table.add_row("entropy H", fmt(r.get("mean_entropy")), "target H*", fmt(target))
        table.add_row("H_0", fmt(h0), "α (next)", fmt(s.get("alpha", r.get("alpha"))))
        table.add_row("mean λ", fmt(r.get("mean_prompt_weight"), 3), "tokens/s", fmt(r.get("tokens_per_s"), 1))
        table.add_row("resp len", fmt(r.get("response_length"), 1), "step time", fmt(r.get("step_seconds"), 1) + " s")
        if s.get("alpha_pinned") or s.get("frozen"):
            table.add_row("override", "α pinned" if s.get("alpha_pinned") else "", "frozen", str(bool(s.get("frozen"))))
        links = Table.grid(padding=(0, 1))
        links.add_column(style="cyan")
        links.add_column()
        links.add_row("console", f"{self.urls['console']}   (watch and steer the run in a browser)")
        links.add_row("REST API", f"{self.urls['rest']}   docs: {self.urls['docs']}")
        for key, url in self.urls.items():
            if key.startswith("metrics:"):
                links.add_row(key.replace("metrics:", "metrics "), url)
        links.add_row("override α", self.curl)
        events = [f"[yellow]{e}[/yellow]" for e in self.events]
        return Panel(
            Group(self.progress, table, links, *events, f"[dim]{self.status_text}[/dim]"), title=self.title, expand=True
        )

    def close(self) -> None:
        self.live.stop()


def make_view(live: bool | None, total_steps: int, urls: dict[str, str], curl: str, title: str):
    if live is None:
        live = sys.stdout.isatty()
    if live:
        return LiveView(total_steps, urls, curl, title)
    return PlainView(total_steps, urls, curl)
