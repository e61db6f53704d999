"""CPU hours spent per experiment, from the committed records' own timings (issue 25).

``python benchmarks/cpu_hours.py [ROOT ...]`` sums each record's ``time_s`` (the run's wall time inside the process:
data, training, evaluation, the inference-cost timing; not Python's start-up or the model load before it) per
experiment folder, with the number of records and the threads they ran with. Defaults to ``results/`` and the bf16
records kept in ``experiments/precision/records``. Wall time on this 2-core machine is not CPU time when two
workers share it; the table says which.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def table(roots: list[Path]) -> pd.DataFrame:
    rows = []
    for root in roots:
        for path in sorted(root.rglob("result.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            experiment = path.relative_to(root).parts[0]
            threads = (record.get("config") or {}).get("train", {}).get("threads")
            rows.append({"root": root.relative_to(REPO).as_posix() if root.is_relative_to(REPO) else str(root),
                         "experiment": experiment, "time_s": float(record.get("time_s") or 0.0),
                         "threads": threads if threads is not None else "default"})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return (df.groupby(["root", "experiment"])
              .agg(records=("time_s", "size"), hours=("time_s", lambda s: round(s.sum() / 3600, 2)),
                   mean_s=("time_s", lambda s: round(s.mean(), 1)),
                   threads=("threads", lambda s: ",".join(sorted({str(t) for t in s}))))
              .reset_index())


if __name__ == "__main__":
    roots = [Path(a).resolve() for a in sys.argv[1:]] or [REPO / "results", REPO / "experiments/precision/records"]
    out = table(roots)
    print(out.to_string(index=False) if not out.empty else "no records")
    if not out.empty:
        print(f"\ntotal: {out['records'].sum()} records, {out['hours'].sum():.2f} hours")
