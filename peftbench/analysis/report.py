"""A folder's report, from records to files: what ``python -m peftbench.report DIR`` writes.

Records (`peftbench.analysis.records.load_records`: one row per run, unusable records as problems) → cells
(`peftbench.analysis.cells.summarize`: per cell at the lr chosen on the held-out split) → text
(`peftbench.analysis.tables`: paper Table 2, the per-lr table), costs (`peftbench.analysis.costs`), comparisons
(`peftbench.analysis.compare`) and figures (`peftbench.analysis.plots`) → summary.md, summary.csv (one row per
run, failed ones included), cells.csv (one row per cell at its chosen lr), cells_by_lr.csv (one row per cell × lr),
comparisons.csv, budget_vs_score.png and pareto.png (score against parameters, training time and, where runs
timed it, inference cost). summary.md holds only what the records say, so that a fresh clone regenerates it byte for byte; the runs in flight (`claims_lines`) are
this machine's state and are printed only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from peftbench.analysis import bootstrap, compare, costs
from peftbench.analysis.cells import summarize
from peftbench.analysis.plots import plot_budget_vs_score, plot_pareto
from peftbench.analysis.records import Problem
from peftbench.analysis.tables import (
    counts_line,
    cpu_kind_line,
    markdown_lr_table,
    markdown_table,
    precision_line,
)


@dataclass
class Written:
    """What `write_report` wrote: the Table 2 text and the comparisons' (both printed by the command), the files in
    the order the command names them, and pareto.png where there was one to draw (a cell with a score)."""

    table: str
    comparisons: str
    problem_lines: list[str]
    files: list[Path] = field(default_factory=list)
    pareto: Path | None = None


def write_report(
    df: pd.DataFrame,
    problems: list[Problem],
    out: Path,
    specs: Iterable[compare.ComparisonSpec] = (),
    n_resamples: int = bootstrap.N_RESAMPLES,
) -> Written:
    """Write the report of the runs `df` (`load_records`) into `out`: the CSVs, summary.md and the plots; `specs`
    are comparisons asked for besides those each experiment declares."""
    out.mkdir(parents=True, exist_ok=True)
    cells, per_lr = summarize(df), summarize(df, choose_lr=False)
    comparisons, notes = compare.compare(df, list(specs), n_resamples=n_resamples)
    def relative(path: str) -> str:  # relative to the report, so that a committed report names no checkout
        return os.path.relpath(Path(path).resolve(), out.resolve())

    frames = {
        "summary.csv": df.assign(path=df["path"].map(relative)), "cells.csv": cells, "cells_by_lr.csv": per_lr, "comparisons.csv": comparisons,
    }  # fmt: skip
    for name, frame in frames.items():
        frame.to_csv(out / name, index=False)
    table = markdown_table(cells)
    compared = compare.markdown_comparisons(comparisons, notes)
    sections = [
        "## Score per cell",
        table,
        markdown_lr_table(per_lr),
        costs.markdown_artefact_table(df, cells),
        costs.markdown_cost_table(cost := costs.cost_frame(df, cells)),
        compared,
    ]
    problem_lines = [f"- `{p.path}`: {p.reason}" for p in problems]  # printed: the paths as the records were found
    in_report = [f"- `{relative(p.path)}`: {p.reason}" for p in problems]
    body = "\n\n".join(s for s in sections if s)
    (out / "summary.md").write_text(
        "\n".join([body, "", counts_line(df, problems), "", precision_line(df), "", cpu_kind_line(df), "",
                   *in_report]).rstrip() + "\n"
    )
    plot_budget_vs_score(df, out / "budget_vs_score.png")
    pareto = out / "pareto.png" if plot_pareto(cost, out / "pareto.png", cells) is not None else None
    if pareto is None:  # a figure of records no longer reported (e.g. moved away) must not stay beside them
        (out / "pareto.png").unlink(missing_ok=True)
    files = [out / name for name in [*frames, "summary.md", "budget_vs_score.png"]]
    return Written(table, compared if len(comparisons) else "", problem_lines, files, pareto)


def claims_lines(dirs: Iterable[str | Path]) -> list[str]:
    """One line per run claimed under `dirs` (`peftbench.run.claims`): in flight (its process holds the claim) or
    abandoned (the process died before its record; rerunning the sweep redoes it); a claim path that cannot be read
    (a directory) is named."""
    from peftbench.run.claims import IN_FLIGHT, UNREADABLE, list_claims

    lines = []
    for c in sorted(list_claims(dirs), key=lambda c: (c["state"], str(c.get("claimed_at")))):
        what = f"{c.get('method')}/{c.get('task')}/seed {c.get('seed')}"
        who = f"pid {c.get('pid')} on {c.get('host')} since {c.get('claimed_at')}, {c.get('run_dir')}"
        if c["state"] == UNREADABLE:
            lines.append(f"- {c['state']}: `{c['path']}` ({c['error']}); not a claim file a run can hold: remove it")
            continue
        hint = "" if c["state"] == IN_FLIGHT else "; rerun the sweep to redo it"
        lines.append(f"- {c['state']}: {what} ({who}{hint})")
    return lines
