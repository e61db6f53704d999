"""Read the run records (`result.json`) of any directory tree and report them like the paper.

``python -m peftbench.report DIR [DIR ...] [--out OUTDIR] [--task T] [--compare A:B ...]`` writes into
OUTDIR (default: the first DIR) what `peftbench.analysis.report.write_report` writes: summary.md, summary.csv,
cells.csv, cells_by_lr.csv, comparisons.csv, budget_vs_score.png and pareto.png (score against parameters,
training time and, where runs timed it, inference cost); then prints Table 2, the comparisons, the counts and the runs still in flight. ``--next-lrs`` and
``--next-evals N|auto`` write nothing and print the commands that extend a cell's lr grid past its edge or run its
missing evaluation seeds (`peftbench.analysis.next_runs`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peftbench.analysis import bootstrap, compare
from peftbench.analysis.cells import summarize
from peftbench.analysis.next_runs import next_evaluation_commands, next_lr_commands
from peftbench.analysis.records import RECORD_NAME, load_records
from peftbench.analysis.report import claims_lines, write_report
from peftbench.analysis.tables import counts_line, precision_line


def _evals(text: str) -> int | str:
    """``--next-evals``: a positive number of seeds, or ``auto``."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seeds or 'auto', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 seed, got {n}")
    return n


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
        default=bootstrap.N_RESAMPLES,
        metavar="B",
        help="bootstrap resamples (default %(default)s)",
    )
    parser.add_argument(
        "--next-evals", type=_evals, default=0, metavar="N|auto",
        help="print, for each cell with fewer than N evaluation seeds at its chosen lr, the command that runs the "
        "missing ones at that lr (into the single DIR given), and write nothing; 'auto': for the cells of the "
        "undecided comparisons of the records' claims, as many as their power analysis asks within 5-12",
    )  # fmt: skip
    parser.add_argument(
        "--next-lrs", action="store_true",
        help="print, for each cell whose chosen lr is the lowest/highest of its grid, the command that runs it one "
        "x2 step past that edge (into the single DIR given), and write nothing",
    )  # fmt: skip
    parser.add_argument("--wandb", action="store_true",
                        help="also log the report to W&B: tables, native charts, the figures (one run)")
    parser.add_argument("--runs", action="store_true",
                        help="with --wandb: also log each completed record as a W&B run, without retraining")
    parser.add_argument("--wandb-project", default="peftbench", help="W&B project (default %(default)s)")
    parser.add_argument("--wandb-mode", choices=("offline", "online"), default=None,
                        help="W&B mode (default: $WANDB_MODE, else offline)")
    parser.add_argument("--wandb-dir", type=Path, default=Path("."),
                        help="the folder W&B's runs go to, as <dir>/wandb/ (default: here; `wandb sync` there)")
    args = parser.parse_args(argv)
    if args.runs and not args.wandb:
        parser.error("--runs logs records to W&B: add --wandb")
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
        n_seeds = args.next_evals
        if n_seeds == "auto":
            from peftbench.analysis.findings import evaluation_targets

            n_seeds = evaluation_targets(df)
        lines = next_evaluation_commands(df, summarize(df), n_seeds, args.dirs[0] if len(args.dirs) == 1 else None)
        print("\n".join(lines) if lines else "every cell has the evaluation seeds asked for at its chosen lr"
              + ("" if isinstance(n_seeds, dict) else f" ({n_seeds})"))  # fmt: skip
        return 0
    if args.next_lrs:
        lines = next_lr_commands(df, summarize(df), args.dirs[0] if len(args.dirs) == 1 else None)
        print("\n".join(lines) if lines else "no cell's chosen lr is an edge of its grid of three or more lrs")
        return 0
    out = args.out or args.dirs[0]
    written = write_report(df, problems, out, specs, args.bootstrap)
    if written.pareto is not None:
        print(f"wrote {written.pareto}")

    print(written.table)
    if written.comparisons:
        print()
        print(written.comparisons)
    print()
    print(counts_line(df, problems))
    print(precision_line(df))
    for line in written.problem_lines:
        print(line)
    claimed = claims_lines(args.dirs)
    if claimed:
        print("runs without a record yet:")
    for line in claimed:
        print(line)
    for path in written.files:
        print(f"wrote {path}")
    if args.wandb:
        log_to_wandb(df, out, args)
    return 0


def log_to_wandb(df, out: Path, args: argparse.Namespace) -> None:
    """The report (and with ``--runs`` the records) as W&B runs, and where they went."""
    import os

    from peftbench.analysis.wandb_report import Target, log_report, upload_records

    mode = args.wandb_mode or os.environ.get("WANDB_MODE") or "offline"
    target = Target(project=args.wandb_project, mode=mode, root=args.wandb_dir)
    runs = upload_records(df, target) if args.runs else []
    if runs:
        print(f"W&B: logged {len(runs)} record(s) as runs in {args.wandb_dir / 'wandb'}")
    print(f"W&B: logged the report as run {log_report(df, out, target)}")
    if mode == "offline":
        print(f"W&B: offline; upload with: cd {args.wandb_dir} && wandb sync --yes")


if __name__ == "__main__":
    raise SystemExit(main())
