"""``python -m peftbench.report DIR --wandb [--runs]``, offline, read back from the runs' logs (`tests.wandb_files`):
one report run with its tables, native charts and figures; committed records uploaded as runs without retraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from peftbench import report
from peftbench.run.tracking import cell_group
from tests.wandb_files import offline_runs

ROOT = Path(__file__).resolve().parent.parent
#: four committed records of one experiment: two cells (ptv2, ptv2_mlp) × seeds 0, 1 at lr 5e-3, inference timed
SOURCE = ROOT / "results" / "ptuning_v2_ablation_cpu" / "2026-12-04" / "13-27-19-092972"
RUNS = ("1_ptv2_sst2_s0", "13_ptv2_sst2_s1", "4_ptv2_mlp_sst2_s0", "16_ptv2_mlp_sst2_s1")


@pytest.fixture
def records_dir(tmp_path) -> Path:
    if not all((SOURCE / run / "result.json").is_file() for run in RUNS):
        pytest.skip("the committed ptuning_v2_ablation_cpu records are not here")
    for run in RUNS:
        (tmp_path / "records" / run).mkdir(parents=True)
        shutil.copy(SOURCE / run / "result.json", tmp_path / "records" / run / "result.json")
    return tmp_path / "records"


@pytest.mark.slow
def test_report_and_records_logged_to_wandb_offline(records_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    code = report.main([str(records_dir), "--out", str(tmp_path / "report"), "--bootstrap", "50", "--wandb",
                        "--runs", "--wandb-dir", str(tmp_path)])
    assert code == 0
    assert "wandb sync --yes" in capsys.readouterr().out
    runs = {run.name: run for run in offline_runs(tmp_path)}
    assert set(runs) == {*RUNS, "report_ptuning_v2_ablation_cpu"}

    for name in RUNS:  # each record as the run itself would have logged it
        record = json.loads((records_dir / name / "result.json").read_text())
        run = runs[name]
        assert run.group == cell_group(record) and run.job_type == record["method"]
        assert run.summary["score"] == record["score"] and run.summary["lr"] == record["lr"] == 5e-3
        assert run.summary["inference/ratio"] == record["inference"]["ratio"]
        assert run.summary["throughput/padding_ratio"] == record["throughput"]["padding_ratio"]
        assert [(a["type"], a["files"]) for a in run.artifacts] == [("run-record", ["result.json"])]
        assert [h["select/accuracy"] for h in run.history if "select/accuracy" in h] == \
            [h["select"]["accuracy"] for h in record["history"]]
    assert runs["1_ptv2_sst2_s0"].group == runs["13_ptv2_sst2_s1"].group != runs["4_ptv2_mlp_sst2_s0"].group

    summary = runs["report_ptuning_v2_ablation_cpu"]
    assert summary.job_type == "report" and summary.group == "ptuning_v2_ablation_cpu"
    tables = {k: summary.summary[f"{k}/nrows"] for k in ("cells", "lr", "comparisons", "verdicts")}
    assert tables == {"cells": 2, "lr": 2, "comparisons": 1, "verdicts": 1}
    assert summary.summary["verdicts/_type"] == "table-file"
    charts = {k.removeprefix("_wandb/visualize/") for k in summary.config if k.startswith("_wandb/visualize/")}
    assert charts == {"budget_vs_score/sst2", "pareto/sst2/train_time_s", "pareto/sst2/inference_ratio"}
    assert summary.summary["figures/budget_vs_score/_type"] == "image-file"
    (artifact,) = [a for a in summary.artifacts if a["type"] == "report"]  # the tables are artifacts too
    assert artifact["type"] == "report" and {"summary.md", "cells.csv", "budget_vs_score.png"} <= set(
        artifact["files"])


def test_runs_without_wandb_is_a_usage_error(records_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(records_dir), "--runs"])
    assert exit_info.value.code == 2 and "add --wandb" in capsys.readouterr().err
