"""The paper's claims against the committed records: ``experiments/FINDINGS.md``.

    python -m peftbench.findings [--results results] [--out experiments/FINDINGS.md] [--variant cpu] [--no-reports]

Reads the records of every experiment under ``<results>/<experiment>_<variant>/`` and writes, per experiment, its
cell table (median ± std and mean [95% CI] at each cell's held-out-chosen lr, `peftbench.report`), and per claim
of the paper (`CLAIMS`) the comparisons that test it (`peftbench.analysis.compare`: seed-paired t-test and a paired
bootstrap over dev examples) with a verdict. Unless ``--no-reports``, it first regenerates each experiment's own
report beside its records (``python -m peftbench.report <results>/<experiment>_<variant>``). Text written by hand
below `DISCUSSION_MARKER` in an existing FINDINGS.md is kept.

**Verdicts** (the rule is `peftbench.analysis.stats.decide`; the unit of replication is the seed). An expectation says how
A should compare with B according to the paper: +1 A better, −1 A worse (each with a declared effect, default 1
point, for which the seeds needed are computed), 0 A ≈ B within a declared margin ±m (default 1 point: the
paper's "within 0.2 points" is beyond what a CPU budget of seeds can test; `MARGIN_NOTE`). Per comparison:
the seed-paired t-test, Holm-adjusted within the claim (`stats.holm`); for ≈, TOST at ±m (`stats.tost_paired`);
the minimum detectable difference at 80% power for its n, and the seeds that would detect the declared effect
(or show equivalence) from the observed sd of the paired differences. Outcomes: *agrees* / *disagrees* (the
adjusted t-test significant with the expected / the opposite sign), *equivalent* (TOST rejects), *differs* (a ≈
comparison whose adjusted t-test is significant), or *underpowered (needs ≈ N seeds)*. A claim never agrees on
non-significance. The two-level bootstrap (seeds, then dev examples) is shown beside the t CI; neither bootstrap
votes. A claim **agrees** when none of its comparisons contradicts it (disagrees / differs) and at least half
support it (agrees / equivalent), **disagrees** when none supports it and at least half contradict it, is
**mixed** when some support and some contradict it, and is **underpowered (needs ≈ N seeds)** otherwise (N the
most any of its sized undecided comparisons needs, and how many are not yet sized); **not run** when no comparison has completed runs on both sides. A
verdict of an experiment that has completed fewer runs than its grid plans is marked *provisional*; one read before
its fixed design's evaluation seeds are all in is *interim*, and one with none of them yet *tuning seeds only* (each
cell chosen and compared on the same runs, so biased toward a difference); a cell with
fewer than 3 lrs, with its choice at a grid edge, or with no evaluation seeds is marked in its claim's table.
An experiment with no records that has some under ``--pilots`` (the bf16 archive) is *sized* from them: the seeds
each comparison would need, never an outcome (`peftbench.analysis.pilot`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

from peftbench import report
from peftbench.analysis import bootstrap
from peftbench.analysis.findings import EXPERIMENTS, OUTCOMES, build, write

REPO = Path(__file__).resolve().parent.parent
#: the bf16 records issue 14 moved out of results/: they size the experiments that have no fp32 records yet
PILOTS = REPO / "experiments" / "precision" / "records"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peftbench.findings", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", type=Path, default=REPO / "results", help="folder of <experiment>_<variant>/"
    )
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "FINDINGS.md")
    parser.add_argument("--variant", default="cpu", choices=("cpu", "paper"))
    parser.add_argument(
        "--no-reports", action="store_true", help="do not regenerate each experiment's report"
    )
    parser.add_argument("--bootstrap", type=int, default=bootstrap.N_RESAMPLES, metavar="B")
    parser.add_argument("--pilots", type=Path, default=PILOTS,
                        help="records that size an experiment with none in --results (they never vote)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(
            f"--results {args.results}: not a directory (expected the folder holding <experiment>_{args.variant}/)"
        )
    if not args.no_reports:
        for experiment in EXPERIMENTS:
            path = args.results / f"{experiment}_{args.variant}"
            if path.is_dir():
                with contextlib.redirect_stdout(io.StringIO()):
                    code = report.main([str(path), "--bootstrap", str(args.bootstrap)])
                print(f"{path}: report {'written' if code == 0 else 'skipped (no usable records)'}")
    generated, verdicts = build(args.results, args.variant, args.bootstrap, args.pilots if args.pilots.is_dir() else None)
    write(args.out, generated)
    print(verdicts[["experiment", "verdict", *OUTCOMES]].to_string(index=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
