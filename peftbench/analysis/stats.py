"""The statistics of the report: per-cell summaries, seed-paired tests, equivalence (TOST), power, Holm, almost
stochastic order and the decision rule of a declared claim.

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
- **Bootstrap** over dev examples, and the two-level bootstrap over seeds then examples: `peftbench.analysis.bootstrap`
  (reported beside the tests; they never vote).
- **Decision** (`decide`), for a claim declared in advance, "A better" (+1), "A worse" (−1) or "A ≈ B within
  ±m" (0): directional claims read the Holm-adjusted seed-paired t-test (agrees / disagrees / underpowered with
  the seeds needed), equivalence claims read TOST first (equivalent), then the adjusted t-test (differs), else
  underpowered. Non-significance is never evidence of equality.
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
MIN_PAIRS_T = 3
MIN_PAIRS_WILCOXON = 6
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"
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


#: an effect this many sds wide is detected (or shown equivalent) at the fewest pairs: statsmodels' noncentral t
#: returns NaN power past ~1e12 sds (two runs that score the same up to float noise), and 1.0 from ~10 on
HUGE_EFFECT = 1e6


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
    if sd == 0 or abs(effect) / sd >= HUGE_EFFECT:
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
    if sd == 0 or (margin - abs(true_diff)) / sd >= HUGE_EFFECT:
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
