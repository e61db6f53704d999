"""peftbench.stats and peftbench.compare: per-cell CIs, seed-paired tests, the paired bootstrap over dev examples,
the verdict rule, seed pairing and the comparisons each experiment declares."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from peftbench import stats
from peftbench.compare import (
    EXPERIMENT_COMPARISONS,
    compare,
    experiment_comparisons,
    experiment_of,
    pair_cells,
    parse_compare,
)
from peftbench.config import CONF_DIR
from peftbench.report import load_records, summarize
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
    from peftbench.metrics import compute_glue_metrics

    rng = np.random.default_rng(1)
    if task == "stsb":
        refs = rng.uniform(0, 5, 300).round(2)
        preds = refs + rng.normal(0, 1.0, 300)
    else:
        refs = rng.integers(0, 2, 300)
        preds = np.where(rng.random(300) < 0.7, refs, 1 - refs)
    idx = rng.integers(0, 300, size=(3, 300))
    counts = np.stack([np.bincount(row, minlength=300) for row in idx])
    got = stats.resampled_metric(metric, preds, refs, np.vstack([np.ones(300), counts]))
    assert got[0] == pytest.approx(compute_glue_metrics(task, preds, refs)[metric])
    for value, row in zip(got[1:], idx, strict=True):
        assert value == pytest.approx(compute_glue_metrics(task, preds[row], refs[row])[metric])


def test_resampled_mcc_multiclass_and_undefined_cases() -> None:
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(2)
    refs, preds = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    got = stats.resampled_metric("matthews_correlation", preds, refs, np.ones((1, 200)))
    assert got[0] == pytest.approx(matthews_corrcoef(refs, preds))
    constant = stats.resampled_metric(
        "matthews_correlation", np.zeros(10), np.arange(10) % 2, np.ones((1, 10))
    )
    assert constant[0] == 0.0  # as scikit-learn: 0 when a side is constant
    with pytest.raises(ValueError, match="spearmanr"):
        stats.resampled_metric("spearmanr", preds, refs, np.ones((1, 200)))


def test_bootstrap_all_right_against_all_wrong_is_better() -> None:
    refs = np.arange(100) % 2
    pairs = [stats.PredictionPair(refs.copy(), 1 - refs, refs) for _ in range(2)]
    boot = stats.paired_bootstrap("accuracy", pairs, n_resamples=500, seed=0)
    assert boot.diff == 100.0 and boot.ci_low == boot.ci_high == 100.0 and boot.p == 0.0
    assert stats.verdict(None, boot) == stats.BETTER
    worse = stats.paired_bootstrap("accuracy", [stats.PredictionPair(1 - refs, refs, refs)], 500)
    assert worse.ci_high < 0 and stats.verdict(None, worse) == stats.WORSE


def test_bootstrap_identical_predictions_no_difference_and_reproducible() -> None:
    rng = np.random.default_rng(3)
    refs = rng.integers(0, 2, 400)
    preds = np.where(rng.random(400) < 0.8, refs, 1 - refs)
    boot = stats.paired_bootstrap("accuracy", [stats.PredictionPair(preds, preds.copy(), refs)], 1000)
    assert boot.diff == 0 and boot.ci_low == boot.ci_high == 0 and boot.p == 1.0
    assert stats.verdict(stats.paired_test([80.0] * 3, [80.0] * 3), boot) == stats.NO_DIFFERENCE
    # One flipped example out of 400 is no evidence; the same seed gives the same resamples.
    other = preds.copy()
    other[0] = 1 - other[0]
    small = [stats.PredictionPair(preds, other, refs)]
    first = stats.paired_bootstrap("accuracy", small, 1000, seed=7)
    assert first == stats.paired_bootstrap("accuracy", small, 1000, seed=7)
    assert first.p > 0.05 and first.ci_low <= 0 <= first.ci_high


def test_verdict_rule() -> None:
    significant_t = stats.paired_test([91.0, 92.0, 93.0, 92.5], [90.0, 90.9, 91.8, 91.6])
    assert significant_t.p_t < 0.05
    boot_yes = stats.Bootstrap(4, 100, 1000, 1.2, 0.3, 2.1, 0.01)
    boot_no = stats.Bootstrap(4, 100, 1000, 1.2, -0.5, 2.9, 0.2)
    boot_other_way = stats.Bootstrap(4, 100, 1000, -1.2, -2.1, -0.3, 0.01)
    assert stats.verdict(significant_t, boot_yes) == stats.BETTER  # both agree
    assert stats.verdict(significant_t, boot_no) == stats.NO_DIFFERENCE  # both available, one disagrees
    assert stats.verdict(significant_t, boot_other_way) == stats.NO_DIFFERENCE
    assert stats.verdict(significant_t, None) == stats.BETTER  # only the t-test available
    two_pairs = stats.paired_test([91.0, 92.0], [80.0, 81.0])  # too few pairs for the t-test
    assert stats.verdict(two_pairs, None) == stats.NO_DIFFERENCE
    assert stats.verdict(two_pairs, boot_other_way) == stats.WORSE  # only the bootstrap available
    assert stats.verdict(None, None) == stats.NO_DIFFERENCE


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
