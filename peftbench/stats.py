"""The statistics of the report: per-cell summaries, seed-paired tests and a paired bootstrap over dev examples.

All scores are on the ×100 scale of the tables. Formulas and rules (α = 0.05, 95% intervals):

- **Per cell** (`describe`): n, mean, median, sample std (ddof=1) and the 95% confidence interval of the mean
  from Student's t with n−1 degrees of freedom, ``mean ± t_{0.975, n−1} · std / √n``
  (``scipy.stats.ttest_1samp(x).confidence_interval()``); std and CI are NaN when n < 2.
- **Seed-paired test** (`paired_test`): runs of two cells are paired by seed (the same seed gives the same data
  order and held-out split); d_i = a_i − b_i. Reported: the mean of d with its 95% t interval (n ≥ 2 pairs),
  the paired t-test p-value (``scipy.stats.ttest_rel``, n ≥ 3 pairs; p = 1 when every d_i is 0) and the
  Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``, n ≥ 6 pairs, the first n at which a two-sided exact
  p can fall below 0.05). Wilcoxon is reported only; it does not enter the verdict.
- **Paired bootstrap over dev examples** (`paired_bootstrap`): B resamples of the dev example indices with
  replacement (``numpy.random.default_rng(seed)``), the same indices for both cells and for every seed pair.
  Per resample b, ``Δ_b = mean over seed pairs of (metric(A_s on b) − metric(B_s on b))``, the metric
  recomputed from the per-example predictions (accuracy, binary F1, Matthews correlation, Pearson: vectorised
  over resamples through the multiplicity of each example, equal to `peftbench.metrics.compute_glue_metrics`
  on the resampled examples). Reported: Δ on the full dev set, the 2.5 and 97.5 percentiles of Δ_b, and the
  two-sided p = min(1, 2 · min(share of Δ_b ≤ 0, share of Δ_b ≥ 0)) (resolution 1/B).
- **Verdict** (`verdict`), A against B at α: each available test votes "A better" (p < α, difference > 0),
  "A worse" (p < α, difference < 0) or "no difference". The t-test is available with ≥ 3 seed pairs, the
  bootstrap when every paired run has its dev predictions. With both available, the verdict is better/worse only
  when both vote so; with one, its vote; with none, "no significant difference".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
CONFIDENCE = 0.95
N_RESAMPLES = 2000
MIN_PAIRS_T = 3
MIN_PAIRS_WILCOXON = 6
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"
#: Metrics the bootstrap recomputes from per-example predictions.
BOOTSTRAP_METRICS = ("accuracy", "f1", "matthews_correlation", "pearson")
_MAX_COUNTS = 4_000_000  # entries of one (resamples × examples) block of multiplicities

T = TypeVar("T")


@dataclass(frozen=True)
class CellStats:
    """n, mean, median, sample std and the 95% t interval of the mean of one cell's scores."""

    n: int
    mean: float
    median: float
    std: float
    ci_low: float
    ci_high: float


def describe(values: Sequence[float] | np.ndarray) -> CellStats:
    """n, mean, median, std (ddof=1) and ``mean ± t_{0.975,n−1}·std/√n``; NaN where undefined (n < 2)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return CellStats(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean, median = float(x.mean()), float(np.median(x))
    if n < 2:
        return CellStats(1, mean, median, math.nan, math.nan, math.nan)
    with warnings.catch_warnings():  # identical scores: scipy warns about precision; the CI is (mean, mean)
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = sps.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return CellStats(n, mean, median, float(x.std(ddof=1)), float(ci.low), float(ci.high))


def pair_by_seed(a: Mapping[int, T], b: Mapping[int, T]) -> tuple[list[int], int]:
    """The seeds both sides ran (sorted) and the number of runs left without a partner."""
    common = sorted(set(a) & set(b))
    return common, len(a) + len(b) - 2 * len(common)


@dataclass(frozen=True)
class PairedTest:
    """Seed-paired comparison of a − b: n pairs, mean difference with its 95% t CI, t-test and Wilcoxon p."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_t: float
    p_wilcoxon: float


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """Paired statistics of ``d = a − b`` (aligned arrays, one entry per seed pair); see the module docstring.

    The CI needs 2 pairs, the t-test (``ttest_rel``) 3, Wilcoxon 6; NaN below. Identical pairs (every d = 0)
    have p = 1 where scipy would return NaN.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test needs two aligned 1-D arrays, got shapes {a.shape} and {b.shape}")
    d = a - b
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    ci_low = ci_high = p_t = p_w = math.nan
    all_zero = n > 0 and not np.any(d)
    with (
        warnings.catch_warnings()
    ):  # constant differences or ties: scipy warns (precision, exact p with zeros)
        warnings.simplefilter("ignore")
        if n >= 2:
            ci = sps.ttest_1samp(d, 0.0).confidence_interval(CONFIDENCE)
            ci_low, ci_high = float(ci.low), float(ci.high)
        if n >= MIN_PAIRS_T:
            p_t = 1.0 if all_zero else float(sps.ttest_rel(a, b).pvalue)
        if n >= MIN_PAIRS_WILCOXON:
            p_w = 1.0 if all_zero else float(sps.wilcoxon(a, b).pvalue)
    return PairedTest(n, mean, ci_low, ci_high, p_t, p_w)


# ---- paired bootstrap over dev examples ---------------------------------------------------------------------


def resampled_metric(
    metric: str, predictions: np.ndarray, references: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """The GLUE `metric` of each resample, given how many times each example is drawn (`counts`, shape (B, n)).

    A row of ones is the full dev set. Classification metrics come from the confusion matrix of each resample,
    ``C_b[i, j] = Σ_k counts[b, k] · [ref_k = i] · [pred_k = j]``: accuracy = trace / n; F1 (positive class 1)
    = 2·TP / (2·TP + FP + FN), 0 when undefined; Matthews correlation (multi-class, as scikit-learn)
    = (c·s − Σ_k t_k p_k) / √((s² − Σ p_k²)(s² − Σ t_k²)), 0 when undefined. Pearson's r from the weighted
    moments of the (centred) predictions and references; NaN for a constant side.
    """
    counts = np.asarray(counts, dtype=float)
    if metric == "pearson":
        x = np.asarray(predictions, dtype=float)
        y = np.asarray(references, dtype=float)
        x, y = x - x.mean(), y - y.mean()  # centring keeps the moment formula accurate
        s = counts.sum(axis=1)
        sx, sy = counts @ x, counts @ y
        sxx, syy, sxy = counts @ (x * x), counts @ (y * y), counts @ (x * y)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (s * sxy - sx * sy) / np.sqrt((s * sxx - sx**2) * (s * syy - sy**2))
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(
            f"the bootstrap cannot recompute {metric!r}; supported: {', '.join(BOOTSTRAP_METRICS)}"
        )
    preds = np.asarray(predictions).astype(np.int64)
    refs = np.asarray(references).astype(np.int64)
    k = int(max(preds.max(initial=0), refs.max(initial=0))) + 1
    code = refs * k + preds
    one_hot = (code[:, None] == np.arange(k * k)).astype(float)
    confusion = (counts @ one_hot).reshape(-1, k, k)
    total = confusion.sum(axis=(1, 2))
    correct = np.trace(confusion, axis1=1, axis2=2)
    if metric == "accuracy":
        return correct / total
    if metric == "f1":
        tp, fp, fn = confusion[:, 1, 1], confusion[:, 0, 1], confusion[:, 1, 0]
        denominator = 2 * tp + fp + fn
        return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    true_k, pred_k = confusion.sum(axis=2), confusion.sum(axis=1)
    cov_tp = correct * total - (true_k * pred_k).sum(axis=1)
    cov_pp = total**2 - (pred_k**2).sum(axis=1)
    cov_tt = total**2 - (true_k**2).sum(axis=1)
    denominator = np.sqrt(cov_pp * cov_tt)
    return np.divide(cov_tp, denominator, out=np.zeros_like(cov_tp), where=denominator > 0)


@dataclass(frozen=True)
class Bootstrap:
    """Paired bootstrap of metric(A) − metric(B) ×100 over dev examples, averaged over seed pairs."""

    n_pairs: int
    n_examples: int
    n_resamples: int
    diff: float
    ci_low: float
    ci_high: float
    p: float


@dataclass(frozen=True)
class PredictionPair:
    """The dev predictions of one seed pair (same dev order): A's, B's and the shared references."""

    a: np.ndarray
    b: np.ndarray
    references: np.ndarray


def paired_bootstrap(
    metric: str, pairs: Sequence[PredictionPair], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> Bootstrap:
    """Resample dev example indices with replacement `n_resamples` times (the same indices for A and B and for
    every seed pair); Δ_b = mean over pairs of (metric(A on b) − metric(B on b)) ×100. Returns Δ on the full
    set, the 95% percentile interval of Δ_b and p = min(1, 2·min(P(Δ_b ≤ 0), P(Δ_b ≥ 0))).
    """
    if not pairs:
        raise ValueError("paired_bootstrap needs at least one pair of predictions")
    n = len(pairs[0].references)
    for pair in pairs:
        if not (len(pair.a) == len(pair.b) == len(pair.references) == n):
            raise ValueError("every prediction vector of a bootstrap must cover the same dev examples")

    def diff(counts: np.ndarray) -> np.ndarray:
        per_pair = [
            resampled_metric(metric, p.a, p.references, counts)
            - resampled_metric(metric, p.b, p.references, counts)
            for p in pairs
        ]
        return 100 * np.mean(per_pair, axis=0)

    observed = float(diff(np.ones((1, n)))[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_COUNTS // max(n, 1))
    deltas = []
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        counts = np.bincount((idx + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(
            rows, n
        )
        deltas.append(diff(counts))
    delta = np.concatenate(deltas)
    low, high = np.quantile(delta, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    p = min(1.0, 2 * min(float(np.mean(delta <= 0)), float(np.mean(delta >= 0))))
    return Bootstrap(len(pairs), n, n_resamples, observed, float(low), float(high), p)


# ---- verdict ------------------------------------------------------------------------------------------------


def _vote(diff: float, p: float, alpha: float) -> int:
    return int(np.sign(diff)) if p < alpha else 0


def verdict(paired: PairedTest | None, bootstrap: Bootstrap | None, alpha: float = ALPHA) -> str:
    """ "better" / "worse" (A against B) / "no significant difference", by the rule of the module docstring:
    the available tests (t-test with ≥ 3 pairs, bootstrap) must all find p < α with the same sign."""
    votes = []
    if paired is not None and paired.n >= MIN_PAIRS_T and math.isfinite(paired.p_t):
        votes.append(_vote(paired.mean_diff, paired.p_t, alpha))
    if bootstrap is not None and math.isfinite(bootstrap.p):
        votes.append(_vote(bootstrap.diff, bootstrap.p, alpha))
    if votes and votes[0] != 0 and all(v == votes[0] for v in votes):
        return BETTER if votes[0] > 0 else WORSE
    return NO_DIFFERENCE
