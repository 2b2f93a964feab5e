"""The entropy plant of `aerplane simulate`: how a run's entropy answers α, fitted to recorded runs.

A controller is only as good as the plant it was tuned on. This module models the token-mean entropy H of a run in
log space, with the structure the recorded runs show (docs/results/README.md → "The fitted plant"):

    z_t = log H_t
    m_t = β·m_{t−1} + (1 − β)·α_t·λ̄_t                 the entropy bonus, seen through a first-order lag
    z_{t+1} = z_t + a − k·z_t + g·m_t + ε_t           drift toward the floor a/k, plus the bonus's push
    ε_t ~ N(0, σ(z_t)²·n_ref/n_t),  σ(z) = max(σ_0 + σ_1·z, σ_floor)

α_t is the coefficient the learner used in step t, λ̄_t that step's mean prompt weight and n_t its sample count.
`a` differs between seeds (the prompts each seed draws collapse at their own pace: this is what makes the α that
holds H* differ between seeds), so a fitted plant has one *variant* per seed: its own `a`, H_0 and accuracy, with
k, g, β and the noise shared. Lag variants (`--lag-variant`) repeat each seed with k, g, a refitted at another β.

`fit_plant` estimates it from run directories (`metrics.jsonl` and `run.json`): for each β on a grid (0 … 0.9),
ordinary least squares of Δz on (one intercept per seed, z, m); the β with the smallest residual wins, and the noise
model is a regression of the residuals' size on z. `PlantModel.run` closes the loop with a strategy over many noise
draws, and `evaluate` scores it on every variant. Pure numpy; no torch.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from aerplane.core.strategies import Strategy
from aerplane.launcher.compare_report import TRACK_BAND

PLANT_FORMAT = 1
PRESETS_DIR = Path(__file__).with_name("plants")
BETA_GRID = tuple(round(0.05 * i, 2) for i in range(19))  # 0.0 … 0.9
MIN_SIGMA = 0.02  # the noise model's floor (log-space SD): a fitted line must not reach zero or below


class PlantError(ValueError):
    """A plant file or a run directory that cannot be used: one line naming it."""


@dataclass(frozen=True)
class Variant:
    """One seed's plant: drift intercept `a`, initial entropy `h0` and mean prompt accuracy; a lag variant also
    carries its own k, g and β."""

    name: str
    a: float
    h0: float
    accuracy: float = 0.4
    k: float | None = None  # these three: the plant's shared value when None
    g: float | None = None
    beta: float | None = None


@dataclass(frozen=True)
class PlantModel:
    """The log-entropy plant of the module docstring. `variants` are the per-seed versions of it."""

    k: float
    g: float
    beta: float
    sigma0: float
    sigma1: float = 0.0
    reference_samples: int = 32
    variants: tuple[Variant, ...] = ()
    description: str = ""
    fit: dict[str, Any] = field(default_factory=dict)  # how it was fitted: runs, residual SD, explained variance

    # --- persistence
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = PLANT_FORMAT
        data["kind"] = "log-lag"
        return data

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, data: Any, where: str = "plant") -> PlantModel:
        if not isinstance(data, dict):
            raise PlantError(f"{where}: expected a JSON object")
        if data.get("format") != PLANT_FORMAT or data.get("kind") != "log-lag":
            raise PlantError(f"{where}: not a log-lag plant of format {PLANT_FORMAT} (`simulate --fit` writes one)")
        try:
            variants = tuple(Variant(**v) for v in data["variants"])
            numbers = {key: float(data[key]) for key in ("k", "g", "beta", "sigma0", "sigma1")}
            plant = cls(
                **numbers,
                reference_samples=int(data.get("reference_samples", 32)),
                variants=variants,
                description=str(data.get("description", "")),
                fit=dict(data.get("fit") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlantError(f"{where}: malformed plant ({exc})") from None
        plant.check(where)
        return plant

    @classmethod
    def load(cls, path: Path) -> PlantModel:
        """A plant file, or the name of a preset shipped with the package (`reference-cpu`)."""
        if not path.exists() and (PRESETS_DIR / f"{path}.json").exists():
            path = PRESETS_DIR / f"{path}.json"
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise PlantError(f"--plant {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise PlantError(f"--plant {path}: not JSON ({exc})") from None
        return cls.from_dict(data, f"--plant {path}")

    def check(self, where: str = "plant") -> None:
        values = [self.k, self.g, self.beta, self.sigma0, self.sigma1] + [v.a for v in self.variants]
        if not all(math.isfinite(v) for v in values):
            raise PlantError(f"{where}: every coefficient must be finite")
        if not 0 <= self.beta < 1:
            raise PlantError(f"{where}: beta must be within [0, 1), got {self.beta!r}")
        if not self.variants:
            raise PlantError(f"{where}: no variants")
        for v in self.variants:
            if not v.h0 > 0 or not 0 <= v.accuracy <= 1:
                raise PlantError(f"{where}: variant {v.name!r}: h0 must be > 0 and accuracy within [0, 1]")

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise PlantError(f"plant has no variant {name!r} (it has {', '.join(v.name for v in self.variants)})")

    def sigma(self, z: np.ndarray | float, samples: int) -> np.ndarray | float:
        """The log-space noise SD at z for a step of `samples` samples."""
        scale = math.sqrt(self.reference_samples / samples)
        return np.maximum(self.sigma0 + self.sigma1 * np.asarray(z), MIN_SIGMA) * scale

    # --- closed loop
    def run(
        self,
        strategy: Strategy,
        variant: Variant,
        steps: int,
        *,
        draws: int = 1,
        samples: int | None = None,
        prompts: int = 4,
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        """`draws` independent closed-loop runs of `steps` steps: arrays of shape (draws, steps) for H, α, λ̄ and
        H* (NaN before anchoring), plus the controller's P, I and D terms where the strategy has them.

        Prompt accuracies: each prompt's success rate is drawn around the variant's accuracy (Beta with
        concentration 2), then G = samples / prompts Bernoulli samples; λ_q comes from the strategy itself."""
        samples = samples or self.reference_samples
        group = max(1, samples // prompts)
        rng = np.random.default_rng(seed)
        conc = 2.0
        acc = min(max(variant.accuracy, 1e-3), 1 - 1e-3)
        k = self.k if variant.k is None else variant.k
        g = self.g if variant.g is None else variant.g
        beta = self.beta if variant.beta is None else variant.beta
        out = {key: np.full((draws, steps), np.nan) for key in ("H", "alpha", "weight", "target", "p", "i", "d")}
        for d in range(draws):
            state = strategy.initial_state()
            z, m = math.log(variant.h0), 0.0
            p_success = rng.beta(acc * conc, (1 - acc) * conc, size=(steps, prompts))
            accuracies = rng.binomial(group, p_success) / group
            noise = rng.standard_normal(steps)
            for t in range(steps):
                h = math.exp(z)
                alpha = strategy.coefficient(state)
                weights = strategy.prompt_weights(state, accuracies[t].tolist())
                lam = sum(weights) / len(weights)
                state = strategy.observe(state, entropy=h)
                out["H"][d, t], out["alpha"][d, t], out["weight"][d, t] = h, alpha, lam
                if state.target_entropy is not None:
                    out["target"][d, t] = state.target_entropy
                terms = state.terms
                if terms is not None:
                    out["p"][d, t], out["i"][d, t], out["d"][d, t] = terms
                m = beta * m + (1 - beta) * alpha * lam
                z = z + variant.a - k * z + g * m + float(self.sigma(z, samples)) * noise[t]
                z = min(z, 5.0)  # H ≤ e^5 ≈ 148 nats: beyond any vocabulary, keeps a runaway draw finite
        return out


# --- tracking figures (the same definitions as the compare report) ------------------------------------------------
def tracking(
    h: np.ndarray, target: np.ndarray, alpha: np.ndarray, *, start: str = "alpha"
) -> tuple[np.ndarray, np.ndarray]:
    """Per draw: (mean |H − H*|/H*, share of steps within ±20 % of H*), counted from `start`:

    - ``alpha``: the first step whose α is positive (the compare report's tracking columns);
    - ``engaged``: the first step where H ≤ 1.2·H*, which compares controllers that engage at different steps
      (one with a floor α_min > 0 has α > 0 from the first step).

    A draw that never starts gives NaN."""
    h, target, alpha = np.atleast_2d(h), np.atleast_2d(target), np.atleast_2d(alpha)
    valid = np.isfinite(target) & (target > 0)
    if start == "alpha":
        began = alpha > 0
    elif start == "engaged":
        began = valid & (h <= (1 + TRACK_BAND) * np.where(valid, target, np.inf))
    else:
        raise ValueError(f"start: expected alpha or engaged, got {start!r}")
    first = np.where(began.any(axis=1), began.argmax(axis=1), h.shape[1])
    valid &= np.arange(h.shape[1])[None, :] >= first[:, None]
    rel = np.where(valid, np.abs(h - target) / np.where(valid, target, 1.0), np.nan)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore"):
        error = np.where(count > 0, np.nansum(rel, axis=1) / np.maximum(count, 1), np.nan)
        inband = np.where(count > 0, np.nansum(rel <= TRACK_BAND, axis=1) / np.maximum(count, 1), np.nan)
    return error, inband


# --- fitting --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordedRun:
    """What a fit uses from one run directory."""

    name: str
    seed: int
    entropy: list[float]
    alpha: list[float]
    weight: list[float]
    samples: list[int]
    accuracy: list[float]


def read_run(run_dir: Path) -> RecordedRun:
    """A run directory's per-step H, α, λ̄, sample count and accuracy (`report.read_metrics`: the last record of a
    step wins)."""
    from aerplane.launcher.report import ReportError, read_metrics

    try:
        info = json.loads((run_dir / "run.json").read_text())
        rows = read_metrics(run_dir)
    except OSError as exc:
        raise PlantError(f"--fit {run_dir}: {exc.strerror or exc} ({exc.filename})") from None
    except json.JSONDecodeError:
        raise PlantError(f"--fit {run_dir}: run.json is not JSON") from None
    except ReportError as exc:
        raise PlantError(f"--fit {exc}") from None
    steps = [r["step"] for r in rows]
    if len(steps) < 3 or steps != list(range(steps[0], steps[0] + len(steps))):
        raise PlantError(f"--fit {run_dir}: needs at least 3 consecutive steps in metrics.jsonl, found {len(steps)}")
    try:
        entropy = [float(r["mean_entropy"]) for r in rows]
        alpha = [float(r.get("alpha") or 0.0) for r in rows]
        weight = [float(r.get("mean_prompt_weight") or 0.0) for r in rows]
        samples = [int((r.get("samples") or {}).get("accepted") or 0) or _sample_count(info) for r in rows]
        accuracy = [float(r.get("accuracy") or 0.0) for r in rows]
    except (TypeError, ValueError) as exc:
        raise PlantError(f"--fit {run_dir}: malformed metrics ({exc})") from None
    if any(not (h > 0 and math.isfinite(h)) for h in entropy):
        raise PlantError(f"--fit {run_dir}: every mean_entropy must be positive and finite (log space)")
    seed = info.get("seed", 0)
    return RecordedRun(run_dir.name, int(seed), entropy, alpha, weight, samples, accuracy)


def _sample_count(info: dict[str, Any]) -> int:
    return int(info.get("prompts_per_step") or 4) * int(info.get("samples_per_prompt") or 8)


def _design(runs: Sequence[RecordedRun], beta: float, seeds: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (one-hot seed, z_t, m_t), targets Δz and each row's z, over every run's consecutive steps.

    Steps repeated across runs (runs of one seed are identical until α first differs) count once."""
    rows, targets, seen = [], [], set()
    for run in runs:
        z = np.log(run.entropy)
        m = 0.0
        for t in range(len(z) - 1):
            m = beta * m + (1 - beta) * run.alpha[t] * run.weight[t]
            key = (run.seed, t, round(float(z[t]), 9), round(float(z[t + 1]), 9), round(m, 12))
            if key in seen:
                continue
            seen.add(key)
            onehot = [1.0 if run.seed == s else 0.0 for s in seeds]
            rows.append([*onehot, z[t], m, run.samples[t]])
            targets.append(z[t + 1] - z[t])
    return np.array(rows), np.array(targets), np.array([r[-3] for r in rows])


def _least_squares(runs: Sequence[RecordedRun], beta: float, seeds: list[int]) -> dict[str, Any]:
    rows, dz, z = _design(runs, beta, seeds)
    x = rows[:, :-1]
    coef, *_ = np.linalg.lstsq(x, dz, rcond=None)
    resid = dz - x @ coef
    return {
        "beta": beta,
        "rss": float(resid @ resid),
        "a": [float(c) for c in coef[: len(seeds)]],
        "k": -float(coef[-2]),
        "g": float(coef[-1]),
        "resid": resid,
        "z": z,
        "samples": rows[:, -1],
        "dz": dz,
    }


def fit_plant(run_dirs: Iterable[Path], *, description: str = "", lag_variants: Sequence[float] = ()) -> PlantModel:
    """The plant of the module docstring fitted to `run_dirs` (at least one run with α > 0 to identify g).

    β is chosen on `BETA_GRID` (0 … 0.9: a lag of at most ~10 steps). Twenty-step runs identify it weakly (the
    residual changes little along the grid; `fit["beta_profile"]` holds it), so `lag_variants` adds, for each β
    given, one more variant per seed with k, g and a refitted at that β: a controller chosen on every variant is
    robust to the lag it cannot be sure of."""
    run_dirs = [Path(d) for d in run_dirs]
    runs = [read_run(d) for d in run_dirs]
    if not runs:
        raise PlantError("--fit: no run directories given")
    if not any(a > 0 for run in runs for a in run.alpha):
        raise PlantError("--fit: no run used α > 0, so how entropy answers α cannot be estimated")
    seeds = sorted({run.seed for run in runs})
    fits = [_least_squares(runs, beta, seeds) for beta in BETA_GRID]
    best = min(fits, key=lambda f: f["rss"])
    resid, z, samples, dz = best["resid"], best["z"], best["samples"], best["dz"]
    n, p = len(resid), len(seeds) + 3  # intercepts, k, g, β
    if n <= p:
        raise PlantError(f"--fit: {n} transitions cannot fit {p} coefficients; give more or longer runs")
    # noise: |ε| scaled to the reference sample count, regressed on z (E|ε| = σ·√(2/π) for a normal ε)
    reference = int(np.median(samples))
    size = np.abs(resid) * np.sqrt(samples / reference) * math.sqrt(math.pi / 2)
    s1, s0 = np.polyfit(z, size, 1)
    tss = float(((dz - dz.mean()) ** 2).sum())

    def variants_of(fit: dict[str, Any], suffix: str = "", own: bool = False) -> list[Variant]:
        out = []
        for seed, a in zip(seeds, fit["a"], strict=True):
            mine = [run for run in runs if run.seed == seed]
            out.append(
                Variant(
                    name=f"seed {seed}{suffix}",
                    a=a,
                    h0=float(np.mean([run.entropy[0] for run in mine])),
                    accuracy=float(np.mean([acc for run in mine for acc in run.accuracy])),
                    k=fit["k"] if own else None,
                    g=fit["g"] if own else None,
                    beta=fit["beta"] if own else None,
                )
            )
        return out

    variants = variants_of(best)
    for beta in lag_variants:
        variants += variants_of(_least_squares(runs, beta, seeds), f", β {beta:g}", own=True)
    return PlantModel(
        k=best["k"],
        g=best["g"],
        beta=best["beta"],
        sigma0=float(s0),
        sigma1=float(s1),
        reference_samples=reference,
        variants=tuple(variants),
        description=description,
        fit={
            "runs": [str(d) for d in run_dirs],  # as given: the preset's are relative to the repository
            "transitions": n,
            "residual_sd": math.sqrt(best["rss"] / (n - p)),
            "explained_variance": 1 - best["rss"] / tss if tss > 0 else 0.0,
            "beta_profile": {f"{f['beta']:g}": round(f["rss"], 4) for f in fits},
        },
    )


def with_variants(plant: PlantModel, names: Sequence[str]) -> PlantModel:
    """The plant restricted to the named variants (`--variant`)."""
    return replace(plant, variants=tuple(plant.variant(n) for n in names))


# --- Monte Carlo evaluation -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    """One strategy on one variant over one horizon, over every noise draw."""

    variant: str
    horizon: int
    error: float  # mean over draws of the tracking error from engagement (H ≤ 1.2·H*)
    error_p10: float
    error_p90: float
    in_band: float  # mean share within ±20 % of H*, from engagement
    error_alpha: float  # the same two counted from α's first positive step (the compare report's definition)
    in_band_alpha: float
    min_ratio: float  # median over draws of min H / H*
    engaged: float  # share of draws that reached H ≤ 1.2·H*


def evaluate(
    plant: PlantModel, strategy: Strategy, horizon: int, *, draws: int, seed: int = 0
) -> tuple[list[Score], dict[str, dict[str, np.ndarray]]]:
    """Scores of `strategy` on every variant of `plant` over `horizon` steps and `draws` noise draws (the same draws
    for every strategy given the same seed), and the raw traces by variant."""
    scores, traces = [], {}
    for v in plant.variants:
        out = plant.run(strategy, v, horizon, draws=draws, seed=seed)
        traces[v.name] = out
        err, band = tracking(out["H"], out["target"], out["alpha"], start="engaged")
        err_a, band_a = tracking(out["H"], out["target"], out["alpha"], start="alpha")
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a draw with no target (all NaN) gives NaN, said so
            ratio = np.nanmin(out["H"] / out["target"], axis=1)
            scores.append(
                Score(
                    variant=v.name,
                    horizon=horizon,
                    error=_nanmean(err),
                    error_p10=float(np.nanpercentile(err, 10)) if np.isfinite(err).any() else math.nan,
                    error_p90=float(np.nanpercentile(err, 90)) if np.isfinite(err).any() else math.nan,
                    in_band=_nanmean(band),
                    error_alpha=_nanmean(err_a),
                    in_band_alpha=_nanmean(band_a),
                    min_ratio=float(np.nanmedian(ratio)),
                    engaged=float(np.isfinite(err).mean()),
                )
            )
    return scores, traces


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def worst(scores: Sequence[Score]) -> float:
    """The largest tracking error over the variants: what a robust choice minimises."""
    return max(s.error for s in scores)
