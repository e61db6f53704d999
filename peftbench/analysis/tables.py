"""The report's text: paper Table 2 from the cells (median ± std and mean [95% CI] ×100), the per-lr table, and
the lines that count the runs and name their precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from peftbench.analysis.cells import CELL, NO_LR, format_lr, grid_edge
from peftbench.analysis.records import Problem
from peftbench.run.record import EVALUATION, TUNING

MISSING = "—"


def seeds_caption(cells: pd.DataFrame) -> str:
    """Which seeds the dev columns of `cells` are on: the evaluation seeds (which took no part in any choice), or
    the tuning seeds (no evaluation seeds yet: chosen and reported on the same runs, so biased upward); a table that
    has both marks the tuning-seed cells with †."""
    on = cells["dev_on"].fillna(TUNING) if "dev_on" in cells else pd.Series(TUNING, index=cells.index)
    if (on == EVALUATION).all():
        return ("dev on evaluation seeds only: seeds that took no part in the lr choice (made on the tuning seeds' "
                "held-out split)")
    if (on == TUNING).all():
        return ("dev on the tuning seeds: no evaluation seeds yet, so each cell is chosen and reported on the same "
                "runs (the maximum of noisy means is biased upward)")
    return ("dev on evaluation seeds (which took no part in the lr choice), except the cells marked † (no evaluation "
            "seeds yet: dev of the tuning seeds that chose the lr, biased upward)")


def format_cell(cell: pd.Series | None) -> str:
    """``median ± std (lr 5e-4)``; the median alone for one seed; ``—`` for no completed run; † when the dev score is
    of the tuning seeds although other cells have evaluation seeds (set by `markdown_table`)."""
    if cell is None or cell["n"] == 0:
        return MISSING
    text = f"{cell['median']:.1f}" + ("†" if cell.get("_dagger", False) else "")
    if cell["n"] > 1 and math.isfinite(cell["std"]):
        text += f" ± {cell['std']:.1f}"
    return text + (f" (lr {format_lr(cell['lr'])})" if math.isfinite(cell.get("lr", math.nan)) else "")


def format_ci(cell: pd.Series | None) -> str:
    """``mean [ci_low, ci_high]``; the mean alone for one seed."""
    if cell is None or cell["n"] == 0:
        return MISSING
    ci = f" [{cell['ci_low']:.1f}, {cell['ci_high']:.1f}]" if math.isfinite(cell["ci_low"]) else ""
    return f"{cell['mean']:.1f}{ci}"


def _task_grid(sub: pd.DataFrame, tasks: list[str], fmt: Callable[[pd.Series | None], str]) -> list[str]:
    """Rows = methods with their share (and lr, in the per-lr view), columns = tasks, cells `fmt(cell)`."""
    identity = ["method", "design_key", "setting", "label"] + (["lr_key"] if sub.duplicated(CELL).any() else [])
    sub = sub.assign(lr_key=sub["lr"].fillna(NO_LR))
    rows = sub.sort_values(["share_pct", "method", "setting", "lr_key"]).drop_duplicates(identity)
    cells = {(*(r[k] for k in identity), r["task"]): r for _, r in sub.iterrows()}
    lines = ["| method (share) | " + " | ".join(tasks) + " |", "|:---|" + "---:|" * len(tasks)]
    for _, m in rows.iterrows():
        row = [fmt(cells.get((*(m[k] for k in identity), t))) for t in tasks]
        lines.append(f"| {m['label']} | " + " | ".join(row) + " |")
    return lines


def markdown_table(summary: pd.DataFrame) -> str:
    """Paper Table 2: rows = methods with their share, columns = tasks, cells ``median ± std (lr …)`` (×100),
    then the same cells as ``mean [95% CI]``.

    A cell with one seed shows the median (mean) alone; a missing or all-failed cell shows ``—``.
    With several models, one pair of tables per model under a heading.
    """
    if summary.empty:
        return "_No runs to report._"
    tasks = sorted(summary["task"].unique())
    metrics = ", ".join(
        f"{t}: {summary.loc[summary['task'] == t, 'metric'].dropna().iloc[0]}"
        if summary.loc[summary["task"] == t, "metric"].notna().any() else t
        for t in tasks
    )  # fmt: skip
    models = sorted(summary["model"].unique())
    on = summary["dev_on"].fillna(TUNING) if "dev_on" in summary else pd.Series(TUNING, index=summary.index)
    mixed = (on[summary["n"] > 0] == EVALUATION).any() and (on[summary["n"] > 0] == TUNING).any()
    summary = summary.assign(_dagger=mixed & (on == TUNING))
    parts = []
    for model in models:
        sub = summary[summary["model"] == model]
        n = sub.loc[sub["n"] > 0, "n"]
        heading = [f"### {model}", ""] if len(models) > 1 else []
        if not len(n):
            parts.append("\n".join([*heading, *_task_grid(sub, tasks, format_cell), "", f"Model {model}: no "
                                    "completed runs."]))  # fmt: skip
            continue
        seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
        caption = (
            f"Model {model}; median ± sample std ×100 over {seeds} seed(s) of completed runs on "
            f"{dev_set_words(sub[sub['n'] > 0])} ({metrics}); share = the paper's parameter count / base model"
        )
        if sub["lr"].notna().any():
            caption += "; (lr …) = the cell's learning rate, chosen on the held-out split of train when it ran several"
        caption += "; " + seeds_caption(sub[sub["n"] > 0])
        ci_caption = (
            "Mean ×100 [95% confidence interval of the mean: Student's t with n − 1 df] over the same runs; "
            "one seed: the mean alone."
        )
        main, ci = _task_grid(sub, tasks, format_cell), _task_grid(sub, tasks, format_ci)
        parts.append("\n".join([*heading, *main, "", caption + ".", "", *ci, "", ci_caption]))
    return "\n\n".join(parts)


def dev_set_words(cells: pd.DataFrame) -> str:
    """What the cells' scores are on: "the full dev set", or the subset ``data.max_eval_samples`` made."""
    sizes = cells["eval_samples"] if "eval_samples" in cells else pd.Series(dtype=float)
    subsets = sorted({int(v) for v in sizes.dropna()})
    if not subsets:
        return "the full dev set"
    if len(subsets) == 1 and sizes.notna().all():
        return (f"a {subsets[0]:,}-example subset of the dev set, the same in every run "
                f"(data.max_eval_samples={subsets[0]})")
    return (f"the full dev set or a subset of it (data.max_eval_samples={', '.join(map(str, subsets))} where a "
            "row's setting says so)")


def markdown_lr_table(per_lr: pd.DataFrame) -> str:
    """Every lr of the cells that ran several (`summarize(df, choose_lr=False)`): held-out and dev side by side,
    the chosen one marked; empty when every cell ran one lr."""
    if per_lr.empty or not per_lr.duplicated(CELL).any():
        return ""
    multi = per_lr[per_lr.duplicated(CELL, keep=False)]
    model = multi["model"].nunique() > 1
    lines = [
        "| task | method (share) | lr | runs | failed | held-out ×100 | dev median ± std | dev mean [95% CI] | chosen |",
        "|:---|:---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for _, r in multi.iterrows():
        label = f"{r['label']}, {r['model']}" if model else r["label"]
        held_out = f"{r['select_score']:.1f}" if math.isfinite(r["select_score"]) else MISSING
        dev = format_cell(r.drop("lr"))
        edge = grid_edge(r) if r["chosen"] else ""
        mark = f"✓ ({edge})" if edge else "✓" if r["chosen"] else ""
        lines.append(f"| {r['task']} | {label} | {format_lr(r['lr'])} | {r['n']} | {r['n_failed']} | {held_out} "
                     f"| {dev} | {format_ci(r)} | {mark} |")  # fmt: skip
    caption = (
        "Learning rate per cell. held-out = the mean over seeds of the selection score of the kept epoch, on the "
        "split held out of train. The chosen lr (✓) has the highest held-out score; ties: fewer failed runs, then "
        "the smaller lr; an lr whose runs all failed cannot be chosen. The dev columns never enter the choice. "
        "(lowest) / (highest): the choice sits at the edge of a grid of three or more lrs, so a better lr may lie "
        "beyond it; extend the grid past that edge (`train.lr_scale`) and the report chooses again."
    )
    return "\n".join(["## Learning rate per cell", "", *lines, "", caption])


def counts_line(df: pd.DataFrame, problems: list[Problem]) -> str:
    """``N completed, N failed, N duplicates dropped, N problems``."""
    completed = int((df["status"] == "completed").sum())
    failed = int((df["status"] == "failed").sum())
    dropped = int(df["n_dropped"].sum()) if len(df) else 0
    return f"{completed} completed, {failed} failed, {dropped} duplicates dropped, {len(problems)} problems"


def precision_line(df: pd.DataFrame) -> str:
    """Which precision the runs computed in: ``Precision: every run fp32.``, or the count of each and the rule that
    runs of different precision are never pooled or compared (each precision is its own setting)."""
    known = df["precision"].dropna() if "precision" in df else pd.Series(dtype=object)
    counts = known.value_counts().sort_index()
    unknown = len(df) - len(known)
    tail = f" ({unknown} run(s) of unknown precision)" if unknown else ""
    if len(counts) == 1:
        return f"Precision: every run of known precision {counts.index[0]}{tail}." if unknown else \
            f"Precision: every run {counts.index[0]}."
    if len(counts) == 0:
        return "Precision: unknown for every run."
    shown = ", ".join(f"{name} {n}" for name, n in counts.items())
    return (f"Precision: runs of several precisions ({shown}){tail}; each precision is its own setting (its cells "
            "carry mixed_precision=...), and runs of different precision are never pooled or compared.")


def cpu_kind_line(df: pd.DataFrame) -> str:
    """Which CPU kinds the runs computed on (``cpu_isa``; records before 2026-12-07 do not say), and what that
    means: fp32 is bitwise only within one kind, and runs of several kinds are pooled ("" without runs)."""
    kinds = df["cpu_isa"] if "cpu_isa" in df else pd.Series([None] * len(df), dtype=object)
    counts = kinds.dropna().value_counts().sort_index()
    unknown = int(kinds.isna().sum())
    if not len(counts) and not unknown:
        return ""
    shown = [f"{name} {n}" for name, n in counts.items()] + ([f"unrecorded {unknown}"] if unknown else [])
    return (f"CPU kinds: {', '.join(shown)}. fp32 is bitwise only within one kind; runs of several kinds are pooled "
            "(the seed-paired tests count the kind as run-to-run variation, docs/reference.md, Determinism).")
