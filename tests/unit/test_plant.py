"""The fitted entropy plant of `aerplane simulate`: the fit recovers a known plant, the preset loads, the Monte Carlo
figures follow their definitions, and the command line says what is wrong with bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aerplane.core.strategies import build_strategy
from aerplane.launcher.plant import (
    PRESETS_DIR,
    PlantError,
    PlantModel,
    Variant,
    evaluate,
    fit_plant,
    tracking,
    worst,
)

AERPLANE = str(Path(sys.executable).parent / "aerplane")
TRUE = PlantModel(
    k=0.25,
    g=8.0,
    beta=0.5,
    sigma0=0.05,
    variants=(Variant("seed 0", a=-0.4, h0=1.0, accuracy=0.3), Variant("seed 1", a=-0.2, h0=0.8, accuracy=0.3)),
)


def write_run(path: Path, seed: int, entropies: list[float], alphas: list[float], weights: list[float]) -> Path:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"seed": seed, "prompts_per_step": 4, "samples_per_prompt": 8}))
    lines = [
        json.dumps({"step": t, "mean_entropy": h, "alpha": a, "mean_prompt_weight": w, "accuracy": 0.3, "samples": {}})
        for t, (h, a, w) in enumerate(zip(entropies, alphas, weights, strict=True))
    ]
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path


def simulate_recorded(tmp_path: Path, plant: PlantModel, runs: int = 12, steps: int = 40) -> list[Path]:
    """Runs of a known plant with a varied α schedule (what real runs with different strategies give)."""
    rng = np.random.default_rng(7)
    dirs = []
    for r in range(runs):
        variant = plant.variants[r % len(plant.variants)]
        z, m = math.log(variant.h0), 0.0
        hs, alphas, weights = [], [], []
        for _ in range(steps):
            alpha = float(rng.choice([0.0, 0.01, 0.03, 0.05])) if r % 3 else 0.0
            w = float(rng.uniform(0.3, 1.0))
            hs.append(math.exp(z))
            alphas.append(alpha)
            weights.append(w)
            m = plant.beta * m + (1 - plant.beta) * alpha * w
            z = z + variant.a - plant.k * z + plant.g * m + plant.sigma0 * rng.standard_normal()
        seed = int(variant.name.split()[-1])
        dirs.append(write_run(tmp_path / f"run-{r}", seed, hs, alphas, weights))
    return dirs


def test_the_fit_recovers_a_known_plant(tmp_path):
    plant = fit_plant(simulate_recorded(tmp_path, TRUE))
    assert plant.k == pytest.approx(TRUE.k, abs=0.03)
    assert plant.g == pytest.approx(TRUE.g, rel=0.25)
    assert abs(plant.beta - TRUE.beta) <= 0.2
    assert [v.a for v in plant.variants] == pytest.approx([-0.4, -0.2], abs=0.04)
    assert plant.fit["residual_sd"] == pytest.approx(0.05, rel=0.25)
    assert 0 < plant.fit["explained_variance"] <= 1
    assert plant.fit["transitions"] == 12 * 39
    assert plant.sigma0 + plant.sigma1 * -0.5 == pytest.approx(0.05, rel=0.4)


def test_lag_variants_refit_at_their_own_beta(tmp_path):
    plant = fit_plant(simulate_recorded(tmp_path, TRUE), lag_variants=(0.9,))
    lagged = [v for v in plant.variants if v.beta == 0.9]
    assert [v.name for v in lagged] == ["seed 0, β 0.9", "seed 1, β 0.9"]
    assert lagged[0].g != plant.g and lagged[0].k is not None


def test_a_saved_plant_reads_back_equal(tmp_path):
    plant = fit_plant(simulate_recorded(tmp_path, TRUE), description="test")
    plant.save(tmp_path / "p.json")
    assert PlantModel.load(tmp_path / "p.json") == plant


def test_the_shipped_preset_is_the_fit_of_the_recorded_runs():
    preset = PlantModel.load(Path("reference-cpu"))
    assert preset == PlantModel.load(PRESETS_DIR / "reference-cpu.json")
    assert [v.name for v in preset.variants][:3] == ["seed 0", "seed 1", "seed 2"]
    assert 0.15 < preset.k < 0.35 and preset.g > 0 and 0 <= preset.beta <= 0.9
    assert 0.25 < preset.fit["residual_sd"] < 0.45
    root = Path(__file__).resolve().parents[2]
    dirs = [root / name for name in preset.fit["runs"]]
    assert len(dirs) == 22
    assert all((d / "metrics.jsonl").exists() for d in dirs)
    refit = fit_plant(dirs, description=preset.description, lag_variants=(0.5,))
    assert refit.k == pytest.approx(preset.k, rel=1e-9) and refit.g == pytest.approx(preset.g, rel=1e-9)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "expected a JSON object"),
        ('{"format": 9, "kind": "log-lag"}', "format 1"),
        ('{"format": 1, "kind": "log-lag", "k": 0.1}', "malformed plant"),
    ],
)
def test_a_bad_plant_file_is_refused_naming_it(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PlantError, match=message):
        PlantModel.load(path)


def test_a_run_without_alpha_cannot_identify_the_gain(tmp_path):
    d = write_run(tmp_path / "r", 0, [1.0, 0.8, 0.7, 0.6], [0.0] * 4, [1.0] * 4)
    with pytest.raises(PlantError, match="no run used α > 0"):
        fit_plant([d])


def test_tracking_counts_from_alpha_or_from_engagement():
    h = np.array([[2.0, 1.0, 0.5, 0.5, 1.0]])
    target = np.array([[np.nan, 0.5, 0.5, 0.5, 0.5]])
    alpha = np.array([[0.0, 0.01, 0.01, 0.0, 0.0]])
    err, band = tracking(h, target, alpha, start="alpha")  # steps 1-4: errors 1, 0, 0, 1
    assert (err[0], band[0]) == (0.5, 0.5)
    err, band = tracking(h, target, alpha, start="engaged")  # from step 2 (H ≤ 0.6): 0, 0, 1
    assert err[0] == pytest.approx(1 / 3) and band[0] == pytest.approx(2 / 3)
    never = tracking(np.array([[2.0, 2.0]]), np.array([[1.0, 1.0]]), np.zeros((1, 2)), start="engaged")
    assert math.isnan(never[0][0])


def test_monte_carlo_is_reproducible_and_a_bonus_raises_entropy():
    plant = PlantModel.load(Path("reference-cpu"))
    fixed = build_strategy("fixed", alpha=0.04)
    none = build_strategy("none")
    aer = build_strategy("aer", eta=0.01, alpha_max=0.03)
    a, first = evaluate(plant, aer, 20, draws=50, seed=3)
    b, again = evaluate(plant, aer, 20, draws=50, seed=3)
    assert a == b and all(math.isfinite(s.error) for s in a)
    assert all(np.array_equal(first[n]["H"], again[n]["H"]) for n in first)
    _, with_bonus = evaluate(plant, fixed, 30, draws=50, seed=3)
    _, without = evaluate(plant, none, 30, draws=50, seed=3)
    for name in with_bonus:
        assert np.nanmean(with_bonus[name]["H"][:, -5:]) > np.nanmean(without[name]["H"][:, -5:])
    assert worst(a) == max(s.error for s in a)


def test_the_pid_terms_are_traced():
    plant = PlantModel.load(Path("reference-cpu"))
    _, traces = evaluate(plant, build_strategy("aer", kp=0.05, eta=0.005, alpha_max=0.05), 10, draws=3)
    p, i, alpha = traces["seed 0"]["p"], traces["seed 0"]["i"], traces["seed 0"]["alpha"]
    assert np.isnan(p[:, 0]).all() and np.isfinite(p[:, 1:]).all()
    assert np.allclose(alpha[:, 2:], np.clip(p[:, 1:-1] + i[:, 1:-1] + traces["seed 0"]["d"][:, 1:-1], 0, 0.05))


# --- the command line -----------------------------------------------------------------------------------------------
def simulate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AERPLANE, "simulate", *args], capture_output=True, text=True, timeout=300)


def test_fit_then_plant_from_the_command_line(tmp_path):
    dirs = simulate_recorded(tmp_path, TRUE, runs=6, steps=20)
    out = tmp_path / "plant.json"
    fitted = simulate("--fit", *map(str, dirs), "--out", str(out))
    assert fitted.returncode == 0, fitted.stderr
    assert "residual SD" in fitted.stdout and "explained variance" in fitted.stdout
    table = simulate(
        "--plant", str(out), "--strategy", "aer", "--kp", "0.05", "--alpha-max", "0.05", "--draws", "20",
        "--horizons", "10", "--baseline", "aer:eta=0.01:alpha_max=0.03", "--plot", str(tmp_path / "bands.png"),
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "worst variant" in table.stdout and "err ratio" in table.stdout
    assert (tmp_path / "bands.png").stat().st_size > 10_000


def test_sweep_reports_the_working_range():
    res = simulate(
        "--plant", "reference-cpu", "--strategy", "aer", "--alpha-max", "0.05", "--draws", "10", "--horizons", "10",
        "--variant", "seed 1", "--sweep", "kp=0:0.1:2", "--max-error", "10", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert sorted(r["params"]["kp"] for r in rows) == [0.0, 0.1]
    assert all(r["works"] for r in rows)  # an error bound of 10 is met by anything


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plant", "nowhere.json"], "nowhere.json"),
        (["--plant", "reference-cpu", "--sweep", "kp=1"], "expected KEY=LO:HI:N"),
        (["--plant", "reference-cpu", "--sweep", "kp=0:1:3"], "give --baseline or --max-error"),
        (["--plant", "reference-cpu", "--horizons", "1"], "--horizons"),
        (["--plant", "reference-cpu", "--variant", "seed 9"], "no variant 'seed 9'"),
        (["--sweep", "kp=0:1:3"], "--plant"),
        (["--fit", "/nonexistent"], "/nonexistent"),
        (["--plant", "reference-cpu", "--strategy", "none"], "has no target entropy to track"),
    ],
)
def test_bad_simulate_input_gets_one_clear_line(args, message):
    res = simulate(*args)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
