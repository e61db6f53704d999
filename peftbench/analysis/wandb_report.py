"""A report and its records on Weights & Biases: ``python -m peftbench.report DIR --wandb [--runs]``.

`log_report` logs one W&B run per report (job type ``report``, named ``report_<experiment>``, grouped under the
experiment) holding what the report wrote: its tables as ``wandb.Table``s (``cells``: each cell at its chosen lr, as
Table 2; ``lr``: every cell × lr; ``comparisons``; ``verdicts``: each comparison's difference and verdict), per
task budget-vs-score and the Pareto fronts (score against training time and against inference overhead) as native
W&B scatter charts, the PNGs, and the report's files as an artifact. `upload_records` logs every completed record
as the run itself would have (`peftbench.run.tracking`: its folder's name, its cell's group, the record's scalars,
``result.json`` and ``modules.safetensors`` as artifact) plus its epochs as history, without retraining.

Runs are written offline by default, to ``<root>/wandb/``; ``wandb sync --yes`` from ``<root>`` uploads them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from peftbench.analysis import costs
from peftbench.analysis.cells import summarize
from peftbench.run.tracking import init_run, log_record

#: the report's CSVs logged as tables, by table name
TABLES = {"cells": "cells.csv", "lr": "cells_by_lr.csv", "comparisons": "comparisons.csv"}
VERDICT_COLUMNS = ["task", "model", "a", "b", "metric", "n_pairs", "mean_a", "mean_b", "mean_diff", "diff_ci_low",
                   "diff_ci_high", "p_t", "boot2_p", "verdict"]
REPORT_ARTIFACT = "report"


@dataclass(frozen=True)
class Target:
    """Where runs go: W&B project and entity, mode (offline by default) and the folder holding ``wandb/``."""

    project: str = "peftbench"
    entity: str | None = None
    mode: str = "offline"
    root: str | Path = "."


def experiment_name(df: pd.DataFrame, out: Path) -> str:
    """The experiment the records belong to: their sweep names, else the report folder's name."""
    sweeps = sorted({str(s) for s in df["sweep"].dropna()}) if "sweep" in df else []
    return "+".join(sweeps) if sweeps else Path(out).resolve().name


def as_table(frame: pd.DataFrame):
    """A ``wandb.Table`` of a frame, lists and dicts as text (W&B takes a column of one scalar type)."""
    import wandb

    def plain(value: Any) -> Any:
        if isinstance(value, list | dict | tuple):
            return json.dumps(value, default=str)
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    frame = frame.astype(object).map(plain) if len(frame) else frame
    return wandb.Table(columns=[str(c) for c in frame.columns], data=frame.values.tolist())


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def _charts(df: pd.DataFrame) -> dict[str, Any]:
    """Per task: budget vs score (median ×100 against % of parameters) and the Pareto fronts, as W&B scatters."""
    import wandb

    cells = summarize(df)
    cells = cells[cells["n"] > 0]
    cost = costs.cost_frame(df, cells)
    charts: dict[str, Any] = {}
    for task in sorted(cells["task"].unique()):
        points = cells[cells["task"] == task][["label", "method", "share_pct", "median"]]
        table = as_table(points.rename(columns={"median": "score_x100"}))
        charts[f"budget_vs_score/{task}"] = wandb.plot.scatter(
            table, "share_pct", "score_x100", title=f"{task}: score ×100 against % of parameters")
        timed = cost[cost["task"] == task] if len(cost) else cost
        for column, what in (("train_time_s", "training time (s)"), ("inference_ratio", "inference × base")):
            if len(timed) and pd.to_numeric(timed[column], errors="coerce").notna().any():
                table = as_table(timed[["label", "method", column, "median"]].rename(columns={"median": "score_x100"}))
                charts[f"pareto/{task}/{column}"] = wandb.plot.scatter(
                    table, column, "score_x100", title=f"{task}: score ×100 against {what}")
    return charts


def log_report(df: pd.DataFrame, out: Path, target: Target = Target()) -> Path:
    """Log the report written in `out` (by `peftbench.analysis.report.write_report` from the runs `df`) as one W&B
    run; returns the run's folder."""
    import wandb

    experiment = experiment_name(df, out)
    Path(target.root).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=target.project, entity=target.entity, mode=target.mode, dir=str(target.root),
                     name=f"report_{experiment}", group=experiment, job_type="report", reinit="finish_previous",
                     config={"experiment": experiment, "report_dir": str(out), "runs": len(df)},
                     settings=wandb.Settings(silent=True))
    logged: dict[str, Any] = {name: as_table(_read_csv(Path(out) / file)) for name, file in TABLES.items()}
    comparisons = _read_csv(Path(out) / TABLES["comparisons"])
    verdicts = comparisons[[c for c in VERDICT_COLUMNS if c in comparisons]] if len(comparisons) else comparisons
    logged["verdicts"] = as_table(verdicts)
    logged |= _charts(df)
    logged |= {f"figures/{png.stem}": wandb.Image(str(png)) for png in sorted(Path(out).glob("*.png"))}
    run.log(logged)
    artifact = wandb.Artifact(f"report-{experiment}", type=REPORT_ARTIFACT)
    for path in sorted(Path(out).glob("*")):
        if path.is_file() and path.suffix in (".md", ".csv", ".png"):
            artifact.add_file(str(path))
    run.log_artifact(artifact)
    folder = Path(run.dir).parent
    run.finish()
    return folder


def upload_records(df: pd.DataFrame, target: Target = Target()) -> list[Path]:
    """Log each completed record of `df` as a W&B run (as its run would have, `peftbench.run.tracking`), its epochs
    as history; returns the runs' folders. Each call makes new runs."""
    folders = []
    for path in df.loc[df["status"] == "completed", "path"]:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        run_dir = Path(path).parent
        run = init_run(record, run_dir, project=target.project, entity=target.entity, mode=target.mode,
                       root=target.root, quiet=True)
        for entry in record.get("history") or []:
            if isinstance(entry, dict):
                row = {"epoch": entry.get("epoch"), "train/epoch_loss": entry.get("train_loss")}
                row |= {f"select/{k}": v for k, v in (entry.get("select") or {}).items()}
                run.log({k: v for k, v in row.items() if v is not None})
        folders.append(Path(run.dir).parent)
        log_record(run, record, run_dir)
    return folders
