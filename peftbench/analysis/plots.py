"""The report's figures: paper Figure 1 (score against the share of parameters) and the pareto fronts of score
against stored parameters, training time and inference overhead.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from peftbench.analysis.cells import format_share, summarize


def plot_budget_vs_score(df: pd.DataFrame, path: str | Path | None, task: str | None = None) -> Figure:
    """Paper Figure 1: score ×100 against % of parameters (log axis), one marker and colour per method.

    A point per cell is the median over seeds with the sample std as error bar (when > 1 seed); the points
    of one method at several budgets are joined. One subplot per task. Saves a PNG at `path` (if given).
    """
    summary = summarize(df if task is None else df[df["task"] == task])
    summary = summary[(summary["n"] > 0) & (summary["share_pct"] > 0)]
    tasks = sorted(summary["task"].unique()) or [task or "no completed runs"]
    ncols = min(len(tasks), 3)
    nrows = math.ceil(len(tasks) / ncols)
    fig = Figure(figsize=(5.5 * ncols, 4.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    several_models = summary["model"].nunique() > 1
    series = ["method", "model", "setting"]
    series_names = sorted(set(summary[series].itertuples(index=False, name=None)))
    markers = "osD^v<>phX*P"
    style = {s: (markers[i % len(markers)], f"C{i % 10}") for i, s in enumerate(series_names)}
    for ax, t in zip(axes, tasks, strict=False):
        cells = summary[summary["task"] == t]
        for (method, model, setting), points in cells.groupby(series):
            points = points.sort_values("share_pct")
            marker, colour = style[(method, model, setting)]
            name = f"{method} ({model})" if several_models else method
            name += f" · {setting}" if setting else ""
            ax.errorbar(
                points["share_pct"], points["median"], yerr=points["std"].where(points["n"] > 1),
                fmt=marker + ("-" if len(points) > 1 else ""), color=colour, capsize=3, label=name, ms=7,
            )  # fmt: skip
            for x, y in zip(points["share_pct"], points["median"], strict=True):
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8, color=colour)
        metric = cells["metric"].dropna().iloc[0] if cells["metric"].notna().any() else "score"
        ax.set_xscale("log")
        if len(cells):  # ticks at the budgets present, labelled like the table; room for the point labels
            shares = sorted(cells["share_pct"].unique())
            ax.set_xticks(shares, labels=[format_share(x) for x in shares])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(shares[0] / 1.5, shares[-1] * 2.0)
        ax.set_xlabel("fine-tuned parameters (% of the base model, paper count)")
        ax.set_ylabel(f"{metric} ×100 (median over seeds)")
        ax.set_title(t)
        ax.grid(True, which="both", alpha=0.3)
        if len(cells):
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def plot_pareto(costs: pd.DataFrame, path: str | Path) -> Figure | None:
    """Score against parameters, against training time and against inference overhead: one panel each, a point
    per cell (its method's colour); nothing when no run measured its inference cost."""
    if costs.empty or not costs["n_timed"].any():
        return None
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    methods = sorted(costs["method"].unique())
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    panels = (("share_pct", "fine-tuned parameters (% of the base model)", True),
              ("train_time_s", "training time (s, median over runs)", True),
              ("inference_ratio", "inference time × the frozen base model", False))
    for ax, (column, label, log) in zip(axes, panels, strict=True):
        for _, c in costs.iterrows():
            x = c[column]
            if not (isinstance(x, float | int) and math.isfinite(x) and x > 0):
                continue
            ax.scatter([x], [c["median"]], color=colours[c["method"]])
            ax.annotate(c["label"], (x, c["median"]), textcoords="offset points", xytext=(5, 4), fontsize=7,
                        color=colours[c["method"]])
            if column == "inference_ratio" and math.isfinite(c["inference_ratio_merged"]):
                ax.scatter([c["inference_ratio_merged"]], [c["median"]], color=colours[c["method"]], marker="x")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label + (" (×: merged)" if column == "inference_ratio" else ""))
        ax.set_ylabel("score ×100 (median over seeds)")
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    return fig
