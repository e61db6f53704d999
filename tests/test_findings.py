"""peftbench.findings: outcomes against the paper's expected sign, claim verdicts, budget tiers, FINDINGS.md
(generated part regenerated, hand-written discussion kept) and the findings notebook."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pandas as pd
import pytest
from test_report import make_record, write

from peftbench.analysis import findings, stats
from peftbench.analysis.findings import (
    AGREES,
    DIFFERS,
    DISAGREES,
    EQUIVALENT,
    MIXED,
    NOT_RUN,
    UNDERPOWERED,
    claim_verdict,
)
from peftbench.analysis.records import load_records
from peftbench.findings import main as findings_main

REPO = Path(__file__).resolve().parent.parent
N_DEV = 200
REFERENCES = [i % 2 for i in range(N_DEV)]


def predictions(accuracy: float) -> list[int]:
    """Dev predictions right on the first `accuracy` share of the examples, wrong on the rest."""
    right = round(accuracy * N_DEV)
    return [r if i < right else 1 - r for i, r in enumerate(REFERENCES)]


def record(method: str, seed: int, accuracy: float, *, sweep: str, share: float, r: int = 8) -> dict:
    """A completed record of `method` (its own design of size `r` and budget `share`) with dev predictions."""
    rec = make_record("lora", seed, accuracy, lr=1e-3, sweep=sweep, predictions=predictions(accuracy),
                      references=REFERENCES)  # fmt: skip
    rec["method"], rec["run_key"] = method, f"{method}-r{r}-{seed}"
    rec["design"] = copy.deepcopy(rec["design"])
    rec["design"]["attn"]["r"] = r
    rec["params"]["paper_share"] = share
    return rec


@pytest.mark.parametrize(
    ("outcomes", "needed", "verdict"),
    [
        ([], [], NOT_RUN),
        ([AGREES], [], AGREES),
        ([EQUIVALENT, UNDERPOWERED], [12], AGREES),  # half support, none contradicts
        ([AGREES, UNDERPOWERED, UNDERPOWERED], [7, 30], "underpowered (needs ≈ 30 seeds)"),  # fewer than half
        ([AGREES, AGREES, DISAGREES], [], MIXED),
        ([DIFFERS, UNDERPOWERED], [9], DISAGREES),  # a ≈ that differs contradicts the claim
        ([UNDERPOWERED, UNDERPOWERED], [None, 8], "underpowered (needs ≈ 8 seeds; 1 comparison not yet sized)"),
        # a table column turns None into NaN: never "needs ≈ nan seeds", whatever the order
        ([UNDERPOWERED] * 3, [15.0, math.nan, 9.0], "underpowered (needs ≈ 15 seeds; 1 comparison not yet sized)"),
        ([UNDERPOWERED] * 3, [math.nan, 15.0, math.nan], "underpowered (needs ≈ 15 seeds; 2 comparisons not yet sized)"),
        ([UNDERPOWERED, UNDERPOWERED], [math.nan, math.nan], UNDERPOWERED),
        ([UNDERPOWERED], [None], UNDERPOWERED),
    ],
)
def test_claim_verdict(outcomes: list[str], needed: list, verdict: str) -> None:
    assert claim_verdict(outcomes, needed) == verdict


def test_a_wide_approximately_equal_comparison_is_underpowered_never_agrees(tmp_path: Path) -> None:
    """MAM ≈ LoRA with a 0.4-point mean difference but seed-to-seed swings of several points: no test is
    significant, and the old rule read that as "agrees". Now: underpowered, with the seeds TOST at ±1 would need."""
    root = tmp_path / "results"
    for seed, (mam, lora) in enumerate(((0.80, 0.84), (0.86, 0.81), (0.82, 0.815))):
        write(root / "table2_cpu" / f"mam-{seed}", record("mam", seed, mam, sweep="table2_cpu", share=0.005))
        write(root / "table2_cpu" / f"lora-{seed}", record("lora", seed, lora, sweep="table2_cpu", share=0.005))
    claim = next(c for c in findings.CLAIMS if c.key == "table2")
    rows, _ = findings.check_claim(claim, load_records([root / "table2_cpu"])[0], n_resamples=200)
    (row,) = rows.to_dict("records")
    d = [-4.0, 5.0, 0.5]
    sd = float(np.std(d, ddof=1))
    assert row["mean_diff"] == pytest.approx(np.mean(d)) and row["sd_diff"] == pytest.approx(sd)
    assert row["outcome"] == UNDERPOWERED and row["p_tost"] > 0.05
    assert row["seeds_needed"] == stats.seeds_needed_equivalence(1.0, sd) and row["seeds_needed"] > 3
    assert f"needs ≈ {row['seeds_needed']} seeds" in row["text"]
    assert row["mdd"] == pytest.approx(stats.min_detectable_difference(3, sd))
    assert row["p_holm"] == pytest.approx(row["p_t"])  # a family of one


def test_holm_adjusts_within_a_claim(tmp_path: Path) -> None:
    """Two comparisons of one claim: each adjusted p is what `multipletests(method="holm")` gives for the pair."""
    from statsmodels.stats.multitest import multipletests

    root = tmp_path / "results"
    for seed in range(4):
        jitter = [0.0, 0.012, -0.007, 0.004][seed]
        for method, acc in (("parallel_adapter_attn", 0.83 + jitter), ("sequential_adapter_attn", 0.80),
                            ("parallel_adapter_ffn", 0.81 + 2 * jitter), ("sequential_adapter_ffn", 0.805)):
            write(root / "insertion_cpu" / f"{method}-{seed}", record(method, seed, acc, sweep="insertion_cpu",
                                                                       share=0.005 if "attn" in method else 0.01))
    claim = next(c for c in findings.CLAIMS if c.key == "parallel")
    rows, _ = findings.check_claim(claim, load_records([root / "insertion_cpu"])[0], n_resamples=100)
    assert len(rows) == 2
    expected = multipletests(list(rows["p_t"]), method="holm")[1]
    assert list(rows["p_holm"]) == pytest.approx(list(expected))
    assert (rows["p_holm"] >= rows["p_t"]).all() and (rows["p_holm"] > rows["p_t"]).any()


def test_expectations_are_validated_and_name_declared_comparisons() -> None:
    with pytest.raises(ValueError, match="sign"):
        findings.Expectation("a", "b", 2)
    declared = {pair for pairs in findings.compare.EXPERIMENT_COMPARISONS.values() for pair in pairs}
    for claim in findings.CLAIMS:
        assert claim.experiment in findings.EXPERIMENTS
        for e in claim.expectations:  # every claim is also in its experiment's own report
            assert (e.a, e.b) in declared, (claim.key, e)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """representation_cpu: pa_ffn worse than pa_attn at 0.1% and better at 3.6% (3 seeds each, clear margins);
    table2_cpu: adapter clearly above lora, which the paper puts level."""
    root = tmp_path / "results"
    rep, t2 = root / "representation_cpu" / "d", root / "table2_cpu" / "d"
    for seed in range(3):
        noise = 0.005 * seed
        runs = [("pa_ffn", 0.70 + noise, 0.001, 1), ("pa_attn", 0.80 + noise, 0.001, 1),
                ("pa_ffn", 0.90 - noise, 0.036, 64), ("pa_attn", 0.75 - noise, 0.036, 64)]  # fmt: skip
        for method, acc, share, r in runs:
            write(rep / f"{method}-{r}-{seed}", record(method, seed, acc, sweep="representation_cpu", share=share, r=r))
        write(t2 / f"lora-{seed}", record("lora", seed, 0.70 + noise, sweep="table2_cpu", share=0.005))
        write(t2 / f"adapter-{seed}", record("adapter", seed, 0.85 + noise, sweep="table2_cpu", share=0.005))
    return root


def test_claims_split_by_budget_tier_and_compare_with_the_paper(results: Path) -> None:
    text, verdicts = findings.build(results, n_resamples=300)
    by_key = {c.key: verdicts.iloc[i] for i, c in enumerate(findings.CLAIMS)}
    # only the pa pair ran: one comparison per tier, the paper's sign in both
    assert (by_key["attention_small"]["verdict"], by_key["attention_small"][AGREES]) == (AGREES, 1)
    assert (by_key["ffn_large"]["verdict"], by_key["ffn_large"][AGREES]) == (AGREES, 1)
    # adapter ≈ lora in the paper; here adapter is 15 points better on every seed: it differs, the claim disagrees
    assert (by_key["table2"]["verdict"], by_key["table2"][DIFFERS]) == (DISAGREES, 1)
    assert by_key["parallel"]["verdict"] == NOT_RUN and by_key["mam"]["verdict"] == NOT_RUN
    assert len(verdicts) == len(findings.CLAIMS)
    assert "| adapter | 0.5% | 87.2 | 94.2 |" in text  # the paper's row beside the measured one
    assert "85.5 ± 0.5" in text  # adapter's measured median ± std ×100 (0.85, 0.855, 0.86)
    assert "Constant predictor on the dev set (majority class; 0 for correlations): sst2 50.0" in text
    # the fixture's run keys are no job of table2_cpu's grid: 6 runs, none of the 144 grid jobs done
    assert "6 runs completed (0 of the 144 its grid plans; 6 beyond it" in text
    # neither grid is complete: their verdicts are provisional, in the table and in each claim's heading; a claim
    # not run is not
    assert by_key["table2"]["provisional"] and by_key["attention_small"]["provisional"]
    assert not by_key["parallel"]["provisional"] and "**not run** (provisional" not in text
    assert text.count("**disagrees** (provisional: 0 of its grid's 144 runs)") == 2
    assert "No records under `results/insertion_cpu/` yet" in text


def test_a_verdict_before_any_evaluation_seed_reads_tuning_seeds_only(
    results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the grid complete and no evaluation seed, each cell is chosen and compared on the same runs: the
    verdict stands but says so (ptuning_v2_ablation's "disagrees" read bare once its grid completed)."""
    df, _ = load_records([results / "representation_cpu"])
    monkeypatch.setattr(findings, "planned_keys", lambda experiment, variant: tuple(df["run_key"]))
    text, verdicts = findings.build(results, n_resamples=100)
    small = verdicts.iloc[[c.key for c in findings.CLAIMS].index("attention_small")]
    assert (small["verdict"], bool(small["provisional"]), small["interim"]) == (AGREES, False, 0)
    assert small["tuning_only"] > 0  # the fixed design's evaluation runs, none of them in
    shown = f"**agrees** (tuning seeds only: chosen and compared on the same runs; its {small['tuning_only']} evaluation"
    assert shown in text
    # table2's records are no job of that (patched) grid: provisional, which says more than tuning seeds only
    assert f"**disagrees** (provisional: 0 of its grid's {len(df)} runs)" in text


def test_each_claim_reads_its_own_cells_evaluation_seeds(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two claims of one experiment: evaluation seeds for the small tier's cells make attention_small's verdict
    an evaluation one, while ffn_large, whose cells have none, still reads tuning seeds only (not *interim*)."""
    df, _ = load_records([results / "representation_cpu"])
    monkeypatch.setattr(findings, "planned_keys", lambda experiment, variant: tuple(df["run_key"]))
    rep = results / "representation_cpu" / "d"
    for seed in range(100, 105):
        for method, acc in (("pa_ffn", 0.70 + 0.002 * (seed - 100)), ("pa_attn", 0.80 - 0.002 * (seed - 100))):
            write(rep / f"{method}-1-{seed}", record(method, seed, acc, sweep="representation_cpu", share=0.001, r=1))
    text, verdicts = findings.build(results, n_resamples=100)
    by_key = {c.key: verdicts.iloc[i] for i, c in enumerate(findings.CLAIMS)}
    small, large = by_key["attention_small"], by_key["ffn_large"]
    assert small["verdict"] == AGREES and small["tuning_only"] == 0
    assert large["verdict"] == AGREES and large["tuning_only"] > 0 and large["interim"] == 0
    assert text.count("(tuning seeds only: chosen and compared on the same runs") == 2  # ffn_large: table, heading
    assert "(interim:" not in text


def test_grid_progress_counts_the_grid_jobs_done_not_the_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """lr extensions and evaluation seeds are not grid jobs: table2_cpu once had 145 records for a 144-job grid
    whose STS-B half had never run, and read as complete. A failed run of a grid job does not count as done."""
    monkeypatch.setattr(findings, "planned_keys", lambda experiment, variant: ("a", "b", "c"))
    df = pd.DataFrame({"status": ["completed", "completed", "completed", "failed"], "run_key": ["a", "x", "y", "b"],
                       "time_s": [1800.0] * 4})  # fmt: skip
    assert findings.grid_progress("table2", "cpu", df) == (1, 3)
    assert findings.completion("table2", "cpu", df) == (
        "3 runs completed (1 of the 3 its grid plans; 2 beyond it: runs at lrs outside the grid and evaluation "
        "seeds), 1 failed; 1.5 h of CPU time in the completed records")
    assert findings.grid_progress("table2", "cpu", df.iloc[:0]) == (0, 3)


def test_an_experiment_not_run_is_sized_from_a_pilot_that_never_votes(results: Path, tmp_path: Path) -> None:
    """insertion has no records under results/; a pilot archive of it sizes each comparison from the sd of the
    seed-paired differences (`stats.seeds_needed` at the declared 1-point effect), and the claim still reads
    *not run* with no outcome counted, although the pilot's parallel arm is clearly better."""
    pilots = tmp_path / "pilots"
    diffs = {"attn": [0.02, 0.035, 0.01], "ffn": [0.0, 0.03, -0.02]}
    for seed in range(3):
        for where, d in diffs.items():
            share = 0.005 if where == "attn" else 0.01
            for form, acc in (("parallel", 0.80 + d[seed]), ("sequential", 0.80)):
                method = f"{form}_adapter_{where}"
                write(pilots / "insertion_cpu" / f"{method}-{seed}",
                      record(method, seed, acc, sweep="insertion_cpu", share=share))  # fmt: skip
    text, verdicts = findings.build(results, n_resamples=100, pilots=pilots)
    row = verdicts.iloc[[c.key for c in findings.CLAIMS].index("parallel")]
    assert row["verdict"] == NOT_RUN and row[AGREES] == 0 and row[UNDERPOWERED] == 0
    needed = {w: stats.seeds_needed(1.0, float(np.std(100 * np.array(d), ddof=1))) for w, d in diffs.items()}
    assert row["pilot_needs"] == max(needed.values())
    assert f"**not run** (a bf16 pilot sizes it at ≈ {max(needed.values())} seeds)" in text
    section = text.split("## insertion")[1].split("## ")[0]
    assert "the 12 bf16 records in [" in section and "| parallel | " in section
    for w, n in needed.items():
        sd = float(np.std(100 * np.array(diffs[w]), ddof=1))
        assert f"| 3 | {sd:.2f} | {n} |" in section
    # without pilots, or for an experiment that has records, nothing is sized
    assert findings.build(results, n_resamples=100)[1]["pilot_needs"].isna().all()
    assert verdicts.iloc[[c.key for c in findings.CLAIMS].index("table2")]["pilot_needs"] is None or pd.isna(
        verdicts.iloc[[c.key for c in findings.CLAIMS].index("table2")]["pilot_needs"])


def test_cli_keeps_the_hand_written_discussion(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "FINDINGS.md"
    out.write_text(f"stale generated text\n{findings.DISCUSSION_MARKER}\nOur discussion.\n")
    assert findings_main(["--results", str(results), "--out", str(out), "--bootstrap", "200"]) == 0
    text = out.read_text()
    assert "stale generated text" not in text and text.endswith(f"{findings.DISCUSSION_MARKER}\nOur discussion.\n")
    assert "## Verdicts" in text
    assert (results / "table2_cpu" / "summary.md").exists()  # each experiment's report, regenerated beside it
    assert findings_main(["--results", str(results), "--out", str(out), "--no-reports"]) == 0
    assert out.read_text().count(findings.DISCUSSION_MARKER) == 1


def test_cli_rejects_a_missing_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        findings_main(["--results", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert "nowhere: not a directory" in capsys.readouterr().err


def test_findings_notebook_executes(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook renders FINDINGS.md's verdicts, tables and plots from a results folder (CI runs it)."""
    monkeypatch.setenv("PEFTBENCH_RESULTS", str(results))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    notebook = REPO / "notebooks" / "findings.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed without outputs
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    data = [o.get("data", {}) for o in outputs]
    markdown = "".join(d.get("text/markdown", "") for d in data)
    assert "**disagrees**" in markdown and "| adapter | 0.5% | 87.2 | 94.2 |" in markdown
    assert sum("image/png" in d for d in data) >= 2  # representation and table2: one plot each
