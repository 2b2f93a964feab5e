"""`aerplane simulate` through the real CLI entry point, with hand-computed traces."""

from __future__ import annotations

import json

import pytest

from aerplane.cli import main


def run_json(capsys, *argv):
    code = main(["simulate", "--json", *argv])
    out = capsys.readouterr().out
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_synthetic_closed_loop_fixed_alpha(capsys):
    # λ ≡ 1, noise 0: H_{t+1} = 0.5·H_t + 10·0.01 → 1.0, 0.6, 0.4, 0.3
    rows = run_json(
        capsys,
        "--strategy",
        "fixed",
        "--alpha",
        "0.01",
        "--steps",
        "4",
        "--h0",
        "1.0",
        "--decay",
        "0.5",
        "--response",
        "10",
        "--noise",
        "0",
    )
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert [r["entropy"] for r in rows] == pytest.approx([1.0, 0.6, 0.4, 0.3])
    assert all(r["alpha"] == 0.01 and r["mean_weight"] == 1.0 for r in rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_synthetic_none_collapses(capsys):
    rows = run_json(capsys, "--strategy", "none", "--steps", "3", "--h0", "1.0", "--decay", "0.5", "--noise", "0")
    assert [r["entropy"] for r in rows] == pytest.approx([1.0, 0.5, 0.25])
    assert all(r["alpha"] == 0.0 and r["target_entropy"] is None for r in rows)


def test_aer_slows_the_collapse_compared_to_none(capsys):
    common = ["--steps", "80", "--noise", "0", "--seed", "3"]
    none = run_json(capsys, "--strategy", "none", *common)
    aer = run_json(capsys, "--strategy", "aer:eta=2e-3", *common)
    assert aer[0]["target_entropy"] == pytest.approx(0.75)  # 0.5 · H_0 = 0.5 · 1.5
    assert aer[-1]["entropy"] > none[-1]["entropy"]
    assert max(r["alpha"] for r in aer) > 0.0


def write_metrics(tmp_path, records, tail=""):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def test_replay_recorded_metrics_hand_computed(tmp_path, capsys):
    # AER defaults: H_0 = 2 → H* = 1; α used: step0 0, step1 0, step2 1e-3·(1 − 0.5) = 5e-4, step3 5e-4 − 5e-4 = 0
    # λ (threshold τ = 0.4) for accuracies [0, 0.5] = [1, 0] → mean 0.5
    records = [
        {"step": s, "mean_entropy": h, "prompt_accuracies": [0.0, 0.5], "accuracy": 0.25}
        for s, h in enumerate([2.0, 0.5, 1.5, 3.0])
    ]
    path = write_metrics(tmp_path, records)
    rows = run_json(capsys, "--from-metrics", str(path))
    assert [r["entropy"] for r in rows] == [2.0, 0.5, 1.5, 3.0]
    assert [r["alpha"] for r in rows] == pytest.approx([0.0, 0.0, 5e-4, 0.0], abs=1e-15)
    assert [r["next_alpha"] for r in rows] == pytest.approx([0.0, 5e-4, 0.0, 0.0], abs=1e-15)
    assert all(r["target_entropy"] == 1.0 and r["initial_entropy"] == 2.0 for r in rows)
    assert all(r["mean_weight"] == 0.5 and r["accuracy"] == 0.25 for r in rows)


def test_replay_uses_mean_accuracy_last_record_per_step_and_skips_cut_line(tmp_path, capsys):
    records = [
        {"step": 0, "mean_entropy": 1.0, "accuracy": 0.9},
        {"step": 1, "mean_entropy": 9.0, "accuracy": 0.9},
        {"step": 1, "mean_entropy": 0.4, "accuracy": 0.1},  # resumed run: this one wins
    ]
    path = write_metrics(tmp_path, records, tail='{"step": 2, "mean_ent')
    rows = run_json(capsys, "--from-metrics", str(path), "--tau", "0.5")
    assert [r["step"] for r in rows] == [0, 1]
    assert [r["entropy"] for r in rows] == [1.0, 0.4]
    assert [r["mean_weight"] for r in rows] == [0.0, 1.0]  # acc 0.9 > τ, acc 0.1 ≤ τ


def test_table_output(capsys):
    assert main(["simulate", "--steps", "5", "--strategy", "skywork:target_entropy=2.0"]) == 0
    out = capsys.readouterr().out
    assert "H*" in out and "mean λ" in out and "skywork" in out
    assert "1.000e-04" in out  # H = 1.5 < 2.0 after step 0: α = δ = 1e-4 from step 1 on


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--strategy", "aer:eta=-1"], "eta: must be >= 0"),
        (["--strategy", "aer:rho"], "--strategy (simulate.strategy): expected KEY=VALUE, got 'rho'"),
        (["--strategy", "skywork:rho=0.5"], "rho: unknown parameter for strategy 'skywork'"),
        (["--eta", "-1"], "eta: must be >= 0"),  # the old spellings, still read
        (["--strategy", "skywork", "--rho", "0.5"], "rho: unknown parameter for strategy 'skywork'"),
        (["--param", "rho=abc"], "rho: must be a number"),
        (["--param", "rho"], "--param: expected KEY=VALUE"),
        (["--param", "eta=nan"], "eta: must be finite"),
        (["--strategy", "bogus"], "strategy: unknown strategy 'bogus'"),
        (["--steps", "0"], "--steps (simulate.steps): Input should be greater than or equal to 1"),
        (["--h0", "inf"], "--h0 (simulate.initial_entropy): Input should be a finite number"),
        (["--weighting", "cubic"], "weighting: must be one of threshold, linear, uniform"),
        (["--from-metrics", "/nonexistent/metrics.jsonl"], "--from-metrics: cannot read"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(["simulate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aerplane simulate: ") and message in err and "\n" not in err


def test_bad_metrics_values(tmp_path, capsys):
    path = write_metrics(tmp_path, [{"step": 0, "mean_entropy": float("nan")}])
    assert main(["simulate", "--from-metrics", str(path)]) == 2
    assert "metrics.jsonl:1: mean_entropy: must be finite" in capsys.readouterr().err
    path = write_metrics(tmp_path, [{"step": 0, "mean_entropy": 1.0, "prompt_accuracies": [0.5, 1.5]}])
    assert main(["simulate", "--from-metrics", str(path)]) == 2
    assert "accuracies[1]: must be within [0, 1]" in capsys.readouterr().err
