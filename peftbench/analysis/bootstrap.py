"""The bootstrap over dev examples: what the trained models' scores would be on other draws of the dev set.

- **Paired bootstrap over dev examples** (`paired_bootstrap`): B resamples of the dev example indices with
  replacement (``numpy.random.default_rng(seed)``), the same indices for both cells and for every seed pair.
  Per resample b, ``Δ_b = mean over seed pairs of (metric(A_s on b) − metric(B_s on b))``, the metric
  recomputed from the per-example predictions (accuracy, binary F1, Matthews correlation, Pearson: vectorised
  over resamples through the multiplicity of each example, equal to `peftbench.run.metrics.compute_glue_metrics`
  on the resampled examples). Reported: Δ on the full dev set, the 2.5 and 97.5 percentiles of Δ_b, and the
  two-sided p = min(1, 2 · min(share of Δ_b ≤ 0, share of Δ_b ≥ 0)) (resolution 1/B). It holds the models
  fixed, so it measures the dev-set sampling noise of those models, not the method: it never votes in
  `peftbench.analysis.stats.decide`.
- **Two-level bootstrap** (`two_level_bootstrap`): seed pairs resampled with replacement, then dev examples
  within each drawn pair; the uncertainty of Δ that includes the seed variance. Reported; it never votes.
- **Verdict** (`verdict`, superseded by `peftbench.analysis.stats.decide`, kept for existing callers), A against B
  at α: each available test votes "A better" (p < α, difference > 0), "A worse" (p < α, difference < 0) or "no
  difference". The t-test is available with ≥ 3 seed pairs, the bootstrap when every paired run has its dev
  predictions. With both available, the verdict is better/worse only when both vote so; with one, its vote; with
  none, "no significant difference".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from peftbench.analysis.stats import ALPHA, BETTER, CONFIDENCE, MIN_PAIRS_T, NO_DIFFERENCE, WORSE, PairedTest

N_RESAMPLES = 2000
#: Metrics the bootstrap recomputes from per-example predictions.
BOOTSTRAP_METRICS = ("accuracy", "f1", "matthews_correlation", "pearson")
_MAX_COUNTS = 4_000_000  # entries of one (resamples × examples) block of multiplicities


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

    The trained models are held fixed, so this is the dev-set sampling noise of those models, not the
    uncertainty of the method (it leaves out the seed variance; see `two_level_bootstrap`). It never votes in
    `decide`; only the superseded `verdict` reads it.
    """
    n = _check_pairs(pairs, "paired_bootstrap")

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
        deltas.append(diff(_draw_counts(rng, min(chunk, n_resamples - start), n)))
    return _summarise(np.concatenate(deltas), len(pairs), n, observed)


def _check_pairs(pairs: Sequence[PredictionPair], name: str) -> int:
    """The number of dev examples every pair covers; ValueError when there is no pair or they differ."""
    if not pairs:
        raise ValueError(f"{name} needs at least one pair of predictions")
    n = len(pairs[0].references)
    for pair in pairs:
        if not (len(pair.a) == len(pair.b) == len(pair.references) == n):
            raise ValueError("every prediction vector of a bootstrap must cover the same dev examples")
    return n


def _draw_counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """`rows` resamples of n indices with replacement, as multiplicities (shape (rows, n))."""
    idx = rng.integers(0, n, size=(rows, n))
    return np.bincount((idx + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(rows, n)


def _summarise(delta: np.ndarray, n_pairs: int, n: int, observed: float) -> Bootstrap:
    """The 95% percentile interval of Δ_b and p = min(1, 2·min(P(Δ_b ≤ 0), P(Δ_b ≥ 0)))."""
    low, high = np.quantile(delta, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    p = min(1.0, 2 * min(float(np.mean(delta <= 0)), float(np.mean(delta >= 0))))
    return Bootstrap(n_pairs, n, len(delta), observed, float(low), float(high), p)


def two_level_bootstrap(
    metric: str, pairs: Sequence[PredictionPair], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> Bootstrap:
    """Two-level (seeds, then examples) paired bootstrap of metric(A) − metric(B) ×100: the uncertainty of the
    method's difference, seed variance included.

    Resample b draws S seed pairs with replacement from the S pairs (``numpy.random.default_rng(seed)``), then,
    independently for each drawn pair j, n dev example indices with replacement, the same indices for A and B of
    that pair: ``Δ_b = 100 · (1/S) Σ_j (metric(A_{s_j} on b_j) − metric(B_{s_j} on b_j))``, the metric
    recomputed by `resampled_metric`. Returns Δ on the full dev set (the mean over pairs), the 95% percentile
    interval of Δ_b and the two-sided p = min(1, 2·min(P(Δ_b ≤ 0), P(Δ_b ≥ 0))), as `paired_bootstrap`.

    Resampling at both levels counts the example noise twice (it is already in the spread between seeds), which
    widens the interval a little; with few seeds this offsets the percentile bootstrap's shrinkage of the seed
    variance by (S−1)/S. With one pair there is no seed variance to resample and this is `paired_bootstrap`'s
    interval. It is reported, never voted: `decide` reads the seed-paired t-test and TOST.
    """
    n = _check_pairs(pairs, "two_level_bootstrap")
    n_pairs = len(pairs)
    observed = float(
        100
        * np.mean(
            [
                resampled_metric(metric, p.a, p.references, np.ones((1, n)))[0]
                - resampled_metric(metric, p.b, p.references, np.ones((1, n)))[0]
                for p in pairs
            ]
        )
    )
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_COUNTS // max(n * n_pairs, 1))  # resamples per block: chunk · S rows of n counts
    deltas = []
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        # slot r·S + j: the pair drawn in place j of resample r, with its own example counts
        drawn = rng.integers(0, n_pairs, size=rows * n_pairs)
        counts = _draw_counts(rng, rows * n_pairs, n)
        total = np.zeros(rows)
        for k, pair in enumerate(pairs):
            slots = np.flatnonzero(drawn == k)
            if slots.size == 0:
                continue
            d = resampled_metric(metric, pair.a, pair.references, counts[slots]) - resampled_metric(
                metric, pair.b, pair.references, counts[slots]
            )
            total += np.bincount(slots // n_pairs, weights=d, minlength=rows)
        deltas.append(100 * total / n_pairs)
    return _summarise(np.concatenate(deltas), n_pairs, n, observed)


# ---- verdict ------------------------------------------------------------------------------------------------


def _vote(diff: float, p: float, alpha: float) -> int:
    return int(np.sign(diff)) if p < alpha else 0


def verdict(paired: PairedTest | None, bootstrap: Bootstrap | None, alpha: float = ALPHA) -> str:
    """ "better" / "worse" (A against B) / "no significant difference", by the rule of the module docstring:
    the available tests (t-test with ≥ 3 pairs, bootstrap) must all find p < α with the same sign.

    Superseded by `decide`, which reads the claim's direction, Holm-adjusts within a family, tests equivalence
    with TOST and does not let the example-only bootstrap vote; kept unchanged for existing callers."""
    votes = []
    if paired is not None and paired.n >= MIN_PAIRS_T and math.isfinite(paired.p_t):
        votes.append(_vote(paired.mean_diff, paired.p_t, alpha))
    if bootstrap is not None and math.isfinite(bootstrap.p):
        votes.append(_vote(bootstrap.diff, bootstrap.p, alpha))
    if votes and votes[0] != 0 and all(v == votes[0] for v in votes):
        return BETTER if votes[0] > 0 else WORSE
    return NO_DIFFERENCE
