"""``python -m peftbench.verify DIR [--sample N] [--seed S] [--records PATH ...]``: rerun committed records and
check that the code of today computes them again, bit for bit (``--dry-run`` prints the reruns' commands).

    python -m peftbench.verify results/table2_cpu --sample 3            # 3 records, spread over methods
    python -m peftbench.verify --records results/table2_cpu/2026-12-02/sst2/45_mam_sst2_s1

Which records are chosen (``--sample N`` spread over methods for a ``--seed S``, or ``--records``; a record this
machine cannot compute as it was computed is refused) and what is compared (dev predictions element by
element, metrics, score and per-epoch history) are `peftbench.run.verify`; how a record becomes the overrides
of ``python -m peftbench``, checked to compose its run key, and is rerun in a subprocess is `peftbench.run.rerun`.

Exit status: 0 when every rerun is identical, 1 when any differs or fails, 2 on bad input (DIR missing, no
completed record, a named record unreadable, refused or not expressible as overrides), with one
``peftbench.verify: error:`` line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from peftbench.run.record import NOT_IN_KEY
from peftbench.run.rerun import RECORD, RERUN_SETTINGS, VerifyError, plan, rerun
from peftbench.run.verify import compare, completed_records, line, read_record, refusal, sample, usable

PROG = "peftbench.verify"


def error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _resolve(path: Path) -> Path:
    return path / RECORD if path.is_dir() else path


def _settings(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in NOT_IN_KEY or key in RERUN_SETTINGS or key in ("logger", "results_root"):
            free = sorted(set(NOT_IN_KEY) - set(RERUN_SETTINGS) - {"logger", "results_root"})
            raise VerifyError(f"--set {pair!r}: only keys that do not change what a run computes can be set "
                              f"(KEY=VALUE with KEY one of {', '.join(free)})")
        out[key] = value
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise SystemExit(error(message))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 identical, 1 a difference or a failed rerun, 2 bad input)."""
    parser = _Parser(prog=f"python -m {PROG}", description="Rerun committed records from their recorded "
                     "config and compare predictions, metrics and history bit for bit.")
    parser.add_argument("dir", nargs="?", type=Path, help="a folder searched recursively for completed records")
    parser.add_argument("--sample", type=int, default=3, metavar="N", help="records to rerun (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="the sample's seed (default %(default)s)")
    parser.add_argument("--records", nargs="+", type=Path, default=[], metavar="PATH",
                        help="rerun these records (result.json files or run folders) instead of a sample")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="settings",
                        help="a key that does not change what a run computes (data.glue_dir, data.cache_dir, ...)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each chosen record and the command that reruns it, and run nothing")
    parser.add_argument("--keep", type=Path, default=None, metavar="OUT",
                        help="keep each rerun's folder (record, log) under OUT instead of a temporary folder")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0), or a bad argument (2, its line printed)
        return int(stop.code or 0)
    try:
        chosen, passed_over = _select(args)
        settings = _settings(args.settings)
        plans = []
        for path, record in chosen:  # every record checked before anything runs
            try:
                plans.append(plan(record, settings))
            except VerifyError as err:
                raise VerifyError(f"{path}: {err}") from None
    except VerifyError as err:
        return error(str(err))
    if passed_over:
        print(f"{PROG}: passing over {passed_over}")
    if args.dry_run:
        for (path, record), how in zip(chosen, plans, strict=True):
            print(f"{path}  {record.get('method')}  seed {record.get('seed')}: python -m peftbench "
                  + " ".join(shlex.quote(o) for o in how.overrides))
        return 0
    identical = 0
    for i, ((path, record), how) in enumerate(zip(chosen, plans, strict=True)):
        print(f"{PROG}: rerunning {i + 1}/{len(chosen)}: {path}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="peftbench-verify-") as tmp:
            folder = (Path(tmp) if args.keep is None else args.keep / f"{i}_{path.parent.name}").absolute()
            folder.mkdir(parents=True, exist_ok=True)
            run = rerun(how, folder)
        outcome = compare(record, run, how.key)
        identical += outcome.identical
        print(line(path, record, outcome), flush=True)
    differ = len(chosen) - identical
    where = ", ".join(str(p) for p in ([args.dir] if args.dir else [])) or "named records"
    print(f"{PROG}: {len(chosen)} record(s) rerun from {where}: {identical} identical, {differ} differ")
    return 0 if differ == 0 else 1


def _select(args: argparse.Namespace) -> tuple[list[tuple[Path, dict[str, Any]]], str | None]:
    """The records to rerun, and a note on the ones a sample passed over (refused here); VerifyError on bad input."""
    if args.records:
        chosen = []
        for given in args.records:
            path = _resolve(given)
            if not path.is_file():
                raise VerifyError(f"no record at {given}")
            record = read_record(path)
            problem = usable(record) or refusal(record)
            if problem:
                raise VerifyError(f"{path} cannot be verified: {problem}")
            chosen.append((path, record))
        return chosen, None
    if args.dir is None:
        raise VerifyError("give a DIR of records or --records PATH ...")
    if not args.dir.is_dir():
        raise VerifyError(f"{args.dir} is not a directory")
    if args.sample < 1:
        raise VerifyError(f"--sample {args.sample}: give a number of records >= 1")
    records = completed_records(args.dir)
    if not records:
        raise VerifyError(f"no completed {RECORD} records with a config and predictions under {args.dir}")
    refused: dict[str, int] = {}
    runnable = []
    for path, record in records:
        why = refusal(record)
        if why is None:
            runnable.append((path, record))
        else:
            refused[why] = refused.get(why, 0) + 1
    note = "; ".join(f"{n} record(s): {why}" for why, n in refused.items()) or None
    if not runnable:
        raise VerifyError(f"none of the {len(records)} completed records under {args.dir} can be rerun here ({note})")
    return sample(runnable, args.sample, args.seed), note


if __name__ == "__main__":
    raise SystemExit(main())
