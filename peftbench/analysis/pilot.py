"""Seeds a not-yet-run claim would need, sized from a pilot: records that may not vote (another precision).

An experiment whose records under ``results/`` are all missing reads *not run* in FINDINGS.md. When an archive of
earlier records exists (the bf16 runs moved to ``experiments/precision/records/`` by issue 14), its comparisons
still measure how noisy each one is: `pilot_rows` runs a claim's comparisons on them (`findings.check_claim`) and
keeps only what sizes the plan (pairs, sd of the paired differences, seeds needed for the declared effect or
margin); `markdown_pilot` renders that, never an outcome, so a pilot plans runs without ever deciding a claim.
"""

from __future__ import annotations

import math

import pandas as pd

PILOT_COLUMNS = ("claim", "task", "a", "b", "expected", "n_pairs", "sd_diff", "seeds_needed")


def pilot_rows(claims, df: pd.DataFrame, check_claim, n_resamples: int) -> pd.DataFrame:
    """One row per comparison of `claims` over the pilot records `df` (`PILOT_COLUMNS`)."""
    rows = []
    for claim in claims:
        table, _ = check_claim(claim, df, n_resamples)
        for _, r in table.iterrows():
            rows.append({"claim": claim.key, **{c: r[c] for c in PILOT_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=list(PILOT_COLUMNS))


def most_needed(rows: pd.DataFrame, claim: str) -> int | None:
    """The most seeds any comparison of `claim` needs in the pilot (None: none could be sized)."""
    needed = [int(n) for n in rows.loc[rows["claim"] == claim, "seeds_needed"]
              if n is not None and not (isinstance(n, float) and not math.isfinite(n))]  # fmt: skip
    return max(needed) if needed else None


def markdown_pilot(rows: pd.DataFrame, where: str, n_records: int) -> str:
    """The sizing table of an experiment's pilot, from `n_records` records under `where`."""
    head = (f"Sized from a pilot: the {n_records} bf16 records in [{where}]({where}/) (tuning seeds 0–2 at each "
            "cell's held-out-chosen lr). They are another precision, so they plan runs and never vote; the seeds "
            "needed are per arm, for the claim's declared effect (or ±margin) at 80% power, from the sd of the "
            "seed-paired differences.")  # fmt: skip
    lines = ["| claim | A vs B | paper | seed pairs | sd of A − B (points) | seeds needed |",
             "|:---|:---|:---:|---:|---:|---:|"]  # fmt: skip
    signs = {1: "A > B", -1: "A < B", 0: "A ≈ B"}
    for _, r in rows.iterrows():
        sd = "—" if not math.isfinite(r["sd_diff"]) else f"{r['sd_diff']:.2f}"
        n = r["seeds_needed"]
        needed = "—" if n is None or (isinstance(n, float) and not math.isfinite(n)) else str(int(n))
        lines.append(f"| {r['claim']} | {r['a']} vs {r['b']} | {signs[r['expected']]} | {r['n_pairs']} | {sd} "
                     f"| {needed} |")  # fmt: skip
    return head + "\n\n" + "\n".join(lines)
