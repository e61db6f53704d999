"""What deciding a claim's comparisons would take, in runs and hours ("To decide it" in FINDINGS.md).

The protocol (experiments/README.md) gives every cell a tuning grid of at least 3 lrs on seeds 0–2 with an
interior choice, then evaluation seeds at the chosen lr: at least `MIN_EVAL`, as many as its comparisons need for
their declared effect or margin (80% power, from the sd of the seed-paired differences *of the tuning seeds*: the
caller passes those, so the number is fixed before any evaluation seed and interim results never move it), at most
`MAX_EVAL` (issue 25's cap). A comparison that needs more than the cap is named: at the cap it has 80% power only if
its evaluation seeds spread less than its tuning seeds did. Where a comparison has too few seed pairs for an sd, a
pilot's (the bf16 archive, `peftbench.analysis.pilot`) sizes it when one exists; otherwise it counts at
`MIN_EVAL`. Hours are wall time at `CONCURRENT` runs at a time (the `_cpu` setting on a 2-core machine,
benchmarks/RESULTS.md section 7), at the mean run time of the experiment's completed records.
"""

from __future__ import annotations

import math

import pandas as pd

from peftbench.analysis.cells import grid_edge

MIN_EVAL, MAX_EVAL, CONCURRENT = 5, 12, 2
UNDERPOWERED = "underpowered"


def _needed(row: pd.Series, pilot: dict[tuple[str, str, str], int]) -> tuple[int | None, bool]:
    """The seeds a comparison row needs (its own sd, else the pilot's) and whether the pilot sized it."""
    own = row["seeds_needed"]
    if own is not None and not (isinstance(own, float) and math.isnan(own)):
        return int(own), False
    sized = pilot.get((row["task"], row["a"], row["b"]))
    return (int(sized), True) if sized is not None else (None, False)


def plan(rows: pd.DataFrame, cells: pd.DataFrame, grid_to_go: int, mean_time_s: float,
         pilot: dict[tuple[str, str, str], int] | None = None, every: bool = True) -> dict | None:
    """The runs that would decide a claim's underpowered comparisons `rows` (`findings.check_claim`), given the
    experiment's `cells` (`summarize`), the tuning runs its grid still lacks and its mean run time; None without
    comparisons (or, unless `every`, without an underpowered one). With `every` (the protocol's fixed design), every comparison's cells get their
    seeds, a decided one's too: stopping a comparison at the look that decided it would be optional stopping;
    without, only the underpowered ones'. Keys: decided, total, grid_runs (the grid plus one ×2 step per edge choice),
    eval_runs, targets {(task, label): seeds}, beyond [(task, a, b, seeds)], unsized and piloted (comparisons
    without an sd of their own: no pilot either, or sized by the pilot), hours."""
    if rows.empty or not (every or (rows["outcome"] == UNDERPOWERED).any()):
        return None
    pilot = pilot or {}
    by_label = {(c["task"], c["label"]): c for _, c in cells.iterrows()}
    targets: dict[tuple[str, str], int] = {}
    beyond, unsized, piloted = [], 0, 0
    for _, r in (rows if every else rows[rows["outcome"] == UNDERPOWERED]).iterrows():
        need, from_pilot = _needed(r, pilot)
        piloted += from_pilot
        if need is None:
            unsized += 1
        elif need > MAX_EVAL:
            beyond.append((r["task"], r["a"], r["b"], need))
        for label in (r["a"], r["b"]):
            key = (r["task"], label)
            targets[key] = max(targets.get(key, MIN_EVAL), min(MAX_EVAL, max(MIN_EVAL, need or MIN_EVAL)))
    edges = sum(1 for key in targets if key in by_label and grid_edge(by_label[key]))
    eval_runs = sum(max(0, n - int(by_label[key]["n_evaluation"]) if key in by_label else n)
                    for key, n in targets.items())  # fmt: skip
    grid_runs = grid_to_go + 3 * edges
    hours = (grid_runs + eval_runs) * mean_time_s / CONCURRENT / 3600 if math.isfinite(mean_time_s) else math.nan
    return {"decided": int((rows["outcome"] != UNDERPOWERED).sum()), "total": len(rows), "grid_runs": grid_runs,
            "eval_runs": eval_runs, "targets": targets, "beyond": beyond, "unsized": unsized, "piloted": piloted, "hours": hours}


def markdown_plan(p: dict, mean_time_s: float) -> str:
    """The "To decide it" paragraph of a `plan`."""
    seeds = sorted(set(p["targets"].values()))
    span = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    text = (f"**To decide it:** {p['decided']} of {p['total']} comparisons decided. The protocol still needs "
            f"{p['grid_runs']} tuning run{'s' * (p['grid_runs'] != 1)} (the grid, and one ×2 step per choice at an "
            f"lr edge) and {p['eval_runs']} evaluation run{'s' * (p['eval_runs'] != 1)} ({span} evaluation seeds "
            f"for each of the {len(p['targets'])} cells of its comparisons, from the power analysis of the tuning seeds "
            f"within {MIN_EVAL}–{MAX_EVAL}, fixed before any evaluation seed: a decided comparison runs to it too): ≈ {p['hours']:.1f} h at {CONCURRENT} runs at a time, "
            f"{mean_time_s:.0f} s per run (the mean of this experiment's records).")  # fmt: skip
    if p["piloted"]:
        text += (f" {p['piloted']} of them {'has' if p['piloted'] == 1 else 'have'} too few seed pairs for an sd: "
                 "sized from the bf16 pilot (experiments/precision/records).")
    if p["unsized"]:
        text += (f" {p['unsized']} of them {'has' if p['unsized'] == 1 else 'have'} too few seed pairs for an sd "
                 f"and no pilot: counted at {MIN_EVAL} seeds.")  # fmt: skip
    if p["beyond"]:
        named = "; ".join(f"{task} {a} vs {b} (≈ {n})" for task, a, b, n in p["beyond"])
        text += (f" Past the {MAX_EVAL}-seed cap (at {MAX_EVAL} seeds, 80% power only if their evaluation seeds "
                 f"spread less than their tuning seeds): {named}.")
    return text


def markdown_complete(rows: pd.DataFrame) -> str:
    """The "To decide it" paragraph of a claim whose fixed design has run in full (no tuning or evaluation run left)
    and that still has underpowered comparisons: for each, its seed pairs and the seeds its declared effect or
    margin would need at the sd of its **evaluation** seeds (`rows`' own ``seeds_needed``), and why no more ran. One
    already at that number was powered for the declared effect and did not detect it (its t CI bounds the
    difference). More seeds would be a new fixed design, not more of this one: adding seeds after a look is
    optional stopping."""
    undecided = rows[rows["outcome"] == UNDERPOWERED]
    parts = []
    for _, r in undecided.iterrows():
        need, n = _needed(r, {})[0], int(r["n_pairs"])
        size = "its declared effect" if r["expected"] else "equivalence at its margin"
        if need is None:
            parts.append(f"{r['task']} {r['a']} vs {r['b']}: not sized ({n} seed pairs)")
        elif need <= n:
            parts.append(f"{r['task']} {r['a']} vs {r['b']}: {n} seed pairs, which had 80% power for {size} "
                         f"(≈ {need} needed) and did not detect it (its t CI bounds the difference)")  # fmt: skip
        else:
            parts.append(f"{r['task']} {r['a']} vs {r['b']}: {n} seed pairs, ≈ {need} needed for {size}")
    return (f"**To decide it:** its fixed design has run in full; {len(rows) - len(undecided)} of {len(rows)} "
            f"comparisons decided. The undecided, at the sd of their evaluation seeds: " + "; ".join(parts) + ". "
            f"More seeds were not run: the protocol fixes each cell's evaluation seeds from the tuning seeds (within "
            f"{MIN_EVAL}–{MAX_EVAL}) before any of them runs, and adding seeds after reading the result would be "
            "optional stopping; deciding these would take a new fixed design at the numbers above.")
