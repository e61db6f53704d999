"""Read the run records (`result.json`) of any directory tree and report them like the paper.

``python -m peftbench.report DIR [DIR ...] [--out OUTDIR] [--task T] [--compare A:B ...]`` writes into
OUTDIR (default: the first DIR): summary.csv (one row per run, failed ones included), cells.csv (one row per
cell at its chosen lr), cells_by_lr.csv (one row per cell × lr), comparisons.csv, summary.md,
budget_vs_score.png and, where runs timed their inference, pareto.png. ``--next-lrs`` writes nothing and prints,
for each cell whose chosen lr is an edge of its grid, the command that extends the grid past it
(`next_lr_commands`).

The reading, summarising, rendering and plotting are `peftbench.analysis.report`; the comparisons
`peftbench.analysis.compare`; the cost tables `peftbench.analysis.costs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peftbench.analysis import compare, costs, stats
from peftbench.analysis.report import (
    RECORD_NAME,
    claims_lines,
    counts_line,
    load_records,
    markdown_lr_table,
    markdown_table,
    next_evaluation_commands,
    next_lr_commands,
    plot_budget_vs_score,
    precision_line,
    summarize,
)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 when no usable record was found or an argument is wrong)."""
    parser = argparse.ArgumentParser(prog="python -m peftbench.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="directories searched recursively for result.json")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the first DIR)")
    parser.add_argument("--task", default=None, help="report only this task")
    parser.add_argument(
        "--compare", action="append", default=[], metavar="A:B",
        help="compare cells A against B (method names, or labels such as 'lora (0.65%%)'), per task; repeatable. "
        "The comparisons an experiment declares (by its records' sweep name) are always made.",
    )  # fmt: skip
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=stats.N_RESAMPLES,
        metavar="B",
        help="bootstrap resamples (default %(default)s)",
    )
    parser.add_argument(
        "--next-evals", type=int, default=0, metavar="N",
        help="print, for each cell with fewer than N evaluation seeds at its chosen lr, the command that runs the "
        "missing ones at that lr (into the single DIR given), and write nothing",
    )  # fmt: skip
    parser.add_argument(
        "--next-lrs", action="store_true",
        help="print, for each cell whose chosen lr is the lowest/highest of its grid, the command that runs it one "
        "x2 step past that edge (into the single DIR given), and write nothing",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        specs = [compare.parse_compare(text) for text in args.compare]
    except ValueError as err:
        parser.error(str(err))

    df, problems = load_records(args.dirs)
    if args.task is not None:
        df = df[df["task"] == args.task].reset_index(drop=True)
    if df.empty:
        where = ", ".join(str(d) for d in args.dirs) + (f" for task {args.task}" if args.task else "")
        print(
            f"error: no usable {RECORD_NAME} records in {where} ({len(problems)} problems)", file=sys.stderr
        )
        for problem in problems:
            print(f"  {problem.path}: {problem.reason}", file=sys.stderr)
        return 2

    if args.next_evals:
        lines = next_evaluation_commands(df, summarize(df), args.next_evals,
                                         args.dirs[0] if len(args.dirs) == 1 else None)
        print("\n".join(lines) if lines else f"every cell has {args.next_evals} evaluation seeds at its chosen lr")
        return 0
    if args.next_lrs:
        lines = next_lr_commands(df, summarize(df), args.dirs[0] if len(args.dirs) == 1 else None)
        print("\n".join(lines) if lines else "no cell's chosen lr is an edge of its grid of three or more lrs")
        return 0
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    cells, per_lr = summarize(df), summarize(df, choose_lr=False)
    comparisons, notes = compare.compare(df, specs, n_resamples=args.bootstrap)
    written = {
        "summary.csv": df, "cells.csv": cells, "cells_by_lr.csv": per_lr, "comparisons.csv": comparisons,
    }  # fmt: skip
    for name, frame in written.items():
        frame.to_csv(out / name, index=False)
    table = markdown_table(cells)
    sections = [
        "## Score per cell",
        table,
        markdown_lr_table(per_lr),
        costs.markdown_artefact_table(df, cells),
        costs.markdown_cost_table(cost := costs.cost_frame(df, cells)),
        compare.markdown_comparisons(comparisons, notes),
    ]
    problem_lines = [f"- `{p.path}`: {p.reason}" for p in problems]
    body = "\n\n".join(s for s in sections if s)
    # summary.md holds what the records say, so a fresh clone regenerates it byte for byte; runs in flight are
    # this machine's state (pids, local paths) and are printed only
    (out / "summary.md").write_text(
        "\n".join([body, "", counts_line(df, problems), "", precision_line(df), "", *problem_lines]).rstrip() + "\n"
    )
    plot_budget_vs_score(df, out / "budget_vs_score.png")
    if costs.plot_pareto(cost, out / "pareto.png") is not None:
        print(f"wrote {out / 'pareto.png'}")

    print(table)
    if len(comparisons):
        print()
        print(compare.markdown_comparisons(comparisons, notes))
    print()
    print(counts_line(df, problems))
    print(precision_line(df))
    for line in problem_lines:
        print(line)
    claimed = claims_lines(args.dirs)
    if claimed:
        print("runs without a record yet:")
    for line in claimed:
        print(line)
    for name in [*written, "summary.md", "budget_vs_score.png"]:
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
