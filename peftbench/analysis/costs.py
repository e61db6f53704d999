"""What each reported cell stores and costs: the artefact beside its records (`peftbench.run.artefacts`), its
training time and its inference overhead over the frozen base model (`peftbench.run.latency`), per cell.
`peftbench.analysis.report` puts these tables into summary.md; `peftbench.analysis.plots.plot_pareto` draws
score against each (pareto.png)."""

from __future__ import annotations

import math

import pandas as pd

from peftbench.analysis.cells import CELL
from peftbench.analysis.tables import MISSING


def markdown_artefact_table(df: pd.DataFrame, cells: pd.DataFrame) -> str:
    """Per cell, what a run stores (``modules.safetensors``, peftbench.run.artefacts): the stored parameter count and
    the file's size; empty when no record has an artefact (records from before artefacts, or save=none)."""
    sizes = pd.to_numeric(df.get("artefact_bytes", pd.Series(dtype=float)), errors="coerce")
    if df.empty or not sizes.notna().any():
        return ""
    done = df[(df["status"] == "completed") & sizes.notna()].assign(_bytes=sizes)
    lines = ["| task | method (share) | stored parameters | artefact (median over runs) |", "|:---|:---|---:|---:|"]
    for _, cell in cells.iterrows():
        runs = done[(done[CELL] == cell[CELL]).all(axis=1)]
        if len(runs):
            size = runs["_bytes"].median()
            lines.append(f"| {cell['task']} | {cell['label']} | {int(cell['params_stored']):,d} | "
                         f"{size / 1024:,.1f} KiB |")
    caption = ("What each run saved beside its record (`save=modules`: the stored modules, heads and trained biases; "
               "`python -m peftbench` … `save=none|modules|full`); `peftbench.load_run(run_dir)` reloads it.")
    return "\n".join(["## Stored artefact per cell", "", *lines, "", caption])


def cost_frame(df: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per reported cell (at its chosen lr): score, paper share, median training time (s) and median inference
    time over the frozen base model's (unmerged and merged), over the runs that measured it (peftbench.run.latency)."""
    rows = []
    done = df[df["status"] == "completed"]
    for _, cell in cells[cells["n"] > 0].iterrows():
        runs = done[(done[CELL] == cell[CELL]).all(axis=1)]
        if "lr" in runs and math.isfinite(cell["lr"]):
            runs = runs[pd.to_numeric(runs["lr"], errors="coerce").sub(cell["lr"]).abs() < 1e-12]
        ratio = pd.to_numeric(runs.get("inference_ratio"), errors="coerce")
        merged = pd.to_numeric(runs.get("inference_ratio_merged"), errors="coerce")
        rows.append({"task": cell["task"], "label": cell["label"], "method": cell["method"], "median": cell["median"],
                     "share_pct": cell["share_pct"], "n_timed": int(ratio.notna().sum()),
                     "train_time_s": pd.to_numeric(runs.get("train_time_s"), errors="coerce").median(),
                     "inference_ratio": ratio.median(), "inference_ratio_merged": merged.median()})
    return pd.DataFrame(rows)


def markdown_cost_table(costs: pd.DataFrame) -> str:
    """Training time and inference overhead per cell; empty when no run measured its inference cost."""
    if costs.empty or not costs["n_timed"].any():
        return ""
    lines = ["| task | method (share) | score ×100 | training s | inference × base | merged × base | runs timed |",
             "|:---|:---|---:|---:|---:|---:|---:|"]
    for _, c in costs[costs["n_timed"] > 0].iterrows():
        merged = f"{c['inference_ratio_merged']:.2f}" if math.isfinite(c["inference_ratio_merged"]) else MISSING
        lines.append(f"| {c['task']} | {c['label']} | {c['median']:.1f} | {c['train_time_s']:.0f} | "
                     f"{c['inference_ratio']:.2f} | {merged} | {c['n_timed']} |")
    caption = ("Inference cost: forward time on dev batches over the frozen base model's, timed in each run's own "
               "process, alternating the two (median over runs; merged: linear modules merged into their weights). "
               "A ratio measured while other work shares the CPU is noisy: compare cells of one report. "
               "Pareto fronts: pareto.png.")
    return "\n".join(["## Cost per cell", "", *lines, "", caption])
