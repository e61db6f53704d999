"""Read the run records (`result.json`) of any directory tree and report them like the paper.

Every training run writes one self-describing record; this module is the only reader:

- `load_records` finds `result.json` files recursively, flattens one row per run, reports unreadable records
  as `Problem`s instead of raising, and keeps one record per `run_key` (a resumed sweep that re-ran a job,
  or a directory given twice): the latest completed one by `finished_at`.
- `summarize` aggregates completed runs per cell (task, method, model, design): n seeds, median and sample
  std of the score ×100, the paper's parameter share in %, and the failed runs of the cell.
- `markdown_table` renders paper Table 2 (rows = methods with their share, columns = tasks, median ± std);
  `plot_budget_vs_score` draws paper Figure 1 (score against % of parameters on a log axis).

CLI: ``python -m peftbench.report DIR [DIR ...] [--out OUTDIR] [--task T]`` writes summary.csv (one row per
run, failed ones included), summary.md and budget_vs_score.png into OUTDIR (default: the first DIR).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

RECORD_NAME = "result.json"
REQUIRED_KEYS = ("status", "method", "task", "model", "seed", "run_key")
STATUSES = ("completed", "failed")
PARAM_KEYS = ("trainable", "stored", "paper", "base", "paper_share")
RUN_COLUMNS = [
    "status", "error", "method", "task", "model", "seed", "run_key", "sweep", "design_key", "metric", "score",
    *(f"params.{k}" for k in PARAM_KEYS),
    "time_s", "peak_mem_mb", "train_examples_per_s", "finished_at", "n_dropped", "path",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "task", "method", "model", "design_key", "label", "metric", "n", "n_failed", "median", "std",
    "share_pct", "params_trainable", "params_stored", "params_paper", "seeds",
]  # fmt: skip
MISSING = "—"


@dataclass(frozen=True)
class Problem:
    """A record that could not be used: where it is and why."""

    path: str
    reason: str


def design_key(design: object) -> str:
    """A short stable hash of a record's `design`: runs that differ only by seed share it."""
    canonical = json.dumps(design, sort_keys=True, default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:8]


def _record_files(dirs: Iterable[str | Path], problems: list[Problem]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        if d.is_file():
            files.append(d)
        elif d.is_dir():
            files.extend(sorted(d.rglob(RECORD_NAME)))
        else:
            problems.append(Problem(str(d), "directory does not exist"))
    return files


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    """The record at `path` and None, or None and the reason it cannot be used."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable file: {err}"
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err}"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    missing = [k for k in REQUIRED_KEYS if record.get(k) is None]
    if missing:
        return None, f"missing required keys: {', '.join(missing)}"
    if record["status"] not in STATUSES:
        return None, f"unknown status {record['status']!r}"
    if record["status"] == "completed" and not isinstance(record.get("score"), int | float):
        return None, "completed record has no numeric score"
    return record, None


def _flatten(record: dict, path: Path) -> dict:
    params = record.get("params") or {}
    throughput = record.get("throughput") or {}
    row = {
        **{k: record.get(k) for k in ("status", "error", "method", "task", "model", "seed", "run_key")},
        "sweep": record.get("sweep"),
        "design_key": design_key(record.get("design")),
        "metric": record.get("metric"),
        "score": record.get("score") if record["status"] == "completed" else None,
        **{f"params.{k}": params.get(k) for k in PARAM_KEYS},
        "time_s": record.get("time_s"),
        "peak_mem_mb": record.get("peak_mem_mb"),
        "train_examples_per_s": throughput.get("train_examples_per_s"),
        "finished_at": record.get("finished_at"),
        "path": str(path),
    }
    for name, value in (record.get("metrics") or {}).items():
        row[f"metric.{name}"] = value
    return row


def load_records(dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, list[Problem]]:
    """One row per run found under `dirs` (searched recursively for result.json), and the unusable records.

    A record that cannot be used (unreadable, invalid JSON, missing required keys, a completed run without
    a score) and a directory that does not exist become a `Problem`, never an exception.
    Records sharing a `run_key` are one run: the latest completed one (by `finished_at`) is kept, else the
    latest failed one; `n_dropped` counts the others per row and `df.attrs["duplicates_dropped"]` in total.
    """
    problems: list[Problem] = []
    rows: list[dict] = []
    bad_files: set[Path] = set()
    for path in _record_files(dirs, problems):
        record, reason = _read_record(path)
        if record is not None:
            rows.append(_flatten(record, path))
        elif path.resolve() not in bad_files:  # a directory given twice reports its bad files once
            bad_files.add(path.resolve())
            problems.append(Problem(str(path), reason or "unusable record"))

    by_key: dict[str, list[dict]] = {}
    for row in rows:
        by_key.setdefault(str(row["run_key"]), []).append(row)
    kept = []
    for same_run in by_key.values():
        best = max(
            same_run, key=lambda r: (r["status"] == "completed", str(r["finished_at"] or ""), r["path"])
        )
        kept.append({**best, "n_dropped": len(same_run) - 1})

    metric_columns = sorted({c for row in kept for c in row if c.startswith("metric.")})
    df = pd.DataFrame(kept, columns=RUN_COLUMNS[:-2] + metric_columns + RUN_COLUMNS[-2:])
    df = df.sort_values(["task", "method", "model", "seed", "path"], ignore_index=True)
    df.attrs["duplicates_dropped"] = int(df["n_dropped"].sum()) if len(df) else 0
    return df, problems


def format_share(share_pct: float) -> str:
    """A parameter share in percent as the paper writes it: 0.24%, 0.5%, 3.6%, 100%."""
    if share_pct is None or not math.isfinite(share_pct):
        return "?%"
    return f"{share_pct:.3g}%" if share_pct >= 1 else f"{share_pct:.2g}%"


def _cell_row(key: tuple, done: pd.DataFrame, n_failed: int, fallback: pd.DataFrame) -> dict:
    scores = done["score"].astype(float) * 100
    source = done if len(done) else fallback
    share = pd.to_numeric(source["params.paper_share"], errors="coerce").median() * 100
    return {
        **dict(zip(("task", "method", "model", "design_key"), key, strict=True)),
        "metric": source["metric"].dropna().iloc[0] if source["metric"].notna().any() else None,
        "n": len(done),
        "n_failed": n_failed,
        "median": scores.median() if len(done) else math.nan,
        "std": scores.std(ddof=1) if len(done) > 1 else math.nan,
        "share_pct": share,
        **{
            f"params_{k}": pd.to_numeric(source[f"params.{k}"], errors="coerce").median()
            for k in ("trainable", "stored", "paper")
        },
        "seeds": sorted(int(s) for s in done["seed"]),
    }


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell (task, method, model, design): n seeds, median and sample std (ddof=1) of score ×100.

    Only completed runs enter the statistics; `n_failed` counts the failed runs of the cell (a failed run
    without a design joins its (task, method, model) when that has a single design). A cell with only
    failed runs has n = 0 and a NaN median. `label` is the Table 2 row name, e.g. ``lora (0.24%)``.
    """
    keys = ["task", "method", "model", "design_key"]
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    done = df[df["status"] == "completed"]
    failed = df[df["status"] == "failed"].copy()
    done_keys = set(done.groupby(keys).groups)
    no_design = design_key(None)
    for i, row in failed.iterrows():
        designs = {k[3] for k in done_keys if k[:3] == (row["task"], row["method"], row["model"])}
        if row["design_key"] == no_design and len(designs) == 1:
            failed.at[i, "design_key"] = designs.pop()

    failed_groups = dict(list(failed.groupby(keys))) if len(failed) else {}
    rows = [_cell_row(k, g, len(failed_groups.get(k, ())), g) for k, g in done.groupby(keys)]
    rows += [_cell_row(k, done.iloc[:0], len(g), g) for k, g in failed_groups.items() if k not in done_keys]
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    summary["label"] = [
        f"{m} ({format_share(s)})" if math.isfinite(s) else m
        for m, s in zip(summary["method"], summary["share_pct"], strict=True)
    ]
    # Two designs of one method with the same share would share a row name: tell them apart.
    clash = summary.groupby(["model", "label"])["design_key"].transform("nunique") > 1
    summary.loc[clash, "label"] = summary.loc[clash, "label"] + " [" + summary.loc[clash, "design_key"] + "]"
    return summary.sort_values(["task", "model", "share_pct", "method"], ignore_index=True)


def _format_cell(cell: pd.Series | None) -> str:
    if cell is None or cell["n"] == 0:
        return MISSING
    if cell["n"] == 1 or not math.isfinite(cell["std"]):
        return f"{cell['median']:.1f}"
    return f"{cell['median']:.1f} ± {cell['std']:.1f}"


def markdown_table(summary: pd.DataFrame) -> str:
    """Paper Table 2: rows = methods with their share, columns = tasks, cells ``median ± std`` (×100).

    A cell with one seed shows the median alone; a missing or all-failed cell shows ``—``.
    With several models, one table per model under a heading.
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
    parts = []
    for model in models:
        sub = summary[summary["model"] == model]
        methods = sub.sort_values(["share_pct", "method"]).drop_duplicates(["method", "design_key"])
        cells = {(r["method"], r["design_key"], r["task"]): r for _, r in sub.iterrows()}
        lines = [
            "| method (share) | " + " | ".join(tasks) + " |",
            "|:---|" + "---:|" * len(tasks),
        ]
        for _, m in methods.iterrows():
            row = [_format_cell(cells.get((m["method"], m["design_key"], t))) for t in tasks]
            lines.append(f"| {m['label']} | " + " | ".join(row) + " |")
        n = sub.loc[sub["n"] > 0, "n"]
        caption = f"Model {model}: no completed runs."
        if len(n):
            seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
            caption = (
                f"Model {model}; median ± sample std ×100 over {seeds} seed(s) of completed runs on the full "
                f"dev set ({metrics}); share = the paper's parameter count / base model."
            )
        heading = [f"### {model}", ""] if len(models) > 1 else []
        parts.append("\n".join([*heading, *lines, "", caption]))
    return "\n\n".join(parts)


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
    series_names = sorted({(m, mo) for m, mo in zip(summary["method"], summary["model"], strict=True)})
    markers = "osD^v<>phX*P"
    style = {s: (markers[i % len(markers)], f"C{i % 10}") for i, s in enumerate(series_names)}
    for ax, t in zip(axes, tasks, strict=False):
        cells = summary[summary["task"] == t]
        for (method, model), points in cells.groupby(["method", "model"]):
            points = points.sort_values("share_pct")
            marker, colour = style[(method, model)]
            name = f"{method} ({model})" if several_models else method
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


def counts_line(df: pd.DataFrame, problems: list[Problem]) -> str:
    """``N completed, N failed, N duplicates dropped, N problems``."""
    completed = int((df["status"] == "completed").sum())
    failed = int((df["status"] == "failed").sum())
    dropped = int(df["n_dropped"].sum()) if len(df) else 0
    return f"{completed} completed, {failed} failed, {dropped} duplicates dropped, {len(problems)} problems"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 when no usable record was found)."""
    parser = argparse.ArgumentParser(prog="python -m peftbench.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="directories searched recursively for result.json")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the first DIR)")
    parser.add_argument("--task", default=None, help="report only this task")
    args = parser.parse_args(argv)

    df, problems = load_records(args.dirs)
    if args.task is not None:
        df = df[df["task"] == args.task].reset_index(drop=True)
    if df.empty:
        where = ", ".join(str(d) for d in args.dirs) + (f" for task {args.task}" if args.task else "")
        print(
            f"error: no usable {RECORD_NAME} records in {where} ({len(problems)} problems)", file=sys.stderr
        )
        return 2

    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = out / "summary.csv", out / "summary.md", out / "budget_vs_score.png"
    df.to_csv(csv_path, index=False)
    table = markdown_table(summarize(df))
    problem_lines = [f"- `{p.path}`: {p.reason}" for p in problems]
    md_path.write_text("\n".join([table, "", counts_line(df, problems), "", *problem_lines]).rstrip() + "\n")
    plot_budget_vs_score(df, png_path)

    print(table)
    print()
    print(counts_line(df, problems))
    for path in (csv_path, md_path, png_path):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
