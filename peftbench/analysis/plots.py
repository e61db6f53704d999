"""The report's figures: paper Figure 1 (score against the share of parameters, `plot_budget_vs_score`) and the
Pareto fronts of score against parameters, training time and inference overhead (`plot_pareto`).

Both draw one panel per task (scores of two tasks are not on one scale) and put ticks only where their labels fit;
the Pareto panels label every point with its cell's label (placed by `adjustText`, then `separate`d so that no two
overlap), Figure 1 names its series in a legend. Both say under the figure what a point and a bar are, what the
scores are on (the full dev set or the subset of ``data.max_eval_samples``) and which cells are left out and why.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from adjustText import adjust_text
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, NullLocator

from peftbench.analysis.cells import format_share, summarize
from peftbench.analysis.tables import dev_set_words

MARKERS = "osD^v<>phX*P"
#: the least distance between two tick labels on a log axis, as a share of the axis' decades
MIN_TICK_GAP = 0.09
POINT_WORDS = ("Point: a cell's median score ×100 over its seeds at the lr chosen on the held-out split; "
               "bar: ± one sample standard deviation over those seeds (none with one seed).")


def _finite_positive(value: object) -> bool:
    return isinstance(value, float | int | np.floating | np.integer) and math.isfinite(value) and value > 0


def log_ticks(values: list[float], lo: float, hi: float, gap: float = MIN_TICK_GAP) -> list[float]:
    """Tick positions on a log axis from `lo` to `hi`: `values` in order, each kept only when it lies at least `gap`
    of the axis' decades past the last one kept, so that no two tick labels print over each other."""
    span = max(math.log10(hi / lo), 1e-9)
    kept: list[float] = []
    for v in sorted(v for v in values if lo <= v <= hi):
        if not kept or math.log10(v / kept[-1]) / span >= gap:
            kept.append(v)
    return kept


def nice_values(lo: float, hi: float) -> list[float]:
    """1, 2, 3 and 5 × 10^k between `lo` and `hi`, with both ends (rounded to 2 significant figures) where fewer
    than two such values fall inside: the candidate ticks of a log axis spanning less than a decade."""
    values = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
              for m in (1, 2, 3, 5) if lo <= m * 10.0**k <= hi]
    return values if len(values) >= 2 else sorted({float(f"{lo:.2g}"), *values, float(f"{hi:.2g}")})


def set_log_axis(ax, values: list[float], fmt, pad: tuple[float, float] = (1.5, 1.5), nice: bool = False) -> None:
    """A log x axis around `values` (padded by the factors `pad`), ticked at `values` (or at round numbers when
    `nice`) thinned by `log_ticks`, no minor labels."""
    lo, hi = min(values) / pad[0], max(values) * pad[1]
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = log_ticks(nice_values(lo, hi) if nice else values, lo, hi)
    ax.set_xticks(ticks, labels=[fmt(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def place_labels(ax, texts: list, xs: list[float], ys: list[float]) -> None:
    """Move the point labels `texts` apart (and off the points at `xs`, `ys`) with adjustText, `separate` whatever
    it left overlapping, then draw a thin line from each point to its label where the label moved away."""
    if not texts:
        return
    for text in texts:
        text.set_in_layout(False)  # labels move inside the panel: they must not move the panels
    to_data = ax.transData.inverted()
    for text, x, y in zip(texts, xs, ys, strict=True):  # start right of and above the point, not on it
        px, py = ax.transData.transform((x, y))
        text.set_position(to_data.transform((px + 7, py + 4)))
    adjust_text(texts, x=xs, y=ys, ax=ax, expand=(1.1, 1.3), ensure_inside_axes=True, iter_lim=1000)
    separate(ax, texts)
    renderer = ax.figure.canvas.get_renderer()
    for text, x, y in zip(texts, xs, ys, strict=True):
        box, (px, py) = text.get_window_extent(renderer), ax.transData.transform((x, y))
        tx, ty = min(max(px, box.x0), box.x1), min(max(py, box.y0), box.y1)  # the box's point nearest the point
        if math.hypot(tx - px, ty - py) > 12:
            mx, my = ax.transData.inverted().transform((tx, ty))
            ax.plot([x, mx], [y, my], color="0.6", lw=0.5, zorder=1, scalex=False, scaley=False)[0].set_in_layout(False)


def separate(ax, texts: list, pad_px: float = 1.0) -> None:
    """Shift labels up or down (the smaller move that stays inside the panel), one at a time, until no two
    overlap: what `place_labels` guarantees whatever adjustText managed."""
    renderer = ax.figure.canvas.get_renderer()
    panel = ax.get_window_extent(renderer)
    placed: list = []

    def overlaps(box, other) -> bool:
        return box.x1 > other.x0 and box.x0 < other.x1 and box.y1 > other.y0 and box.y0 < other.y1

    for text in sorted(texts, key=lambda t: t.get_window_extent(renderer).y0):
        box = text.get_window_extent(renderer)
        moves = []
        for direction in (1, -1):
            dy = 0.0
            while blocking := [o for o in placed if overlaps(box.translated(0, dy), o)]:
                dy = (max(o.y1 for o in blocking) - box.y0 + pad_px if direction > 0
                      else min(o.y0 for o in blocking) - box.y1 - pad_px)
            moved = box.translated(0, dy)
            moves.append((moved.y0 < panel.y0 or moved.y1 > panel.y1, abs(dy), dy))
        _, _, dy = min(moves)
        if dy:
            x, y = ax.transData.transform(text.get_position())
            text.set_position(ax.transData.inverted().transform((x, y + dy)))
        placed.append(text.get_window_extent(renderer))


def overlapping_labels(fig: Figure) -> list[tuple[str, str]]:
    """The pairs of texts drawn in one panel of `fig` (point labels, tick labels) whose boxes overlap: none in a
    figure of this module."""
    renderer = fig.canvas.get_renderer()
    pairs = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        groups = [[t for t in ax.texts if t.get_text()], [t for t in ax.get_xticklabels() if t.get_text()]]
        for group in groups:
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in group]
            for i, (a, box) in enumerate(boxes):
                for b, other in boxes[i + 1:]:
                    if box.overlaps(other):
                        pairs.append((a, b))
    return pairs


def footnote(fig: Figure, lines: list[str], width_in: float) -> None:
    """Words under the panels (wrapped to the figure's width); the panels' layout leaves room for them."""
    wrapped = [w for line in lines for w in textwrap.wrap(line, width=int(width_in * 15))]
    height = (0.16 * len(wrapped) + 0.1) / fig.get_figheight()
    fig.get_layout_engine().set(rect=(0, height, 1, 1 - height))
    fig.text(0.01, height - 0.02 / fig.get_figheight(), "\n".join(wrapped), va="top", ha="left", fontsize=8,
             color="0.25")


def left_out_words(left_out: list[str]) -> list[str]:
    return [f"Left out: {'; '.join(left_out)}."] if left_out else []


def _grid(n: int, ncols_max: int, w: float, h: float, extra_h: float) -> tuple[Figure, np.ndarray]:
    ncols = min(n, ncols_max)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(w * ncols, h * nrows + extra_h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def plot_budget_vs_score(df: pd.DataFrame, path: str | Path | None, task: str | None = None) -> Figure:
    """Paper Figure 1: score ×100 against % of parameters (log axis), one panel per task, one marker and colour per
    method. A point per cell is the median over seeds with the sample std as error bar (when > 1 seed); the points
    of one method at several budgets are joined; the legend under each panel names the series (no labels on the
    points, which pile up where methods share a budget). Saves a PNG at `path` (if given)."""
    every = summarize(df if task is None else df[df["task"] == task])
    summary = every[(every["n"] > 0) & (every["share_pct"] > 0)]
    left_out = [f"{r['task']} {r['label']} ({'no completed run' if r['n'] == 0 else 'no parameters: not on a log axis'})"
                for _, r in every.drop(summary.index).iterrows()]
    tasks = sorted(summary["task"].unique()) or [task or "no completed runs"]
    several_models = summary["model"].nunique() > 1
    series = ["method", "model", "setting"]
    style = {s: (MARKERS[i % len(MARKERS)], f"C{i % 10}")
             for i, s in enumerate(sorted(set(summary[series].itertuples(index=False, name=None))))}
    fig, axes = _grid(len(tasks), 3, 6.4, 4.6 + 0.19 * len(style), 0.6)
    for ax, t in zip(axes.ravel(), tasks, strict=False):
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
        metric = cells["metric"].dropna().iloc[0] if cells["metric"].notna().any() else "score"
        if len(cells):  # ticks at the budgets present, labelled like the table, where they fit
            set_log_axis(ax, sorted(cells["share_pct"].unique()), format_share, pad=(1.6, 2.2))
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))
        else:
            ax.set_xscale("log")
            ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("fine-tuned parameters (% of the base model, paper count)")
        ax.set_ylabel(f"{metric} ×100 (median over seeds)")
        ax.set_title(t)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.ravel()[len(tasks):]:
        ax.set_visible(False)
    notes = [POINT_WORDS + f" Scores on {dev_set_words(summary)}." if len(summary) else POINT_WORDS,
             *left_out_words(left_out)]
    footnote(fig, notes, fig.get_figwidth())
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def pareto_front(x: list[float], y: list[float]) -> list[int]:
    """The indices of the points no other point beats on both sides (lower x, higher y), by increasing x."""
    order = sorted(range(len(x)), key=lambda i: (x[i], -y[i]))
    front, best = [], -math.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return front


#: (column, axis label, tick format, axis: "share" = log, ticked at the values; "log" = log, round ticks; "linear")
PANELS = (("share_pct", "fine-tuned parameters (% of the base model)", format_share, "share"),
          ("train_time_s", "training time (s, median over runs)", lambda v: f"{v:g}", "log"),
          ("inference_ratio", "inference time × the frozen base model (×: merged)", None, "linear"))
WHY_MISSING = {"share_pct": "no parameter share", "train_time_s": "no training time recorded",
               "inference_ratio": "inference cost not timed (train.inference_batches=0)"}


def plot_pareto(costs: pd.DataFrame, path: str | Path, cells: pd.DataFrame | None = None) -> Figure | None:
    """Score against parameters, training time and inference overhead: a row of panels per task, one panel per cost
    any of its cells measured, a point per cell (its method's colour) and the Pareto front (the cells no other cell
    beats on both cost and score) as a dashed line; cells a panel cannot place are named under the figure. Nothing
    when no cell has a score."""
    if costs.empty:
        return None
    tasks = sorted(costs["task"].unique())
    columns = [p for p in PANELS if any(_finite_positive(v) for v in costs[p[0]])]
    fig, axes = _grid(len(tasks) * len(columns), len(columns), 5.6, 4.4, 0.6)
    methods = sorted(costs["method"].unique())
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    left_out: list[str] = []
    labelled: list[tuple] = []  # placed once the layout is final: adjustText works in display coordinates
    for row, t in zip(axes, tasks, strict=False):
        task_costs = costs[costs["task"] == t].reset_index(drop=True)
        for ax, (column, label, fmt, axis) in zip(row, columns, strict=True):
            placed = task_costs[[_finite_positive(v) for v in task_costs[column]]]
            missing = task_costs.drop(placed.index)
            if len(missing):
                left_out.append(f"{t} {label.split(' (')[0]}: {', '.join(missing['label'])} "
                                f"({WHY_MISSING[column]})")
            xs, ys = list(placed[column].astype(float)), list(placed["median"].astype(float))
            texts = []
            for (_, c), x, y in zip(placed.iterrows(), xs, ys, strict=True):
                ax.scatter([x], [y], color=colours[c["method"]], zorder=3)
                texts.append(ax.text(x, y, c["label"], fontsize=7, color=colours[c["method"]]))
                if column == "inference_ratio" and _finite_positive(c["inference_ratio_merged"]):
                    ax.scatter([c["inference_ratio_merged"]], [y], color=colours[c["method"]], marker="x", zorder=3)
            ax.margins(y=0.15)  # room above and below the points for their labels
            if xs:
                front = pareto_front(xs, ys)
                ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", ls="--", color="0.4",
                        lw=1, zorder=2, marker="o", ms=11, mfc="none", label="Pareto front")
                ax.legend(fontsize=7, loc="lower right")
                if axis != "linear":
                    set_log_axis(ax, xs, fmt, pad=(1.5, 1.8), nice=axis == "log")
            ax.set_xlabel(label)
            ax.set_ylabel("score ×100 (median over seeds)")
            ax.set_title(t)
            ax.grid(True, which="major", alpha=0.3)
            labelled.append((ax, texts, xs, ys))
    notes = ["Point: a cell's median score ×100 over its seeds at the lr chosen on the held-out split; dashed and "
             "ringed: the Pareto front (no other cell costs less and scores higher); training time and inference ratio are "
             "medians over the runs that measured them."]
    if cells is not None and len(cells):
        notes[0] += f" Scores on {dev_set_words(cells[cells['n'] > 0])}."
    footnote(fig, notes + left_out_words(left_out), fig.get_figwidth())
    fig.draw_without_rendering()
    for ax, texts, xs, ys in labelled:
        place_labels(ax, texts, xs, ys)
    fig.savefig(path, dpi=120)
    return fig
