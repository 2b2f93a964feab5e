"""`aerplane report`: plots and report.md from a run directory's files, and clear errors on bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aerplane.cli import main
from aerplane.launcher.report import ReportError, metrics_table, read_metrics, write_report


def _run_dir(tmp_path: Path, steps: int = 4) -> Path:
    rows = []
    for s in range(steps):
        rows.append(
            {
                "step": s,
                "alpha": 0.001 * s,
                "mean_entropy": 2.0 - 0.3 * s,
                "initial_entropy": 2.0,
                "target_entropy": 1.0,
                "mean_prompt_weight": 0.5,
                "accuracy": 0.1 * s,
                "response_length": 50.0 + s,
                "accuracy_by_difficulty": {"easy": 0.2 * s, "hard": 0.0},
                "entropy_by_difficulty": {"easy": 1.9},
                "tokens_per_s": 100.0,
                "step_seconds": 3.0,
            }
        )
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "r-test", "strategy": "aer", "model": "tiny"}))
    evaluation = {"name": "rg-heldout", "problems": 16, "k": 4, "avg_at_k": 0.25, "pass_at_k": 0.5}
    (tmp_path / "eval.json").write_text(json.dumps({"splits": [evaluation]}))
    return tmp_path


def test_report_embeds_every_plot_and_states_the_numbers(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert text.startswith("# aerplane run `r-test`")
    for name in ("entropy", "alpha", "prompt_weight", "accuracy", "response_length"):
        png = run / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name}.png)" in text
    assert "| rg-heldout | 16 | 4 | 0.2500 | 0.5000 |" in text
    assert "| entropy H | 2.0000 | 1.1000 |" in text  # first and last step
    assert "H_0 = 2.0000; target H* = 1.0000" in text


def test_a_resumed_run_keeps_the_last_record_of_a_step(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, steps=3)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 1, "alpha": 0.5}) + "\n")
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[1] == {"step": 1, "alpha": 0.5}


def test_long_runs_show_first_and_last_rows() -> None:
    table = metrics_table([{"step": s} for s in range(100)], max_rows=10)
    steps = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert steps == ["0", "1", "2", "3", "4", "…", "95", "96", "97", "98", "99"]


def test_bad_run_directories_fail_with_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.jsonl: not found" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{oops\n')
    with pytest.raises(ReportError, match=r"metrics.jsonl:2: not JSON"):
        write_report(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": "zero"}\n')
    with pytest.raises(ReportError, match=r"metrics.jsonl:1: expected an object with an integer 'step'"):
        write_report(tmp_path)


def test_a_comparison_continued_with_another_command_says_so() -> None:
    from aerplane.launcher.compare_report import _continued

    first = ["aerplane", "compare", "--matrix", "old.toml", "--out", "o"]
    again = ["aerplane", "compare", "--matrix", "new.toml", "--out", "o"]
    assert _continued([{"command": first, "git_revision": "a" * 40}], first, "a" * 40) == []
    history = [{"command": first, "git_revision": "a" * 40}, {"command": again, "git_revision": "b" * 40}]
    (line,) = _continued(history, first, "a" * 40)
    assert "new.toml" in line and "2 invocations" in line and "b" * 12 in line


def test_the_step_table_shows_the_controllers_terms_only_where_reported(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    assert "next P" not in metrics_table(read_metrics(run))  # a strategy without terms: no empty columns
    rows = read_metrics(run)
    for i, r in enumerate(rows):  # the anchoring step has no update; later ones split the next α
        terms = (None, None, None) if i == 0 else (0.01, 0.002, -0.005)
        r.update(zip(("p_term", "i_term", "d_term"), terms, strict=True))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    table = metrics_table(read_metrics(run)).splitlines()
    assert table[0] == "| step | acc | H | H* | α | next P | next I | next D | mean λ | resp len | tok/s | step s |"
    assert "| 0.0010 | 0.0100 | 0.0020 | -0.0050 |" in table[3] and "| – | – | – |" in table[2]
    assert main(["report", str(run)]) == 0 and (run / "plots" / "alpha.png").stat().st_size > 1000
