"""The statistics of the report: per-cell summaries, seed-paired tests, equivalence (TOST), power, Holm, the
two-level bootstrap and the decision rule of a declared claim.

The unit of replication is the seed: one seed draws the initialisation, the data subset and the data order, so
the spread between seeds is the variance of the method, and every test and interval that decides is over seeds.
All scores are on the ×100 scale of the tables. Formulas and rules (α = 0.05, 95% intervals):

- **Per cell** (`describe`): n, mean, median, sample std (ddof=1) and the 95% confidence interval of the mean
  from Student's t with n−1 degrees of freedom, ``mean ± t_{0.975, n−1} · std / √n``
  (``scipy.stats.ttest_1samp(x).confidence_interval()``); std and CI are NaN when n < 2.
- **Seed-paired test** (`paired_test`): runs of two cells are paired by seed (the same seed gives the same data
  order and held-out split); d_i = a_i − b_i. Reported: the mean of d with its 95% t interval (n ≥ 2 pairs),
  the paired t-test p-value (``scipy.stats.ttest_rel``, n ≥ 3 pairs; p = 1 when every d_i is 0) and the
  Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``, n ≥ 6 pairs, the first n at which a two-sided exact
  p can fall below 0.05). Wilcoxon is reported only; it does not enter the verdict.
- **Equivalence** (`tost_paired`): two one-sided paired t-tests against a margin m declared in advance,
  H0: μ_d ≤ −m or μ_d ≥ +m (``statsmodels.stats.weightstats.ttost_paired``); p = max of the two one-sided p,
  equivalent when p < α, i.e. when the 90% t interval of μ_d lies inside (−m, +m) (Schuirmann 1987, Lakens 2017).
- **Power** (`min_detectable_difference`, `seeds_needed`, `seeds_needed_equivalence`): the paired t-test is a
  one-sample t-test on d, so its power is ``statsmodels.stats.power.TTestPower`` with effect size δ/σ_d.
- **Multiple comparisons** (`holm`): Holm's step-down adjustment within a family
  (``statsmodels.stats.multitest.multipletests(p, method="holm")``).
- **Paired bootstrap over dev examples** (`paired_bootstrap`): B resamples of the dev example indices with
  replacement (``numpy.random.default_rng(seed)``), the same indices for both cells and for every seed pair.
  Per resample b, ``Δ_b = mean over seed pairs of (metric(A_s on b) − metric(B_s on b))``, the metric
  recomputed from the per-example predictions (accuracy, binary F1, Matthews correlation, Pearson: vectorised
  over resamples through the multiplicity of each example, equal to `peftbench.run.metrics.compute_glue_metrics`
  on the resampled examples). Reported: Δ on the full dev set, the 2.5 and 97.5 percentiles of Δ_b, and the
  two-sided p = min(1, 2 · min(share of Δ_b ≤ 0, share of Δ_b ≥ 0)) (resolution 1/B). It holds the models
  fixed, so it measures the dev-set sampling noise of those models, not the method: it never votes in `decide`.
- **Two-level bootstrap** (`two_level_bootstrap`): seed pairs resampled with replacement, then dev examples
  within each drawn pair; the uncertainty of Δ that includes the seed variance. Reported; it never votes.
- **Decision** (`decide`), for a claim declared in advance, "A better" (+1), "A worse" (−1) or "A ≈ B within
  ±m" (0): directional claims read the Holm-adjusted seed-paired t-test (agrees / disagrees / underpowered with
  the seeds needed), equivalence claims read TOST first (equivalent), then the adjusted t-test (differs), else
  underpowered. Non-significance is never evidence of equality.
- **Verdict** (`verdict`, superseded by `decide`, kept for existing callers), A against B at α: each available
  test votes "A better" (p < α, difference > 0), "A worse" (p < α, difference < 0) or "no difference". The t-test
  is available with ≥ 3 seed pairs, the bootstrap when every paired run has its dev predictions. With both
  available, the verdict is better/worse only when both vote so; with one, its vote; with none, "no significant
  difference".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW, ttost_paired

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


def _aligned(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """`a` and `b` as float arrays, checked to be aligned 1-D (one entry per seed pair); `name` is the caller's."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{name} needs two aligned 1-D arrays, got shapes {a.shape} and {b.shape}")
    return a, b


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """Paired statistics of ``d = a − b`` (aligned arrays, one entry per seed pair); see the module docstring.

    The CI needs 2 pairs, the t-test (``ttest_rel``) 3, Wilcoxon 6; NaN below. Identical pairs (every d = 0)
    have p = 1 where scipy would return NaN.
    """
    a, b = _aligned(a, b, "paired_test")
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


# ---- equivalence (TOST) -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equivalence:
    """TOST of a − b against ±margin: n pairs, mean difference, the TOST p and the 90% t CI of the mean."""

    n: int
    mean_diff: float
    margin: float
    p: float
    ci90_low: float
    ci90_high: float
    equivalent: bool


def tost_paired(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, margin: float, alpha: float = ALPHA
) -> Equivalence:
    """Two one-sided paired t-tests of ``d = a − b`` against the equivalence margin ±`margin` (Schuirmann's TOST).

    H0: μ_d ≤ −m or μ_d ≥ +m against H1: −m < μ_d < +m. With ``t_low = (d̄ + m)/(s_d/√n)`` and
    ``t_up = (d̄ − m)/(s_d/√n)`` on n − 1 degrees of freedom, ``p = max(P(T ≥ t_low), P(T ≤ t_up))``
    (``statsmodels.stats.weightstats.ttost_paired(a, b, −m, +m)``); equivalent when p < α, which is the same as
    the 90% (1 − 2α) interval ``d̄ ± t_{0.95, n−1}·s_d/√n`` (``DescrStatsW(d).tconfint_mean(0.1)``) lying inside
    (−m, +m). The CI needs 2 pairs, the test 3 (as `paired_test`); p is NaN and equivalent False below.
    When every d_i is the same value (s_d = 0) the t statistics are ±∞: p = 0 when |d̄| < m (every difference
    lies inside the margin), else p = 1.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"an equivalence margin must be positive and finite, got {margin}")
    a, b = _aligned(a, b, "tost_paired")
    d = a - b
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    low = high = p = math.nan
    constant = n > 0 and bool(np.all(d == d[0]))
    if n >= 2:
        if constant:
            low = high = mean
        else:
            low, high = (float(x) for x in DescrStatsW(d).tconfint_mean(alpha=2 * alpha))
    if n >= MIN_PAIRS_T:
        if constant:
            p = 0.0 if abs(mean) < margin else 1.0
        else:
            p = float(ttost_paired(a, b, -margin, margin)[0])
    return Equivalence(n, mean, float(margin), p, low, high, bool(p < alpha))


# ---- power --------------------------------------------------------------------------------------------------


def min_detectable_difference(n: int, sd: float, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The smallest true mean difference the two-sided paired t-test on n seed pairs detects with `power`.

    The paired t-test is a one-sample t-test on d, whose power at effect size δ/σ_d is that of the noncentral t
    with n − 1 degrees of freedom and noncentrality √n·δ/σ_d; the MDD is ``δ* · sd`` with δ* solved from
    ``TTestPower().solve_power(nobs=n, alpha=α, power=power, alternative="two-sided")``. In the units of `sd`
    (the standard deviation of the seed-paired differences). NaN when n < 2 or sd is not finite or negative.
    """
    if n < 2 or not math.isfinite(sd) or sd < 0:
        return math.nan
    effect = TTestPower().solve_power(
        effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided"
    )
    return float(effect) * sd


def _smallest_n(power_at: Callable[[float], float], target: float) -> int | None:
    """The smallest integer n ≥ `MIN_PAIRS_T` with power_at(n) ≥ target (power rising in n); None past 1e12.

    ``scipy.optimize.brentq`` on the continuous n, then ⌈·⌉; a power within 1e-6 of the target counts as
    reaching it, so an n solved back from its own minimum detectable difference returns that n.
    """
    tolerance = 1e-6
    if power_at(MIN_PAIRS_T) >= target - tolerance:
        return MIN_PAIRS_T
    high = 2.0 * MIN_PAIRS_T
    while power_at(high) < target:
        high *= 2
        if high > 1e12:
            return None
    n = math.ceil(brentq(lambda x: power_at(x) - target, MIN_PAIRS_T, high, xtol=1e-9))
    while n > MIN_PAIRS_T and power_at(n - 1) >= target - tolerance:
        n -= 1
    return n


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, power: float = 0.8) -> int | None:
    """The seed pairs the two-sided paired t-test needs to detect a true difference `effect` with `power`.

    ``⌈TTestPower().solve_power(effect_size=|effect|/sd, alpha=α, power=power, alternative="two-sided")⌉``,
    at least 3 (`MIN_PAIRS_T`, the fewest pairs `paired_test` tests), computed as the smallest n at which
    ``TTestPower().power`` reaches `power` (`_smallest_n`: solve_power's own root finder stops about 1e-6 off
    and fails for effects so large that n < 2 would do). `effect` in the units of `sd` (the
    standard deviation of the seed-paired differences). sd = 0 gives 3 (no noise). None when it cannot be
    computed: effect or sd not finite, sd < 0, or effect = 0 (no n detects it).
    """
    if not (math.isfinite(effect) and math.isfinite(sd)) or sd < 0 or effect == 0:
        return None
    if sd == 0:
        return MIN_PAIRS_T
    size = abs(effect) / sd
    analysis = TTestPower()
    return _smallest_n(
        lambda n: float(analysis.power(size, nobs=n, alpha=alpha, alternative="two-sided")), power
    )


def seeds_needed_equivalence(
    margin: float, sd: float, true_diff: float = 0.0, alpha: float = ALPHA, power: float = 0.8
) -> int | None:
    """The seed pairs TOST with margin ±`margin` needs to show equivalence with `power` when the true mean
    difference is `true_diff` (all in the units of `sd`, the standard deviation of the paired differences).

    TOST rejects when both one-sided tests do, each at level α. statsmodels has no TOST power, so each one-sided
    test's power comes from ``TTestPower().power(effect, nobs=n, alpha=α, alternative="larger")`` with
    ``effect_near = (m − |true_diff|)/sd`` and ``effect_far = (m + |true_diff|)/sd``, and the TOST power is bounded
    below by Bonferroni, ``P(both) ≥ P_near + P_far − 1``. The n returned is the smallest integer (at least
    `MIN_PAIRS_T`) at which that bound reaches `power` (`_smallest_n`): conservative,
    never fewer seeds than the exact TOST power needs. (The power of the one-sided test against the nearer bound
    alone is an upper bound of the TOST power and would understate n; at true_diff = 0 the bound asks each side
    for power 1 − β/2, the usual sample size for TOST at a zero true difference.) sd = 0 gives 3 when
    |true_diff| < m. None when it cannot be computed: inputs not finite, sd < 0, or |true_diff| ≥ m (no n shows
    equivalence then).
    """
    if not all(math.isfinite(x) for x in (margin, sd, true_diff)) or sd < 0 or margin <= abs(true_diff):
        return None
    if sd == 0:
        return MIN_PAIRS_T
    near, far = (margin - abs(true_diff)) / sd, (margin + abs(true_diff)) / sd
    analysis = TTestPower()

    def bonferroni_power(n: float) -> float:
        one_sided = [analysis.power(e, nobs=n, alpha=alpha, alternative="larger") for e in (near, far)]
        return float(sum(one_sided) - 1)

    return _smallest_n(bonferroni_power, power)


# ---- multiple comparisons -----------------------------------------------------------------------------------


def holm(pvalues: Sequence[float] | np.ndarray) -> list[float]:
    """Holm-adjusted p-values of one family (``multipletests(p, method="holm")[1]``).

    With the m finite p sorted ascending, ``p̃_(i) = min(1, max_{j ≤ i} (m − j + 1)·p_(j))``. NaN entries (tests
    that could not be run) are passed through as NaN and are not members of the family (m counts the others).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], method="holm")[1]
    return [float(x) for x in out]


# ---- decision -----------------------------------------------------------------------------------------------

AGREES, DISAGREES, EQUIVALENT, DIFFERS, UNDERPOWERED = (
    "agrees",
    "disagrees",
    "equivalent",
    "differs",
    "underpowered",
)


@dataclass(frozen=True)
class Decision:
    """The outcome of a declared claim (one of AGREES, DISAGREES, EQUIVALENT, DIFFERS, UNDERPOWERED) and its text."""

    outcome: str
    text: str


def _needs(seeds: int | None, mdd: float, n: int) -> str:
    needs = f"needs ≈ {seeds} seeds" if seeds is not None else "seeds needed unknown"
    return f"{needs}; MDD {mdd:.2f} at n = {n}" if math.isfinite(mdd) else needs


def decide(
    expected: int,
    paired: PairedTest,
    p_adjusted: float,
    equivalence: Equivalence | None,
    mdd: float,
    seeds_needed: int | None,
    alpha: float = ALPHA,
) -> Decision:
    """The reading of a claim declared in advance, from the seed-paired tests (the bootstrap never votes).

    `expected`: +1 "A better than B", −1 "A worse", 0 "A ≈ B within ±m" (m is `equivalence.margin`).
    `p_adjusted`: the Holm-adjusted (`holm`, within the claim's family) paired t-test p of `paired`. `mdd`: the
    minimum detectable difference at `paired.n` (`min_detectable_difference`), `seeds_needed`: the seeds the
    claim needs (`seeds_needed` for the declared effect of a directional claim, `seeds_needed_equivalence` for
    an equivalence claim), both reported in the underpowered text.

    - ±1: p_adjusted < α with the sign of `expected` → AGREES; with the opposite sign → DISAGREES; otherwise
      (including too few pairs, p NaN) → UNDERPOWERED, "underpowered (needs ≈ N seeds; …)".
    - 0: TOST p < α → EQUIVALENT, "equivalent within ±m"; else p_adjusted < α → DIFFERS, "differs (A − B = x)";
      else UNDERPOWERED with the seeds TOST would need. A non-significant difference alone never reads as
      equivalent: that would take absence of evidence for evidence of absence.
    """
    if expected not in (-1, 0, 1):
        raise ValueError(f"expected must be +1 (A better), -1 (A worse) or 0 (A ≈ B), got {expected!r}")
    diff = f"A − B = {paired.mean_diff:+.2f}"
    significant = math.isfinite(p_adjusted) and p_adjusted < alpha
    if expected == 0:
        if equivalence is None:
            raise ValueError("an equivalence claim (expected = 0) needs its TOST result (a declared margin)")
        if math.isfinite(equivalence.p) and equivalence.p < alpha:
            return Decision(
                EQUIVALENT,
                f"equivalent within ±{equivalence.margin:g} ({diff}, 90% CI "
                f"[{equivalence.ci90_low:+.2f}, {equivalence.ci90_high:+.2f}], p_TOST = {equivalence.p:.3g})",
            )
        if significant:
            return Decision(DIFFERS, f"differs ({diff}, p_Holm = {p_adjusted:.3g})")
        return Decision(UNDERPOWERED, f"underpowered ({_needs(seeds_needed, mdd, paired.n)})")
    if significant and np.sign(paired.mean_diff) == expected:
        return Decision(AGREES, f"agrees ({diff}, p_Holm = {p_adjusted:.3g})")
    if significant and np.sign(paired.mean_diff) == -expected:
        return Decision(DISAGREES, f"disagrees ({diff}, p_Holm = {p_adjusted:.3g})")
    return Decision(UNDERPOWERED, f"underpowered ({_needs(seeds_needed, mdd, paired.n)})")


# ---- almost stochastic order --------------------------------------------------------------------------------

ASO_ITERATIONS = 200


def aso_epsilon(
    a_scores: Sequence[float] | np.ndarray,
    b_scores: Sequence[float] | np.ndarray,
    seed: int = 0,
    n_bootstrap: int = ASO_ITERATIONS,
) -> float:
    """ε_min of almost stochastic order of A over B (Dror et al. 2019; del Barrio et al. 2018), ``deepsig.aso``.

    With F, G the empirical distributions of A's and B's scores (over seeds), the violation ratio is the share of
    the squared Wasserstein-2 distance where A is below B,
    ``ε_W2 = ∫_{F⁻¹(t) < G⁻¹(t)} (F⁻¹(t) − G⁻¹(t))² dt / ∫_0^1 (F⁻¹(t) − G⁻¹(t))² dt``, and
    ``ε_min = clip(ε_W2 + Φ⁻¹(0.95) · σ̂ / √(nm/(n+m)), 0, 1)`` with σ̂ the standard deviation of
    ``√(nm/(n+m)) · (ε*_b − ε_W2)`` over `n_bootstrap` bootstrap draws ε*_b (deepsig's defaults otherwise:
    confidence 0.95, dt = 0.005). `n_bootstrap` = 200 instead of deepsig's 1000 keeps a call near a second, at the
    cost of a noisier σ̂; `seed` fixes the draws. ε_min < 0.2: A almost stochastically dominates B; 0: A
    dominates; ≥ 0.5: no dominance of A. Identical distributions have ε_W2 = 0.5 (deepsig's convention), so ε_min
    ≥ 0.5. It describes
    the score distributions and never votes in `decide`. deepsig seeds numpy's global RNG; its state is restored.
    """
    from deepsig import aso  # imported here: deepsig pulls in torch when it is installed (seconds)

    state = np.random.get_state()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Division by zero encountered in violation ratio")
            epsilon = aso(
                np.asarray(a_scores, dtype=float),
                np.asarray(b_scores, dtype=float),
                num_bootstrap_iterations=n_bootstrap,
                seed=seed,
                show_progress=False,
                num_jobs=1,
            )
    finally:
        np.random.set_state(state)
    return float(epsilon)
