"""`aerplane compare` pieces that need no services: the matrix, the resume plan, evaluation statistics, the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from aerplane.launcher.compare import (
    CompareError,
    CompareState,
    ConfigSpec,
    build_setup,
    load_matrix,
    parse_seeds,
    parse_spec,
    plan,
)
from aerplane.launcher.compare_report import tracking, write_compare_report
from aerplane.launcher.report import ReportError
from aerplane.launcher.up import eval_summary, pass_at_k

# --- the matrix -----------------------------------------------------------------------------------------------------


def test_parse_spec_takes_name_and_parameters() -> None:
    spec = parse_spec("aer:rho=0.8:weighting=uniform")
    assert (spec.strategy, spec.params, spec.label) == ("aer", {"rho": 0.8, "weighting": "uniform"}, spec.label)
    assert spec.slug == "aer-rho-0.8-weighting-uniform"
    numeric, options = spec.numeric_and_options()
    assert numeric == {"rho": 0.8} and options == {"weighting": "uniform"}
    assert parse_spec("fixed:alpha=1e-2").numeric_and_options()[0] == {"alpha": 0.01}
    assert parse_spec("none").params == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus", "unknown strategy"),
        ("aer:rho=2", "rho"),
        ("aer:rhoo=0.5", "rhoo: unknown parameter"),
        ("fixed:alpha", "expected KEY=VALUE"),
        (":alpha=1", "empty strategy name"),
        ("aer:weighting=cubic", "weighting"),
    ],
)
def test_parse_spec_refuses_bad_configurations(text: str, message: str) -> None:
    with pytest.raises(CompareError, match=message):
        parse_spec(text)


def test_parse_seeds() -> None:
    assert parse_seeds("0,1, 2") == (0, 1, 2)
    for bad in ("", "a", "0,0", "-1"):
        with pytest.raises(CompareError, match="--seeds"):
            parse_seeds(bad)


def test_matrix_file_toml_and_yaml(tmp_path: Path) -> None:
    toml = tmp_path / "m.toml"
    toml.write_text(
        "seeds = [0, 1]\n[setup]\nsteps = 12\nlr = 1e-4\n"
        '[[config]]\nstrategy = "none"\n'
        '[[config]]\nlabel = "aer-uniform"\nstrategy = "aer"\nparams = { rho = 0.8, weighting = "uniform" }\n'
        "seeds = [3]\n"
    )
    m = load_matrix(toml)
    assert m["setup"] == {"steps": 12, "lr": 1e-4}
    assert [(c.label, c.seeds) for c in m["configs"]] == [("none", (0, 1)), ("aer-uniform", (3,))]
    assert m["configs"][1].params == {"rho": 0.8, "weighting": "uniform"}

    yaml_file = tmp_path / "m.yaml"
    yaml_file.write_text("seeds: [0]\nsetup: {steps: 3}\nconfig:\n  - {strategy: fixed, params: {alpha: 0.01}}\n")
    m = load_matrix(yaml_file)
    assert m["configs"][0].label == "fixed:alpha=0.01" and m["configs"][0].seeds == (0,)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("steps = 3\n", "unknown key"),
        ('[[config]]\nstrategy = "aer"\nextra = 1\n', "config\\[0\\]: unknown key"),
        ('[[config]]\nlabel = "x"\n', "config\\[0\\]: expected a table with at least `strategy`"),
        ('seeds = []\n[[config]]\nstrategy = "none"\n', "seeds"),
        ("[[config]\n", "m.toml"),
    ],
)
def test_matrix_file_errors_say_where(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(body)
    with pytest.raises(CompareError, match=message):
        load_matrix(path)


def test_setup_refuses_per_run_options() -> None:
    assert build_setup({"steps": 7})["steps"] == 7
    with pytest.raises(CompareError, match="seed"):
        build_setup({"seed": 3})


# --- resuming -------------------------------------------------------------------------------------------------------


def test_plan_resumes_and_refuses_another_setup(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    out.mkdir()
    setup = build_setup({"steps": 4})
    specs = [ConfigSpec("none", "none", {}, (0, 1)), ConfigSpec("aer", "aer", {"rho": 0.8}, (0,))]
    state = plan(out, setup, specs, ["aerplane", "compare"])
    assert sorted(state.runs) == ["aer-s0", "none-s0", "none-s1"]
    # Seed-major order: the first seed of every configuration before any second seed.
    assert [r.key for r in state.ordered_runs()] == ["none-s0", "aer-s0", "none-s1"]
    state.runs["none-s0"].status = "finished"
    state.save()

    again = plan(out, None, [], ["aerplane", "compare", "--out", str(out)])
    assert again.runs["none-s0"].status == "finished" and len(again.history) == 2
    extended = plan(out, setup, [ConfigSpec("aer", "aer", {"rho": 0.8}, (1,))], ["aerplane", "compare"])
    assert "aer-s1" in extended.runs and extended.configs[1].seeds == (0, 1)
    with pytest.raises(CompareError, match=r"another setup: steps \(4 there, 5 now\)"):
        plan(out, build_setup({"steps": 5}), specs, ["aerplane", "compare"])
    with pytest.raises(CompareError, match="other parameters"):
        plan(out, setup, [ConfigSpec("aer", "aer", {"rho": 0.7}, (0,))], ["aerplane", "compare"])
    with pytest.raises(CompareError, match="holds no comparison"):
        plan(tmp_path / "empty", None, [], ["aerplane", "compare"])
    assert CompareState.load(out) is not None


# --- evaluation statistics ------------------------------------------------------------------------------------------


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    assert pass_at_k(8, 0, 4) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(2 / 8)
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - math.comb(6, 4) / math.comb(8, 4))
    assert pass_at_k(8, 5, 4) == 1.0  # fewer than k wrong samples: every draw of k holds a right one


def test_eval_summary_k_standard_error_and_buckets() -> None:
    rewards = {"a": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], "b": [0.0] * 8, "c": [1.0] * 8, "d": [0.01] * 8}
    difficulty = {"a": "easy", "b": "hard", "c": "easy", "d": "hard"}
    s = eval_summary(rewards, difficulty, 8)
    assert set(s["by_k"]) == {"1", "4", "8"} and s["k"] == 8 and s["problems"] == 4
    assert s["by_k"]["1"]["avg"] == pytest.approx((1 + 0 + 1 + 0.01) / 4)
    assert s["by_k"]["4"]["avg"] == pytest.approx((0.25 + 0 + 1 + 0.01) / 4)
    assert s["avg_at_k"] == s["by_k"]["8"]["avg"] == pytest.approx((0.25 + 0 + 1 + 0.01) / 4)
    # pass@k counts reward 1 only (0.01 partial credit is not a pass).
    assert s["by_k"]["8"]["pass"] == pytest.approx(0.5)
    assert s["by_k"]["1"]["pass"] == pytest.approx((0.25 + 0 + 1 + 0) / 4)
    per_problem = [0.25, 0.0, 1.0, 0.01]
    mean = sum(per_problem) / 4
    se = math.sqrt(sum((x - mean) ** 2 for x in per_problem) / 3 / 4)
    assert s["avg_at_k_se"] == pytest.approx(se)
    assert s["avg_at_k_by_difficulty"] == pytest.approx({"easy": 0.625, "hard": 0.005})
    assert set(eval_summary({"a": [1.0, 0.0]}, {"a": "x"}, 2)["by_k"]) == {"1", "2"}


# --- the report -----------------------------------------------------------------------------------------------------


def test_tracking_error_counts_from_the_first_positive_alpha() -> None:
    recs = [
        {"step": 0, "alpha": 0.0, "mean_entropy": 2.0, "target_entropy": 1.0},
        {"step": 1, "alpha": 0.0, "mean_entropy": 1.5, "target_entropy": 1.0},
        {"step": 2, "alpha": 0.001, "mean_entropy": 0.9, "target_entropy": 1.0},
        {"step": 3, "alpha": 0.002, "mean_entropy": 1.3, "target_entropy": 1.0},
    ]
    t = tracking(recs)
    assert t["first_positive_alpha_step"] == 2 and t["tracked_steps"] == 2
    assert t["tracking_error"] == pytest.approx((0.1 + 0.3) / 2)
    assert t["within_band"] == pytest.approx(0.5)
    assert tracking(recs[:2])["tracking_error"] is None


def test_tracking_from_engagement_counts_from_the_first_step_near_the_target() -> None:
    """α > 0 from the first step (a floor α_min) would count the approach from H_0; H ≤ 1.2·H* does not."""
    recs = [
        {"step": 0, "alpha": 0.01, "mean_entropy": 2.0, "target_entropy": 1.0},
        {"step": 1, "alpha": 0.01, "mean_entropy": 1.5, "target_entropy": 1.0},
        {"step": 2, "alpha": 0.01, "mean_entropy": 1.1, "target_entropy": 1.0},
        {"step": 3, "alpha": 0.02, "mean_entropy": 0.6, "target_entropy": 1.0},
    ]
    t = tracking(recs)
    assert t["tracking_error"] == pytest.approx((1.0 + 0.5 + 0.1 + 0.4) / 4) and t["within_band"] == 0.25
    assert t["engaged_step"] == 2 and t["tracked_steps_engaged"] == 2
    assert t["tracking_error_engaged"] == pytest.approx(0.25) and t["within_band_engaged"] == 0.5
    assert t["min_entropy_ratio"] == pytest.approx(0.6)
    never = tracking([{"step": 0, "alpha": 0.0, "mean_entropy": 3.0, "target_entropy": 1.0}])
    assert (never["engaged_step"], never["tracking_error_engaged"], never["min_entropy_ratio"]) == (None, None, 3.0)


def _fake_run(run_dir: Path, alphas: list[float], entropies: list[float], avg: float) -> None:
    """A run directory as `aerplane up` leaves it (metrics.jsonl and eval.json), written by hand."""
    run_dir.mkdir(parents=True)
    rows = [
        {
            "step": i,
            "alpha": a,
            "mean_entropy": h,
            "target_entropy": 1.0,
            "initial_entropy": 2.0,
            "mean_prompt_weight": 1.0,
            "accuracy": 0.1,
            "response_length": 50.0,
        }
        for i, (a, h) in enumerate(zip(alphas, entropies, strict=True))
    ]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = eval_summary({"p": [avg] * 8, "q": [0.0] * 8}, {"p": "easy", "q": "hard"}, 8)
    (run_dir / "eval.json").write_text(json.dumps({"splits": [summary]}))


def test_compare_report_aggregates_seeds(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    out.mkdir()
    specs = [ConfigSpec("none", "none", {}, (0, 1)), ConfigSpec("aer", "aer", {}, (0,))]
    state = plan(out, build_setup({}), specs, ["aerplane", "compare", "--strategies", "none,aer"])
    _fake_run(out / "runs" / "none-s0", [0, 0, 0], [2.0, 1.5, 0.8], 1.0)
    _fake_run(out / "runs" / "none-s1", [0, 0, 0], [2.0, 1.4, 0.6], 0.0)
    _fake_run(out / "runs" / "aer-s0", [0, 0.001, 0.002], [2.0, 0.9, 1.1], 1.0)
    for key, wall in (("none-s0", 60.0), ("none-s1", 120.0), ("aer-s0", 90.0)):
        state.runs[key].status, state.runs[key].wall_seconds = "finished", wall
    state.save()
    report = write_compare_report(out).read_text()
    results = json.loads((out / "results.json").read_text())
    none = next(c for c in results["configs"] if c["label"] == "none")["summary"]
    assert none["eval"]["8"]["avg"]["mean"] == pytest.approx(0.25)
    assert none["eval"]["8"]["avg"]["std"] == pytest.approx(math.sqrt(2 * 0.25**2))
    assert none["final_entropy"]["mean"] == pytest.approx(0.7) and none["min_entropy"]["mean"] == pytest.approx(0.7)
    assert none["wall_seconds"]["mean"] == pytest.approx(90.0)
    assert none["tracking_error"]["mean"] is None
    aer = next(c for c in results["configs"] if c["label"] == "aer")["summary"]
    assert aer["tracking_error"]["mean"] == pytest.approx((0.1 + 0.1) / 2)
    assert aer["eval"]["8"]["avg"]["std"] is None  # one seed: no spread
    assert "| `none` | 2 | 0.250 ± 0.354 |" in report
    assert "within the seed spread" in report
    # The runs table counts each run's steps (3), whatever the tracking counted after α moved (2 steps for aer).
    assert "| `aer` | 0 | [aer-s0](runs/aer-s0/report.md) | 3 |" in report
    assert (out / "plots" / "entropy.png").stat().st_size > 1000
    assert "err from H≤1.2H*" in report and aer["tracking_error_engaged"]["mean"] == pytest.approx(0.1)
    # one small panel per configuration: two configurations side by side, one row
    import matplotlib.image

    height, width = matplotlib.image.imread(out / "plots" / "entropy.png").shape[:2]
    assert (width, height) == (round(3.6 * 2 * 110), round((2.6 + 0.6) * 110))


# --- CPU split between vLLM and the learner (aerplane up on a CPU-only machine) --------------------------------------


def test_cpu_split_gives_vllm_and_the_learner_their_own_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from aerplane.launcher import up

    monkeypatch.setattr(up, "_has_cuda", lambda: False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(up.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert up.cpu_split("vllm") == {
        "generation": {"VLLM_CPU_OMP_THREADS_BIND": "0"},
        "learner": {"OMP_NUM_THREADS": "1"},
    }
    monkeypatch.setattr(up.os, "sched_getaffinity", lambda _pid: set(range(4, 12)))
    assert up.cpu_split("vllm") == {
        "generation": {"VLLM_CPU_OMP_THREADS_BIND": "4,5,6,7"},
        "learner": {"OMP_NUM_THREADS": "4"},
    }
    assert up.cpu_split("transformers") == {}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
    assert up.cpu_split("vllm")["learner"] == {}
    monkeypatch.setattr(up, "_has_cuda", lambda: True)
    assert up.cpu_split("vllm") == {}
    monkeypatch.setattr(up, "_has_cuda", lambda: False)
    monkeypatch.setattr(up.os, "sched_getaffinity", lambda _pid: {0})
    assert up.cpu_split("vllm") == {}


def test_seed_table_spans_comparison_folders(tmp_path: Path) -> None:
    from aerplane.launcher.compare_report import seed_table

    folders = []
    for name, seed, entropies in (("a", 1, [2.0, 0.9, 1.1]), ("b", 3, [2.0, 1.0, 0.7])):
        out = tmp_path / name
        out.mkdir()
        state = plan(out, build_setup({}), [ConfigSpec("aer", "aer", {}, (seed,))], ["aerplane", "compare"])
        _fake_run(out / "runs" / f"aer-s{seed}", [0, 0.001, 0.002], entropies, 1.0)
        state.runs[f"aer-s{seed}"].status = "finished"
        state.save()
        folders.append(out)
    lines = seed_table(folders, ["aer"])
    assert lines[2].startswith("| `aer` | 1 | 0.100 | 1.00 |") and lines[2].endswith("| a |")
    assert lines[3].startswith("| `aer` | 3 | 0.150 | 0.50 |") and lines[3].endswith("| b |")
    assert lines[4].startswith("| **`aer`, mean of 2** | | 0.125 ± 0.035 |")
    assert "0.500 ± 0.000 (SE 0.500)" in lines[4]  # avg@8 of p (1.0) and q (0.0) on both seeds
    with pytest.raises(ReportError, match="no finished run of 'PID'"):
        seed_table(folders, ["aer", "PID"])
