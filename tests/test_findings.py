"""peftbench.findings: outcomes against the paper's expected sign, claim verdicts, budget tiers, FINDINGS.md
(generated part regenerated, hand-written discussion kept) and the findings notebook."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import nbclient
import nbformat
import pytest
from test_report import make_record, write

from peftbench import findings, stats
from peftbench.findings import AGREES, DISAGREES, INCONCLUSIVE, NOT_RUN, claim_verdict, outcome

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


def test_outcome_against_each_expected_sign() -> None:
    better, worse, same = stats.BETTER, stats.WORSE, stats.NO_DIFFERENCE
    assert [outcome(1, v) for v in (better, worse, same)] == [AGREES, DISAGREES, INCONCLUSIVE]
    assert [outcome(-1, v) for v in (better, worse, same)] == [DISAGREES, AGREES, INCONCLUSIVE]
    assert [outcome(0, v) for v in (better, worse, same)] == [DISAGREES, DISAGREES, AGREES]


@pytest.mark.parametrize(
    ("outcomes", "verdict"),
    [
        ([], NOT_RUN),
        ([AGREES], AGREES),
        ([AGREES, INCONCLUSIVE], AGREES),  # half agree, none disagrees
        ([AGREES, INCONCLUSIVE, INCONCLUSIVE], INCONCLUSIVE),  # fewer than half agree
        ([AGREES, AGREES, DISAGREES], INCONCLUSIVE),  # mixed
        ([DISAGREES, INCONCLUSIVE], DISAGREES),
        ([INCONCLUSIVE, INCONCLUSIVE], INCONCLUSIVE),
    ],
)
def test_claim_verdict(outcomes: list[str], verdict: str) -> None:
    assert claim_verdict(outcomes) == verdict


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
    # adapter ≈ lora in the paper; here adapter is 15 points better on every seed: the claim disagrees
    assert (by_key["table2"]["verdict"], by_key["table2"][DISAGREES]) == (DISAGREES, 1)
    assert by_key["parallel"]["verdict"] == NOT_RUN and by_key["mam"]["verdict"] == NOT_RUN
    assert len(verdicts) == len(findings.CLAIMS)
    assert "| adapter | 0.5% | 87.2 | 94.2 |" in text  # the paper's row beside the measured one
    assert "85.5 ± 0.5" in text  # adapter's measured median ± std ×100 (0.85, 0.855, 0.86)
    assert "Constant predictor on the dev set (majority class; 0 for correlations): sst2 50.0" in text
    assert "6 of 144 planned runs completed, 0 failed" in text
    # neither grid is complete: their verdicts are provisional, in the table and in each claim's heading; a claim
    # not run is not
    assert by_key["table2"]["provisional"] and by_key["attention_small"]["provisional"]
    assert not by_key["parallel"]["provisional"] and "**not run** (provisional" not in text
    assert text.count("**disagrees** (provisional: 6 of 144 planned runs)") == 2
    assert "No records under `results/insertion_cpu/` yet" in text


def test_cli_keeps_the_hand_written_discussion(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "FINDINGS.md"
    out.write_text(f"stale generated text\n{findings.DISCUSSION_MARKER}\nOur discussion.\n")
    assert findings.main(["--results", str(results), "--out", str(out), "--bootstrap", "200"]) == 0
    text = out.read_text()
    assert "stale generated text" not in text and text.endswith(f"{findings.DISCUSSION_MARKER}\nOur discussion.\n")
    assert "## Verdicts" in text
    assert (results / "table2_cpu" / "summary.md").exists()  # each experiment's report, regenerated beside it
    assert findings.main(["--results", str(results), "--out", str(out), "--no-reports"]) == 0
    assert out.read_text().count(findings.DISCUSSION_MARKER) == 1


def test_cli_rejects_a_missing_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        findings.main(["--results", str(tmp_path / "nowhere")])
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
