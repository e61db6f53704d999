"""peftbench.analysis.stats and peftbench.analysis.compare: per-cell CIs, seed-paired tests, the paired bootstrap over dev examples,
the verdict rule, seed pairing and the comparisons each experiment declares."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from peftbench.analysis import bootstrap, stats
from peftbench.analysis.cells import summarize
from peftbench.analysis.compare import (
    EXPERIMENT_COMPARISONS,
    compare,
    experiment_comparisons,
    experiment_of,
    pair_cells,
    parse_compare,
)
from peftbench.analysis.records import load_records
from peftbench.space.presets import CONF_DIR
from tests.test_report import make_record, write

SCORES = np.array([90.1, 91.3, 89.7, 92.0, 90.8])


def test_describe_matches_scipy() -> None:
    cell = stats.describe(SCORES)
    low, high = sps.t.interval(0.95, len(SCORES) - 1, loc=SCORES.mean(), scale=sps.sem(SCORES))
    assert (cell.n, cell.mean, cell.median) == (5, pytest.approx(SCORES.mean()), pytest.approx(90.8))
    assert cell.std == pytest.approx(np.std(SCORES, ddof=1))
    assert (cell.ci_low, cell.ci_high) == (pytest.approx(low), pytest.approx(high))
    one = stats.describe([90.0])
    assert one.n == 1 and one.mean == 90.0 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert stats.describe([]).n == 0 and math.isnan(stats.describe([]).mean)


def test_paired_test_matches_scipy_on_the_same_pairs() -> None:
    a, b = SCORES, np.array([89.0, 91.5, 88.2, 90.9, 90.0])
    paired = stats.paired_test(a, b)
    ci = sps.ttest_1samp(a - b, 0).confidence_interval(0.95)
    assert paired.n == 5 and paired.mean_diff == pytest.approx(np.mean(a - b))
    assert (paired.ci_low, paired.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert paired.p_t == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert math.isnan(paired.p_wilcoxon)  # fewer than 6 pairs
    six = stats.paired_test([*a, 93.0], [*b, 91.0])
    assert six.p_wilcoxon == pytest.approx(sps.wilcoxon([*a, 93.0], [*b, 91.0]).pvalue)
    two = stats.paired_test(a[:2], b[:2])
    assert math.isfinite(two.ci_low) and math.isnan(two.p_t)  # a CI from 2 pairs, a t-test from 3
    same = stats.paired_test(a, a)
    assert same.mean_diff == 0 and same.p_t == 1.0 and same.ci_low == same.ci_high == 0


@pytest.mark.parametrize(
    ("task", "metric"),
    [("sst2", "accuracy"), ("mrpc", "f1"), ("cola", "matthews_correlation"), ("stsb", "pearson")],
)
def test_resampled_metric_equals_the_glue_metric(task: str, metric: str) -> None:
    from peftbench.run.metrics import compute_glue_metrics

    rng = np.random.default_rng(1)
    if task == "stsb":
        refs = rng.uniform(0, 5, 300).round(2)
        preds = refs + rng.normal(0, 1.0, 300)
    else:
        refs = rng.integers(0, 2, 300)
        preds = np.where(rng.random(300) < 0.7, refs, 1 - refs)
    idx = rng.integers(0, 300, size=(3, 300))
    counts = np.stack([np.bincount(row, minlength=300) for row in idx])
    got = bootstrap.resampled_metric(metric, preds, refs, np.vstack([np.ones(300), counts]))
    assert got[0] == pytest.approx(compute_glue_metrics(task, preds, refs)[metric])
    for value, row in zip(got[1:], idx, strict=True):
        assert value == pytest.approx(compute_glue_metrics(task, preds[row], refs[row])[metric])


def test_resampled_mcc_multiclass_and_undefined_cases() -> None:
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(2)
    refs, preds = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    got = bootstrap.resampled_metric("matthews_correlation", preds, refs, np.ones((1, 200)))
    assert got[0] == pytest.approx(matthews_corrcoef(refs, preds))
    constant = bootstrap.resampled_metric(
        "matthews_correlation", np.zeros(10), np.arange(10) % 2, np.ones((1, 10))
    )
    assert constant[0] == 0.0  # as scikit-learn: 0 when a side is constant
    with pytest.raises(ValueError, match="spearmanr"):
        bootstrap.resampled_metric("spearmanr", preds, refs, np.ones((1, 200)))


def test_bootstrap_all_right_against_all_wrong_is_better() -> None:
    refs = np.arange(100) % 2
    pairs = [bootstrap.PredictionPair(refs.copy(), 1 - refs, refs) for _ in range(2)]
    boot = bootstrap.paired_bootstrap("accuracy", pairs, n_resamples=500, seed=0)
    assert boot.diff == 100.0 and boot.ci_low == boot.ci_high == 100.0 and boot.p == 0.0
    assert bootstrap.verdict(None, boot) == stats.BETTER
    worse = bootstrap.paired_bootstrap("accuracy", [bootstrap.PredictionPair(1 - refs, refs, refs)], 500)
    assert worse.ci_high < 0 and bootstrap.verdict(None, worse) == stats.WORSE


def test_bootstrap_identical_predictions_no_difference_and_reproducible() -> None:
    rng = np.random.default_rng(3)
    refs = rng.integers(0, 2, 400)
    preds = np.where(rng.random(400) < 0.8, refs, 1 - refs)
    boot = bootstrap.paired_bootstrap("accuracy", [bootstrap.PredictionPair(preds, preds.copy(), refs)], 1000)
    assert boot.diff == 0 and boot.ci_low == boot.ci_high == 0 and boot.p == 1.0
    assert bootstrap.verdict(stats.paired_test([80.0] * 3, [80.0] * 3), boot) == stats.NO_DIFFERENCE
    # One flipped example out of 400 is no evidence; the same seed gives the same resamples.
    other = preds.copy()
    other[0] = 1 - other[0]
    small = [bootstrap.PredictionPair(preds, other, refs)]
    first = bootstrap.paired_bootstrap("accuracy", small, 1000, seed=7)
    assert first == bootstrap.paired_bootstrap("accuracy", small, 1000, seed=7)
    assert first.p > 0.05 and first.ci_low <= 0 <= first.ci_high


def test_verdict_rule() -> None:
    significant_t = stats.paired_test([91.0, 92.0, 93.0, 92.5], [90.0, 90.9, 91.8, 91.6])
    assert significant_t.p_t < 0.05
    boot_yes = bootstrap.Bootstrap(4, 100, 1000, 1.2, 0.3, 2.1, 0.01)
    boot_no = bootstrap.Bootstrap(4, 100, 1000, 1.2, -0.5, 2.9, 0.2)
    boot_other_way = bootstrap.Bootstrap(4, 100, 1000, -1.2, -2.1, -0.3, 0.01)
    assert bootstrap.verdict(significant_t, boot_yes) == stats.BETTER  # both agree
    assert bootstrap.verdict(significant_t, boot_no) == stats.NO_DIFFERENCE  # both available, one disagrees
    assert bootstrap.verdict(significant_t, boot_other_way) == stats.NO_DIFFERENCE
    assert bootstrap.verdict(significant_t, None) == stats.BETTER  # only the t-test available
    two_pairs = stats.paired_test([91.0, 92.0], [80.0, 81.0])  # too few pairs for the t-test
    assert bootstrap.verdict(two_pairs, None) == stats.NO_DIFFERENCE
    assert bootstrap.verdict(two_pairs, boot_other_way) == stats.WORSE  # only the bootstrap available
    assert bootstrap.verdict(None, None) == stats.NO_DIFFERENCE


# ---- comparisons of synthetic records ---------------------------------------------------------------------

N_DEV = 200
REFS = [i % 2 for i in range(N_DEV)]


def predictions_with_accuracy(accuracy: float, seed: int | str) -> list[int]:
    """Predictions right on round(accuracy · N_DEV) examples chosen by `seed`."""
    wrong = set(random.Random(seed).sample(range(N_DEV), N_DEV - round(accuracy * N_DEV)))
    return [1 - r if i in wrong else r for i, r in enumerate(REFS)]


def write_runs(root: Path, method: str, accuracies: dict[int, float], order: list[int] | None = None) -> None:
    for seed in order or list(accuracies):
        acc = accuracies[seed]
        preds = predictions_with_accuracy(acc, f"{method}-{seed}")
        record = make_record(
            method, seed, acc, lr=1e-4, select=0.9, sweep="table2_cpu", predictions=preds, references=REFS
        )
        write(root / f"{method}-{seed}", record)


MAM = {0: 0.90, 1: 0.92, 2: 0.91, 3: 0.93}
LORA = {0: 0.80, 1: 0.81, 2: 0.79, 4: 0.82}  # seed 3 of mam and seed 4 of lora have no partner


def test_comparison_pairs_by_seed_whatever_the_order(tmp_path: Path) -> None:
    write_runs(tmp_path / "a", "adapter", MAM)
    write_runs(tmp_path / "a", "lora", LORA)
    write_runs(tmp_path / "b", "lora", LORA, order=[4, 2, 0, 1])
    write_runs(tmp_path / "b", "adapter", MAM, order=[3, 1, 2, 0])
    tables = []
    for root in (tmp_path / "a", tmp_path / "b"):
        df, _ = load_records([root])
        table, notes = compare(df.sample(frac=1, random_state=1), n_resamples=500)
        assert any("no completed runs of mam" in n for n in notes)
        tables.append(table.drop(columns=["seeds"]))
        row = table.set_index("a_method").loc["adapter"]
        assert row["seeds"] == [0, 1, 2] and row["n_pairs"] == 3 and row["n_unpaired"] == 2
        expected = [100 * (MAM[s] - LORA[s]) for s in (0, 1, 2)]
        assert row["mean_diff"] == pytest.approx(np.mean(expected))
        assert row["p_t"] == pytest.approx(sps.ttest_rel([100 * MAM[s] for s in (0, 1, 2)],
                                                         [100 * LORA[s] for s in (0, 1, 2)]).pvalue)  # fmt: skip
        assert row["boot_diff"] == pytest.approx(np.mean(expected))  # recomputed from the predictions
        assert row["boot_ci_low"] > 0 and row["boot_p"] < 0.05 and row["verdict"] == stats.BETTER
        assert row["source"] == "table2_cpu" and row["b_method"] == "lora" and row["bootstrap_note"] == ""
    assert tables[0].equals(tables[1])


def test_bootstrap_needs_predictions_of_every_paired_run(tmp_path: Path) -> None:
    write_runs(tmp_path, "adapter", MAM)
    write_runs(tmp_path, "lora", LORA)
    record = make_record("lora", 0, LORA[0], lr=1e-4, select=0.9, sweep="table2_cpu")
    write(tmp_path / "lora-0", record)  # no predictions
    table, _ = compare(load_records([tmp_path])[0], ["adapter:lora"], experiments=False, n_resamples=200)
    row = table.iloc[0]
    assert row["source"] == "command line" and math.isnan(row["boot_p"])
    assert row["bootstrap_note"] == "no dev predictions in 1 of 6 runs"
    assert row["verdict"] == stats.BETTER  # the t-test alone decides


def test_parse_compare_and_experiment_names() -> None:
    spec = parse_compare(" mam : lora (0.65%) ")
    assert (spec.a, spec.b, spec.source) == ("mam", "lora (0.65%)", "command line")
    for bad in ("mam", "mam:", ":lora", "a:b:c"):
        with pytest.raises(ValueError, match="expected A:B"):
            parse_compare(bad)
    assert experiment_of("mam_ablation_cpu") == "mam_ablation" and experiment_of("table2_paper") == "table2"
    assert experiment_of("readme_cpu") is None and experiment_of(None) is None
    assert experiment_comparisons("table2_cpu")[0].source == "table2_cpu"


def _arm_methods(experiment: str) -> set[str]:
    """The method names the arms of an experiment give their records (the arm's name, else its preset's)."""
    names = set()
    for arm in (CONF_DIR / "experiment" / "arm" / experiment).glob("*.yaml"):
        spec = yaml.safe_load(arm.read_text())
        name = (spec.get("method") or {}).get("name")
        if name is None:
            preset = next(d["override /method"] for d in spec["defaults"] if "override /method" in d)
            name = yaml.safe_load((CONF_DIR / "method" / f"{preset}.yaml").read_text())["name"]
        names.add(name)
    return names


@pytest.mark.parametrize("experiment", sorted(EXPERIMENT_COMPARISONS))
def test_declared_comparisons_name_methods_the_experiment_runs(experiment: str) -> None:
    if experiment == "insertion":  # a cross product named ${insertion}_adapter_${representation[0]}
        grid = yaml.safe_load((CONF_DIR / "experiment" / "grid" / "insertion.yaml").read_text())
        params = grid["hydra"]["sweeper"]["params"]
        insertions = params["method.modules.adapter.insertion"].split(",")
        representations = [r.strip("[]") for r in params["method.modules.adapter.representation"].split(",")]
        methods = {f"{i}_adapter_{r}" for i in insertions for r in representations}
    else:
        methods = _arm_methods(experiment)
    for a, b in EXPERIMENT_COMPARISONS[experiment]:
        assert {a, b} <= methods, (experiment, a, b, sorted(methods))
    assert (CONF_DIR / "experiment" / f"{experiment}_cpu.yaml").exists()


def test_cells_pair_by_budget_then_by_rank(tmp_path: Path) -> None:
    """representation: LoRA on the FFN at ~0.1% has less budget than on the attention; the tiers still pair."""
    budgets = {("lora_ffn", 1): (92_160, 0.00102), ("lora_ffn", 48): (4_423_680, 0.049),
               ("lora_attn", 3): (110_592, 0.00123), ("lora_attn", 120): (4_423_680, 0.049),
               ("pa_ffn", 6): (110_592, 0.00123)}  # fmt: skip
    for (method, r), (paper, share) in budgets.items():
        record = make_record("lora", 0, 0.8, lr=1e-4, sweep="representation_cpu")
        record["method"], record["run_key"] = method, f"{method}-{r}"
        record["design"] = {**record["design"], "attn": {**record["design"]["attn"], "r": r}}
        record["params"] = {**record["params"], "paper": paper, "paper_share": share}
        write(tmp_path / f"{method}-{r}", record)
    cells = summarize(load_records([tmp_path])[0])
    pairs, unpaired = pair_cells(cells[cells["method"] == "lora_ffn"], cells[cells["method"] == "lora_attn"])
    assert unpaired == 0 and [(a["params_paper"], b["params_paper"]) for a, b in pairs] == [
        (92_160, 110_592), (4_423_680, 4_423_680)
    ]  # fmt: skip
    pairs, unpaired = pair_cells(cells[cells["method"] == "pa_ffn"], cells[cells["method"] == "lora_attn"])
    assert unpaired == 1 and [(a["params_paper"], b["params_paper"]) for a, b in pairs] == [
        (110_592, 110_592)
    ]
    table, notes = compare(load_records([tmp_path])[0], n_resamples=100)
    assert len(table[table["a_method"] == "lora_ffn"]) == 2
    assert any("pa_ffn vs pa_attn: no completed runs of pa_attn" in n for n in notes)
    assert any("pa_ffn vs mh_pa_heads" in n for n in notes)


# ---- the decision rule: TOST, power, Holm, two-level bootstrap, decide, ASO (issue 24) ------------------------


def test_tost_paired_equals_statsmodels_and_reads_the_90_interval() -> None:
    from statsmodels.stats.weightstats import ttost_paired

    a, b = SCORES, np.array([89.0, 91.5, 88.2, 90.9, 90.0])
    d = a - b
    for margin in (0.5, 1.0, 2.0):
        eq = stats.tost_paired(a, b, margin)
        low, high = sps.t.interval(0.90, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
        assert eq.n == 5 and eq.mean_diff == pytest.approx(d.mean()) and eq.margin == margin
        assert eq.p == pytest.approx(ttost_paired(a, b, -margin, margin)[0])
        assert (eq.ci90_low, eq.ci90_high) == (pytest.approx(low), pytest.approx(high))
        assert eq.equivalent == (-margin < low and high < margin)  # TOST at α ⇔ the 90% CI inside the margin
    assert stats.tost_paired(a, b, 2.0).equivalent and not stats.tost_paired(a, b, 1.0).equivalent
    # Differences tightly inside the margin: equivalent. Mean ≈ 0 but a wide CI: neither equivalent nor different.
    base = np.array([80.0, 83.0, 79.5, 81.2, 82.4])
    tight = stats.tost_paired(base + np.array([0.1, -0.1, 0.05, 0.0, -0.05]), base, 0.5)
    assert tight.equivalent and tight.p < 0.001
    wide_d = np.array([3.0, -2.5, 1.0, -1.8, 0.6])
    wide = stats.tost_paired(base + wide_d, base, 0.5)
    assert not wide.equivalent and wide.p > 0.3 and stats.paired_test(base + wide_d, base).p_t > 0.5
    # Constant differences (s_d = 0): inside the margin p = 0, on or outside it p = 1; fewer than 3 pairs: NaN.
    assert stats.tost_paired(base, base, 0.5).p == 0.0 and stats.tost_paired(base + 0.3, base, 0.5).equivalent
    out = stats.tost_paired(base + 0.5, base, 0.5)
    assert out.p == 1.0 and not out.equivalent and out.ci90_low == out.ci90_high == pytest.approx(0.5)
    two = stats.tost_paired(base[:2] + 0.1, base[:2] + np.array([0.0, 0.3]), 1.0)
    assert math.isnan(two.p) and not two.equivalent and math.isfinite(two.ci90_low)
    with pytest.raises(ValueError, match="margin"):
        stats.tost_paired(a, b, 0.0)


def test_power_equals_ttestpower_and_round_trips() -> None:
    from statsmodels.stats.power import TTestPower

    sd = 1.35
    for n in (3, 5, 10):
        size = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
        mdd = stats.min_detectable_difference(n, sd)
        assert mdd == pytest.approx(size * sd, rel=1e-6)
        assert stats.seeds_needed(mdd, sd) == n  # the n whose MDD it is
        assert stats.seeds_needed(0.99 * mdd, sd) == n + 1  # a smaller effect needs more seeds
        assert stats.seeds_needed(-mdd, sd) == n  # two-sided: the sign does not matter
    assert 1.3 < stats.min_detectable_difference(10, sd) < 1.4  # ≈ 1.0 σ_d at 10 seeds
    assert stats.min_detectable_difference(5, sd) == pytest.approx(2.2707, abs=1e-3)
    nobs = TTestPower().solve_power(effect_size=1.0 / sd, alpha=0.05, power=0.8, alternative="two-sided")
    assert stats.seeds_needed(1.0, sd) == math.ceil(nobs) == 17
    assert stats.seeds_needed(1.0, sd, power=0.9) > 17 and stats.seeds_needed(1.0, sd, alpha=0.01) > 17
    assert math.isnan(stats.min_detectable_difference(1, sd))
    assert math.isnan(stats.min_detectable_difference(5, math.nan))
    assert stats.seeds_needed(1.0, math.nan) is None and stats.seeds_needed(0.0, sd) is None
    assert stats.seeds_needed(1.0, 0.0) == stats.MIN_PAIRS_T and stats.seeds_needed(100.0, sd) == 3


def _exact_tost_power(n: int, sd: float, margin: float, true_diff: float, alpha: float = 0.05) -> float:
    """TOST power by integrating the normal mean over the χ² law of s_d (an independent reference)."""
    from scipy import integrate

    se, t_crit, df = sd / math.sqrt(n), sps.t.ppf(1 - alpha, n - 1), n - 1

    def given_q(q: float) -> float:  # s_d = sd·√(q/df), q ~ χ²_df; reject when |d̄ ± m| clears t_crit·s_d/√n
        half = margin - t_crit * sd * math.sqrt(q / df) / math.sqrt(n)
        if half <= 0:
            return 0.0
        inside = sps.norm.cdf((half - true_diff) / se) - sps.norm.cdf((-half - true_diff) / se)
        return inside * sps.chi2.pdf(q, df)

    return integrate.quad(given_q, 0, np.inf, limit=200)[0]


def test_seeds_needed_equivalence_against_the_exact_tost_power() -> None:
    sd, margin = 1.35, 1.0
    for true_diff, expected in ((0.0, 18), (0.5, 47), (-0.5, 47)):
        n = stats.seeds_needed_equivalence(margin, sd, true_diff)
        assert n == expected
        assert _exact_tost_power(n, sd, margin, true_diff) >= 0.8  # conservative: reaches the power
        assert _exact_tost_power(n - 1, sd, margin, true_diff) < 0.8  # and not by more than a seed here
    assert stats.seeds_needed_equivalence(1.0, sd, 1.0) is None  # true difference on the margin: never
    assert stats.seeds_needed_equivalence(1.0, math.nan) is None
    assert stats.seeds_needed_equivalence(1.0, 0.0) == stats.MIN_PAIRS_T
    assert stats.seeds_needed_equivalence(0.5, sd) > stats.seeds_needed_equivalence(1.0, sd)


def test_holm_equals_multipletests_and_passes_nan_through() -> None:
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.005]
    assert stats.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert stats.holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2, 0.025])
    with_nan = stats.holm([0.01, math.nan, 0.04, 0.03])
    assert math.isnan(with_nan[1])  # not run: stays NaN and is not counted in the family of 3
    assert [with_nan[i] for i in (0, 2, 3)] == pytest.approx(list(multipletests([0.01, 0.04, 0.03], method="holm")[1]))  # fmt: skip
    assert stats.holm([]) == [] and all(math.isnan(x) for x in stats.holm([math.nan, math.nan]))


def test_two_level_bootstrap_equals_a_loop_over_its_draws() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(5)
    n, n_pairs, n_resamples = 60, 3, 40
    refs = rng.integers(0, 2, n)
    pairs = [
        bootstrap.PredictionPair(
            np.where(rng.random(n) < 0.8, refs, 1 - refs), np.where(rng.random(n) < 0.7, refs, 1 - refs), refs
        )
        for _ in range(n_pairs)
    ]
    boot = bootstrap.two_level_bootstrap("f1", pairs, n_resamples=n_resamples, seed=9)
    # The same draws by hand: pairs per resample, then the example indices of each drawn pair.
    draw = np.random.default_rng(9)
    drawn = draw.integers(0, n_pairs, size=n_resamples * n_pairs).reshape(n_resamples, n_pairs)
    idx = draw.integers(0, n, size=(n_resamples * n_pairs, n)).reshape(n_resamples, n_pairs, n)

    def diff(k: int, i: np.ndarray) -> float:
        return f1_score(refs[i], pairs[k].a[i]) - f1_score(refs[i], pairs[k].b[i])

    deltas = [
        100 * np.mean([diff(k, i) for k, i in zip(row, rows, strict=True)])
        for row, rows in zip(drawn, idx, strict=True)
    ]
    full = 100 * np.mean([diff(k, np.arange(n)) for k in range(n_pairs)])
    low, high = np.quantile(deltas, [0.025, 0.975])
    assert (boot.n_pairs, boot.n_examples, boot.n_resamples) == (n_pairs, n, n_resamples)
    assert boot.diff == pytest.approx(full)
    assert (boot.ci_low, boot.ci_high) == (pytest.approx(low), pytest.approx(high))
    p = min(1.0, 2 * min(np.mean(np.array(deltas) <= 0), np.mean(np.array(deltas) >= 0)))
    assert boot.p == pytest.approx(p)
    assert boot == bootstrap.two_level_bootstrap("f1", pairs, n_resamples=n_resamples, seed=9)
    same = bootstrap.two_level_bootstrap("accuracy", [bootstrap.PredictionPair(refs, refs, refs)] * 2, 50)
    assert same.diff == same.ci_low == same.ci_high == 0 and same.p == 1.0
    with pytest.raises(ValueError, match="at least one pair"):
        bootstrap.two_level_bootstrap("accuracy", [])


def test_two_level_bootstrap_covers_the_method_difference_when_seeds_dominate() -> None:
    """200 synthetic experiments, 5 seeds × 200 dev examples: each seed's accuracy is the method's mean plus a
    seed effect (sd 4 points per method, so the seed variance of the difference, 32 points², is twice the
    example noise, ≈ 16 points²); predictions are drawn per example. True difference: 2 points."""
    rng = np.random.default_rng(2024)
    mean_a, mean_b, seed_sd, n_seeds, n_dev = 0.80, 0.78, 0.04, 5, 200
    true_diff = 100 * (mean_a - mean_b)
    covered_two = covered_examples = covered_t = 0
    n_experiments = 200
    for experiment in range(n_experiments):
        refs = rng.integers(0, 2, n_dev)
        pairs, diffs = [], []
        for _ in range(n_seeds):
            acc_a, acc_b = np.clip([mean_a, mean_b] + rng.normal(0, seed_sd, 2), 0, 1)
            a = np.where(rng.random(n_dev) < acc_a, refs, 1 - refs)
            b = np.where(rng.random(n_dev) < acc_b, refs, 1 - refs)
            pairs.append(bootstrap.PredictionPair(a, b, refs))
            diffs.append(100 * (np.mean(a == refs) - np.mean(b == refs)))
        two = bootstrap.two_level_bootstrap("accuracy", pairs, n_resamples=300, seed=experiment)
        examples = bootstrap.paired_bootstrap("accuracy", pairs, n_resamples=300, seed=experiment)
        paired = stats.paired_test(diffs, np.zeros(n_seeds))
        covered_two += two.ci_low <= true_diff <= two.ci_high
        covered_examples += examples.ci_low <= true_diff <= examples.ci_high
        covered_t += paired.ci_low <= true_diff <= paired.ci_high
    coverage_two, coverage_examples = covered_two / n_experiments, covered_examples / n_experiments
    assert 0.90 <= coverage_two <= 0.99, coverage_two
    assert coverage_examples < 0.80, coverage_examples  # fixed models: blind to the seed variance
    assert coverage_examples < coverage_two - 0.1
    assert 0.90 <= covered_t / n_experiments <= 0.99  # the seed-paired t interval, for reference


def _claim_inputs(a: list[float], b: list[float], margin: float | None = None, family: int = 1):
    paired = stats.paired_test(a, b)
    sd = float(np.std(np.subtract(a, b), ddof=1))
    p_adjusted = stats.holm([paired.p_t] + [0.5] * (family - 1))[0]
    equivalence = stats.tost_paired(a, b, margin) if margin is not None else None
    return paired, p_adjusted, equivalence, sd


def test_decide_equivalence_claims_need_tost() -> None:
    base = [80.0, 83.0, 79.5, 81.2, 82.4]
    # "≈" with a wide CI: not significant, but no evidence of equality either.
    wide = [x + d for x, d in zip(base, [3.0, -2.5, 1.0, -1.8, 0.6], strict=True)]
    paired, p_adj, eq, sd = _claim_inputs(wide, base, margin=0.5)
    needed = stats.seeds_needed_equivalence(0.5, sd)
    mdd = stats.min_detectable_difference(paired.n, sd)
    decision = stats.decide(0, paired, p_adj, eq, mdd, needed)
    assert paired.p_t > 0.5 and decision.outcome == stats.UNDERPOWERED
    assert decision.text.startswith(f"underpowered (needs ≈ {needed} seeds") and needed > 100
    assert decision.outcome not in (stats.AGREES, stats.EQUIVALENT)
    # A tight one: equivalent.
    tight = [x + d for x, d in zip(base, [0.1, -0.1, 0.05, 0.0, -0.05], strict=True)]
    paired, p_adj, eq, sd = _claim_inputs(tight, base, margin=0.5)
    decision = stats.decide(0, paired, p_adj, eq, stats.min_detectable_difference(5, sd), None)
    assert decision.outcome == stats.EQUIVALENT and decision.text.startswith("equivalent within ±0.5")
    # A clear difference of a "≈" claim: differs.
    apart = [x + 3 + d for x, d in zip(base, [0.2, -0.3, 0.1, 0.0, 0.25], strict=True)]
    paired, p_adj, eq, sd = _claim_inputs(apart, base, margin=0.5)
    decision = stats.decide(0, paired, p_adj, eq, stats.min_detectable_difference(5, sd), None)
    assert decision.outcome == stats.DIFFERS and decision.text.startswith("differs (A − B = +3.")
    with pytest.raises(ValueError, match="margin"):
        stats.decide(0, paired, p_adj, None, 1.0, None)


def test_decide_directional_claims() -> None:
    a, b = [91.0, 92.0, 93.0, 92.5], [90.0, 90.9, 91.8, 91.6]
    paired, p_adj, _, sd = _claim_inputs(a, b)
    mdd = stats.min_detectable_difference(4, sd)
    assert stats.decide(+1, paired, p_adj, None, mdd, None).outcome == stats.AGREES
    assert stats.decide(-1, paired, p_adj, None, mdd, None).outcome == stats.DISAGREES
    swapped, p_swapped, _, _ = _claim_inputs(b, a)
    assert stats.decide(-1, swapped, p_swapped, None, mdd, None).outcome == stats.AGREES
    # p ≈ 0.028 alone, 0.083 after Holm in a family of 3: not significant, so underpowered (never "agrees").
    weak_a, weak_b = [91.0, 92.1, 93.2, 91.2, 92.1], [90.0, 91.8, 91.8, 91.0, 91.2]
    paired, p_adj, _, sd = _claim_inputs(weak_a, weak_b, family=3)
    assert paired.p_t < 0.05 < p_adj
    needed = stats.seeds_needed(1.0, sd)  # the claim's declared effect: 1 point
    decision = stats.decide(+1, paired, p_adj, None, stats.min_detectable_difference(5, sd), needed)
    assert decision.outcome == stats.UNDERPOWERED
    assert f"needs ≈ {needed} seeds" in decision.text and "MDD" in decision.text
    # Too few pairs for the t-test: underpowered, whatever the difference.
    two, p_two, _, _ = _claim_inputs([91.0, 92.0], [80.0, 81.0])
    assert stats.decide(+1, two, p_two, None, math.nan, None).text == "underpowered (seeds needed unknown)"
    with pytest.raises(ValueError, match="expected"):
        stats.decide(2, paired, p_adj, None, 1.0, None)


def test_aso_epsilon_equals_deepsig_and_leaves_numpy_rng_alone() -> None:
    deepsig = pytest.importorskip("deepsig")
    better = [92.0, 91.4, 93.1, 92.6, 91.9]
    worse = [90.1, 89.5, 90.8, 91.0, 89.9]
    state = np.random.get_state()
    epsilon = stats.aso_epsilon(better, worse, seed=3, n_bootstrap=100)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # deepsig's global seeding undone
    reference = deepsig.aso(better, worse, seed=3, num_bootstrap_iterations=100, show_progress=False)
    assert epsilon == pytest.approx(reference) and epsilon < 0.2  # A almost stochastically dominates
    assert stats.aso_epsilon(worse, better, seed=3, n_bootstrap=100) > 0.5
    assert epsilon == stats.aso_epsilon(better, worse, seed=3, n_bootstrap=100)


def test_seeds_needed_for_an_effect_of_astronomically_many_sds_is_the_fewest_pairs() -> None:
    """Two cells that score the same on every seed up to float noise (a collapsed run: sd of the differences
    ~1e-14): statsmodels' power is NaN there, and the answer is the fewest pairs the test runs on, not a crash."""
    from statsmodels.stats.power import TTestPower

    assert math.isnan(TTestPower().power(1.0 / 1e-14, nobs=3, alpha=0.05, alternative="two-sided"))
    assert stats.seeds_needed(1.0, 1e-14) == stats.MIN_PAIRS_T
    assert stats.seeds_needed_equivalence(1.0, 1e-14) == stats.MIN_PAIRS_T
    assert stats.seeds_needed_equivalence(1.0, 1e-14, true_diff=1.5) is None  # outside the margin: no n shows it
    assert stats.seeds_needed(1.0, 1.0) > stats.MIN_PAIRS_T  # an ordinary effect still goes through the solver
