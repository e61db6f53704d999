"""The paper's claims against the committed records: the generated part of ``experiments/FINDINGS.md``.

`CLAIMS` (declared in `peftbench.analysis.claims`) holds each claim of the paper as expectations (A against B:
better, worse, or ≈ within a margin); `check_claim` runs its comparisons (`peftbench.analysis.compare`) and reads each with `decide`
(`peftbench.analysis.stats.decide`), Holm-adjusted within the claim; `claim_verdict` reads the claim from its
comparisons; `build` writes the text (cells per experiment, the claims' tables, Table 2 beside the paper) and
`write` puts it above the hand-written discussion of an existing FINDINGS.md. The rule, as FINDINGS.md cites it, is
the docstring of ``peftbench/findings.py`` (the command, ``python -m peftbench.findings``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from peftbench.analysis import bootstrap, compare, pilot, plan, stats
from peftbench.analysis.cells import MIN_GRID, format_share, grid_edge, summarize
from peftbench.analysis.claims import (  # noqa: F401 (re-exported: the claims are read as findings.CLAIMS)
    CLAIMS,
    DEFAULT_EFFECT,
    DEFAULT_MARGIN,
    EXPERIMENTS,
    PAPER_TABLE2,
    SMALL_TIER_PCT,
    Claim,
    Expectation,
)
from peftbench.analysis.records import load_records
from peftbench.analysis.tables import format_cell, format_ci, markdown_table

DISCUSSION_MARKER = "<!-- Written by hand below this line; `python -m peftbench.findings` keeps it. -->"
AGREES, DISAGREES, EQUIVALENT, DIFFERS, UNDERPOWERED = (
    stats.AGREES, stats.DISAGREES, stats.EQUIVALENT, stats.DIFFERS, stats.UNDERPOWERED,
)  # fmt: skip
MIXED, NOT_RUN = "mixed", "not run"
SUPPORTS, CONTRADICTS = (AGREES, EQUIVALENT), (DISAGREES, DIFFERS)
OUTCOMES = (AGREES, EQUIVALENT, DISAGREES, DIFFERS, UNDERPOWERED)
MARGIN_NOTE = (
    "Equivalence (≈) is tested with TOST at a margin of ±1.0 point: the paper's \"within 0.2 points\" would need "
    "far more seeds than a CPU budget allows (the seeds-needed column says how many at ±1.0)."
)



# ---- verdicts ------------------------------------------------------------------------------------------------


def decide(e: Expectation, row: pd.Series, p_holm: float) -> tuple[stats.Decision, float, int | None]:
    """One comparison's outcome (`stats.decide`) from its row (`compare.COMPARISON_COLUMNS`), its Holm-adjusted
    t-test p and the expectation's declared effect or margin, with the TOST p (NaN for a directional expectation)
    and the seeds needed (from the row's paired sd)."""
    paired = stats.PairedTest(int(row["n_pairs"]), float(row["mean_diff"]), float(row["diff_ci_low"]),
                              float(row["diff_ci_high"]), float(row["p_t"]), float(row["p_wilcoxon"]))  # fmt: skip
    sd, equivalence = float(row["sd_diff"]), None
    if e.sign == 0:
        equivalence = stats.tost_paired(row["_a_scores"], row["_b_scores"], e.margin)
        needed = stats.seeds_needed_equivalence(e.margin, sd)
    else:
        needed = stats.seeds_needed(e.effect, sd)
    decision = stats.decide(e.sign, paired, p_holm, equivalence, float(row["mdd"]), needed)
    if paired.n < stats.MIN_PAIRS_T and decision.outcome == UNDERPOWERED:  # say why nothing could be computed
        decision = stats.Decision(UNDERPOWERED, f"underpowered ({paired.n} seed pair{'s' * (paired.n != 1)}: no "
                                  f"paired test below {stats.MIN_PAIRS_T}"
                                  + (", no sd to size it" if paired.n < 2 else "") + ")")  # fmt: skip
    return decision, equivalence.p if equivalence else math.nan, needed


def claim_verdict(outcomes: Iterable[str], needed: Iterable[int | None] = ()) -> str:
    """A claim's verdict from its comparisons' outcomes (module docstring); `needed`: the seeds each
    underpowered comparison would need (the most is quoted; None or NaN: not sized, e.g. no seed pairs yet)."""
    outcomes = list(outcomes)
    if not outcomes:
        return NOT_RUN
    support = sum(o in SUPPORTS for o in outcomes)
    contradict = sum(o in CONTRADICTS for o in outcomes)
    if contradict == 0 and 2 * support >= len(outcomes):
        return AGREES
    if support == 0 and 2 * contradict >= len(outcomes):
        return DISAGREES
    if support and contradict:
        return MIXED
    needed = list(needed)
    counts = [int(n) for n in needed if pd.notna(n)]  # a table column holds NaN for None
    unsized = len(needed) - len(counts)
    if not counts:
        return UNDERPOWERED
    return (f"{UNDERPOWERED} (needs ≈ {max(counts)} seeds"
            + (f"; {unsized} comparison{'s' * (unsized != 1)} not yet sized" if unsized else "") + ")")  # fmt: skip


def tier_of(share_pct: float) -> str:
    return "small" if share_pct < SMALL_TIER_PCT else "large"


def tuning_note(cell: pd.Series | None) -> str:
    """What a claim's reader must know about how a cell was tuned and reported: fewer than 3 lrs, the choice at a
    grid edge, dev on the tuning seeds; "" when none applies."""
    if cell is None:
        return ""
    notes = []
    grid = [lr for lr in cell["lr_grid"] if math.isfinite(lr)]
    if len(grid) < MIN_GRID:
        notes.append(f"{len(grid)} lr" + ("s" if len(grid) != 1 else ""))
    elif edge := grid_edge(cell):
        notes.append(f"lr at the {edge} edge")
    if cell.get("dev_on") != "evaluation":
        notes.append("no evaluation seeds")
    return ", ".join(notes)


def check_claim(
    claim: Claim, df: pd.DataFrame, n_resamples: int = bootstrap.N_RESAMPLES
) -> tuple[pd.DataFrame, list[str]]:
    """The comparison rows (`compare.COMPARISON_COLUMNS` + expected, p_holm, p_tost, seeds_needed, outcome, text,
    a_tuning, b_tuning) of a claim's expectations over the records `df` of its experiment, Holm-adjusted within
    the claim, and notes on what could not be compared."""
    rows, notes = [], []
    cells = summarize(df)
    by_label = {(c["task"], c["model"], c["label"]): c for _, c in cells.iterrows()}
    for e in claim.expectations:
        table, spec_notes = compare.compare(
            df,
            [compare.ComparisonSpec(e.a, e.b, claim.experiment)],
            experiments=False,
            n_resamples=n_resamples,
        )
        if e.tier is not None and len(table):
            table = table[[tier_of(s) == e.tier for s in table["a_share"]]]
        notes += spec_notes
        for _, r in table.iterrows():
            cell_a, cell_b = (by_label.get((r["task"], r["model"], r[side])) for side in ("a", "b"))
            a, b = (compare.cell_runs(df, c).set_index("seed")["score"] if c is not None else pd.Series(dtype=float)
                    for c in (cell_a, cell_b))  # fmt: skip
            seeds = r["seeds"]
            rows.append({**r.to_dict(), "expected": e.sign, "_e": e,
                         "_a_scores": [100 * float(a[s]) for s in seeds], "_b_scores": [100 * float(b[s]) for s in seeds],
                         "a_tuning": tuning_note(cell_a), "b_tuning": tuning_note(cell_b)})  # fmt: skip
    p_holm = stats.holm([r["p_t"] for r in rows])
    for r, p in zip(rows, p_holm, strict=True):
        e = r.pop("_e")
        decision, tost, needed = decide(e, pd.Series(r), p)
        r.update({"p_holm": p, "p_tost": tost, "margin": e.margin if e.sign == 0 else math.nan,
                  "effect": e.effect if e.sign else math.nan, "seeds_needed": needed,
                  "outcome": decision.outcome, "text": decision.text})  # fmt: skip
        del r["_a_scores"], r["_b_scores"]
    columns = [*compare.COMPARISON_COLUMNS, "expected", "p_holm", "p_tost", "margin", "effect", "seeds_needed",
               "outcome", "text", "a_tuning", "b_tuning"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns), notes


# ---- rendering -----------------------------------------------------------------------------------------------

_EXPECTED = {1: "A > B", -1: "A < B", 0: "A ≈ B"}


def _f(x: float, fmt: str = ".1f") -> str:
    return "—" if x is None or not math.isfinite(x) else format(x, fmt)


def _expected(r: pd.Series) -> str:
    return f"A ≈ B (±{r['margin']:g})" if r["expected"] == 0 else _EXPECTED[r["expected"]]


def markdown_claim_table(rows: pd.DataFrame) -> str:
    lines = [
        "| task | A vs B | paper | A ×100 | B ×100 | A − B [95% t CI] | t p | Holm p | TOST p | two-level bootstrap "
        "95% CI | MDD | seeds needed | outcome | tuning (A; B) |",
        "|:---|:---|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|:---|",
    ]
    for _, r in rows.iterrows():
        needed = "—" if r["seeds_needed"] is None or (isinstance(r["seeds_needed"], float)
                                                      and not math.isfinite(r["seeds_needed"])) else str(int(r["seeds_needed"]))
        tuning = f"{r['a_tuning'] or '✓'}; {r['b_tuning'] or '✓'}"
        lines.append(
            f"| {r['task']} | {r['a']} vs {r['b']} | {_expected(r)} | {_f(r['mean_a'])} "
            f"| {_f(r['mean_b'])} | {compare._interval(r['mean_diff'], r['diff_ci_low'], r['diff_ci_high'])} "
            f"| {compare.format_p(r['p_t'])} | {compare.format_p(r['p_holm'])} | {compare.format_p(r['p_tost'])} "
            f"| {compare.two_level_interval(r)} | {compare.format_mdd(r['mdd'])} | {needed} "
            f"| **{r['text']}** | {tuning} |"
        )  # fmt: skip
    return "\n".join(lines)


def majority_baseline(metric: str, references: Iterable[int | float]) -> float:
    """×100: the accuracy of always predicting the most frequent label of `references`; 0 for correlations and
    MCC (a constant predictor has none)."""
    if metric != "accuracy":
        return 0.0
    references = np.asarray(list(references)).astype(int)
    return float(np.bincount(references).max() / len(references) * 100)


def _majority_of(df: pd.DataFrame, task: str) -> float:
    """The constant predictor's dev score of `task`, from the first completed record with dev predictions."""
    for _, run in df[(df["task"] == task) & (df["status"] == "completed")].iterrows():
        split = compare.load_predictions(run["path"])
        if split is not None:
            return majority_baseline(run["metric"], split[1])
    return math.nan


def markdown_table2_vs_paper(cells: pd.DataFrame, df: pd.DataFrame) -> str:
    """Measured Table 2 beside the paper's numbers: one row per method."""
    tasks = sorted(cells["task"].unique())
    head = "| method | paper share | paper MNLI | paper SST-2 | share here | " + " | ".join(
        f"{t} here: median ± std (lr) | {t} mean [95% CI]" for t in tasks
    )
    lines = [head + " |", "|:---|---:|---:|---:|---:|" + "---:|---:|" * len(tasks)]
    for method, (share, mnli, sst2) in PAPER_TABLE2.items():
        sub = cells[cells["method"] == method]
        here = format_share(sub["share_pct"].iloc[0]) if len(sub) else "—"
        row = [method, share, f"{mnli:.1f}", f"{sst2:.1f}", here]
        for t in tasks:
            cell = sub[sub["task"] == t]
            cell = cell.iloc[0] if len(cell) else None
            row += [format_cell(cell), format_ci(cell)]
        lines.append("| " + " | ".join(row) + " |")
    floor = [f"{t} {_f(_majority_of(df, t))}" for t in tasks]
    lines += [
        "",
        f"Constant predictor on the dev set (majority class; 0 for correlations): {', '.join(floor)}.",
    ]
    return "\n".join(lines)


@functools.cache
def planned_keys(experiment: str, variant: str) -> tuple[str, ...]:
    """The run keys of the jobs the experiment's grid plans (`peftbench.run.sweep.planned_keys`)."""
    from peftbench.run.sweep import planned_keys as keys

    return tuple(keys(["-m", f"+experiment={experiment}_{variant}"]))


def grid_progress(experiment: str, variant: str, df: pd.DataFrame) -> tuple[int, int]:
    """(jobs of the experiment's grid that have a completed record, jobs it plans): the record's run key is the job's,
    as resume matches them, so that lr extensions and evaluation seeds, which are not in the grid, never make up
    for grid jobs still to run (table2_cpu had more records than its grid while STS-B had none)."""
    planned = planned_keys(experiment, variant)
    done = set(df.loc[df["status"] == "completed", "run_key"]) if len(df) else set()
    return sum(key in done for key in planned), len(planned)


def completion(experiment: str, variant: str, df: pd.DataFrame) -> str:
    """``N runs completed (G of the M its grid plans, ...), K failed; H h of CPU time``."""
    (in_grid, planned), completed = grid_progress(experiment, variant, df), df[df["status"] == "completed"]
    failed = int((df["status"] == "failed").sum()) if len(df) else 0
    hours = completed["time_s"].sum() / 3600 if len(df) else 0.0
    beyond = len(completed) - in_grid
    return (f"{len(completed)} runs completed ({in_grid} of the {planned} its grid plans"
            + (f"; {beyond} beyond it: runs at lrs outside the grid and evaluation seeds" if beyond else "")
            + f"), {failed} failed; {hours:.1f} h of CPU time in the completed records")


HEADER = """# Findings: the paper's claims on this machine

Generated by `python -m peftbench.findings` from the records under `{results}/` (do not edit above the marker at
the end; the discussion below it is written by hand, and a test checks every number it quotes against this
generated part). The setting of the `_{variant}` experiments is in [experiments/README.md](README.md): MiniLM-L6
instead of roberta-base, a 4,000-example random subset of each task's train set (10% of it held out to pick the
epoch and the lr) for 2 epochs instead of the full set for 10, fp32 on every machine, the full dev set reported.
The protocol: seeds 0–2 are tuning seeds (their held-out split chooses each cell's lr); seeds from 100 on are
evaluation seeds at the chosen lr, and where a cell has them its dev score and its comparisons use them alone.
Every claim below is tested on GLUE classification with an encoder, whereas the paper ran Tables 3–5 on XSum and
WMT with BART/mBART. The last three experiments test the method papers' own ablations (prefix tuning, prompt
tuning, P-tuning v1/v2). A verdict is about this setting, not about the paper's; the rule that reads it is in the
docstring of `peftbench/findings.py`: the seed is the unit of replication, "≈" needs an equivalence test, and an
undecided comparison says how many seeds it would need."""


def _sized_on_tuning_seeds(claim: Claim, df: pd.DataFrame, rows: pd.DataFrame, n_resamples: int = 200) -> pd.DataFrame:
    """A claim's comparison `rows` with ``seeds_needed`` from the tuning seeds alone (fixed before any evaluation
    seed, so interim results never move it); the bootstrap does not vote, so a few resamples do."""
    tuning_rows, _ = check_claim(claim, df[df["role"] != "evaluation"], n_resamples)
    return rows.drop(columns="seeds_needed").merge(
        tuning_rows[["task", "a", "b", "seeds_needed"]], on=["task", "a", "b"], how="left")


def _decision_plan(experiment: str, variant: str, df: pd.DataFrame, cells: pd.DataFrame, rows: pd.DataFrame,
                   sized: pd.DataFrame | None, claim: Claim) -> tuple[dict | None, str]:
    """What the fixed design of a claim still lacks (`peftbench.analysis.plan`, its evaluation seeds per cell from
    the power analysis of the tuning seeds) and its "To decide it" paragraph ("" when nothing is undecided)."""
    if rows.empty:
        return None, ""
    completed = df[df["status"] == "completed"]
    in_grid, planned = grid_progress(experiment, variant, df)
    grid_to_go = planned - in_grid
    pilot_needs = {} if sized is None else {(r["task"], r["a"], r["b"]): int(r["seeds_needed"])
                                            for _, r in sized.iterrows() if pd.notna(r["seeds_needed"])}  # fmt: skip
    mean_time = float(completed["time_s"].mean()) if len(completed) else math.nan
    todo = plan.plan(_sized_on_tuning_seeds(claim, df, rows), cells, grid_to_go, mean_time, pilot_needs)
    undecided = todo is not None and (rows["outcome"] == UNDERPOWERED).any()
    if undecided and not todo["grid_runs"] and not todo["eval_runs"]:
        return todo, plan.markdown_complete(rows)
    return todo, plan.markdown_plan(todo, mean_time) if undecided else ""


def evaluation_targets(df: pd.DataFrame, n_resamples: int = 200) -> dict[tuple[str, str], int]:
    """Evaluation seeds per cell, keyed by (task, label), for the comparisons of the claims on these records'
    experiments: what `plan.plan` sizes (the power analysis within 5–12) from the **tuning seeds** alone, so that
    the number is fixed before any evaluation seed and interim results never move it, and for every comparison,
    decided or not (no optional stopping). The bootstrap does not vote, so a few resamples do."""
    experiments = {str(s).removesuffix("_cpu").removesuffix("_paper") for s in df["sweep"].dropna()}
    cells, targets = summarize(df), {}
    for claim in (c for c in CLAIMS if c.experiment in experiments):
        rows, _ = check_claim(claim, df, n_resamples)
        todo = plan.plan(_sized_on_tuning_seeds(claim, df, rows, n_resamples), cells, 0, math.nan)
        for key, n in (todo["targets"] if todo else {}).items():
            targets[key] = max(n, targets.get(key, 0))
    return targets


def _evaluation_started(cells: pd.DataFrame, rows: pd.DataFrame) -> bool:
    """Whether any cell of the claim's comparisons `rows` has an evaluation seed (another claim's cells in the same
    experiment do not count: P-tuning v2's SmolLM2 claim read *interim* once its MiniLM claims' seeds ran)."""
    own = {(r["task"], side) for _, r in rows.iterrows() for side in (r["a"], r["b"])}
    return bool(any((c["task"], c["label"]) in own and c["n_evaluation"] > 0 for _, c in cells.iterrows()))


def _experiment_records(results: Path, experiment: str, variant: str) -> pd.DataFrame:
    path = results / f"{experiment}_{variant}"
    return load_records([path])[0] if path.is_dir() else pd.DataFrame()


def build(
    results: Path, variant: str = "cpu", n_resamples: int = bootstrap.N_RESAMPLES, pilots: Path | None = None
) -> tuple[str, pd.DataFrame]:
    """FINDINGS.md's generated part and the table of claim verdicts (one row per claim: statement, experiment,
    source, verdict, provisional, and how many of its comparisons have each outcome of `OUTCOMES`). An experiment
    with no records that has some under `pilots` is sized from them
    (`peftbench.analysis.pilot`)."""
    frames = {experiment: _experiment_records(results, experiment, variant) for experiment in EXPERIMENTS}
    tested: dict[str, tuple[pd.DataFrame, list[str]]] = {}
    for claim in CLAIMS:
        df = frames[claim.experiment]
        tested[claim.key] = check_claim(claim, df, n_resamples) if len(df) else (pd.DataFrame(), [])
    # a pilot sizes an experiment with no records, and the comparisons of one too short of seed pairs for an sd
    unsized = {c.experiment for c in CLAIMS if len(rows := tested[c.key][0])
               and any(n is None or (isinstance(n, float) and math.isnan(n)) for n in rows["seeds_needed"])}
    pilot_frames = {e: _experiment_records(pilots, e, variant) for e in EXPERIMENTS
                    if pilots and (frames[e].empty or e in unsized)}  # fmt: skip
    sized = {e: pilot.pilot_rows([c for c in CLAIMS if c.experiment == e], df, check_claim, n_resamples)
             for e, df in pilot_frames.items() if any(c.experiment == e for c in CLAIMS) and len(df)}  # fmt: skip
    # an experiment whose grid has not completed gives provisional verdicts: a cell may lack seeds or lrs
    progress = {e: grid_progress(e, variant, df) for e, df in frames.items() if len(df)}
    unfinished = {e: (done, planned) for e, (done, planned) in progress.items() if done < planned}
    cells_of = {e: summarize(df) for e, df in frames.items() if len(df)}
    plans = {c.key: _decision_plan(c.experiment, variant, frames[c.experiment], cells_of[c.experiment],
                                   tested[c.key][0], sized.get(c.experiment), c)
             if len(tested[c.key][0]) else (None, "") for c in CLAIMS}  # fmt: skip
    verdicts = []
    for claim in CLAIMS:
        rows = tested[claim.key][0]
        todo = plans[claim.key][0]
        started = len(rows) and _evaluation_started(cells_of[claim.experiment], rows)
        outcomes = list(rows["outcome"]) if len(rows) else []
        undecided = rows[rows["outcome"] == UNDERPOWERED] if len(rows) else rows
        verdict = claim_verdict(outcomes, list(undecided["seeds_needed"]) if len(undecided) else [])
        verdicts.append({
            "claim": claim.statement, "experiment": claim.experiment, "source": claim.source, "verdict": verdict,
            "provisional": verdict != NOT_RUN and claim.experiment in unfinished,
            # evaluation has begun but the fixed design's evaluation seeds are not all in: an interim look
            "interim": int(todo["eval_runs"]) if todo and started and todo["eval_runs"] else 0,
            # no evaluation seed yet: each cell is chosen and compared on the same tuning seeds (biased upward)
            "tuning_only": int(todo["eval_runs"]) if todo and not started and todo["eval_runs"] else 0,
            "pilot_needs": pilot.most_needed(sized[claim.experiment], claim.key) if claim.experiment in sized else None,
            **{o: outcomes.count(o) for o in OUTCOMES},
        })  # fmt: skip
    table = pd.DataFrame(verdicts)

    def shown(v: pd.Series) -> str:
        done, planned = unfinished.get(v["experiment"], (0, 0))
        pilot_note = (f" (a bf16 pilot sizes it at ≈ {int(v['pilot_needs'])} seeds)"
                      if v["verdict"] == NOT_RUN and pd.notna(v["pilot_needs"]) else "")  # fmt: skip
        interim = ""
        if v["interim"] and not v["provisional"]:
            interim = f" (interim: {v['interim']} evaluation runs of its fixed design to go)"
        elif v["tuning_only"] and not v["provisional"]:
            interim = (f" (tuning seeds only: chosen and compared on the same runs; its {v['tuning_only']} "
                       "evaluation runs have not started)")  # fmt: skip
        return f"**{v['verdict']}**" + (f" (provisional: {done} of its grid's {planned} runs)" if v["provisional"]
                                        else pilot_note) + interim

    lines = ["| claim | paper | experiment | verdict | comparisons: " + " / ".join(OUTCOMES) + " |",
             "|:---|:---|:---|:---|:---|"]  # fmt: skip
    for _, v in table.iterrows():
        lines.append(f"| {v['claim']} | {v['source']} | [{v['experiment']}](#{v['experiment']}) | "
                     f"{shown(v)} | {' / '.join(str(v[o]) for o in OUTCOMES)} |")  # fmt: skip
    sections = [HEADER.format(results=results.name, variant=variant),
                "## Verdicts\n\n" + "\n".join(lines) + "\n\n" + MARGIN_NOTE]  # fmt: skip

    for experiment in EXPERIMENTS:
        df, name = frames[experiment], f"{experiment}_{variant}"
        where = f"{results.name}/{name}"
        parts = [f"## {experiment}", ""]
        if df.empty:
            parts.append(f"No records under `{where}/` yet: `python -m peftbench -m +experiment={name}`.")
            if experiment in sized:
                link = os.path.relpath(pilots / name, results.parent / "experiments")  # FINDINGS.md's folder
                parts += ["", pilot.markdown_pilot(sized[experiment], link, len(pilot_frames[experiment]))]
            sections.append("\n".join(parts))
            continue
        cells = cells_of[experiment]
        parts += [f"`{where}/`: {completion(experiment, variant, df)}. Its report: [summary.md](../{where}/summary.md).",
                  "", f"![{name}: score against budget](../{where}/budget_vs_score.png)", ""]  # fmt: skip
        if experiment == "table2":
            parts += ["### Beside the paper", "", markdown_table2_vs_paper(cells, df), ""]
        parts += ["### Cells", "", markdown_table(cells)]
        for claim in (c for c in CLAIMS if c.experiment == experiment):
            rows, notes = tested[claim.key]
            verdict = shown(table.loc[table["claim"] == claim.statement].iloc[0])
            parts += ["", f"### Claim: {claim.statement} ({claim.source}): {verdict}", ""]
            if len(rows):
                parts.append(markdown_claim_table(rows))
                if todo := plans[claim.key][1]:
                    parts += ["", todo]
            if notes:
                parts += ["", "Not compared: " + "; ".join(notes)]
        sections.append("\n".join(parts))
    sections.append("Statistics: " + compare.RULE + " Outcomes and claim verdicts: the docstring of "
                    "`peftbench/findings.py`.")  # fmt: skip
    return "\n\n".join(sections), table


def write(path: Path, generated: str) -> None:
    """Write FINDINGS.md: the generated part, the marker, and the hand-written text already below the marker."""
    kept = ""
    if path.exists():
        _, marker, kept = path.read_text(encoding="utf-8").partition(DISCUSSION_MARKER)
        kept = kept if marker else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{generated}\n\n{DISCUSSION_MARKER}{kept or chr(10)}", encoding="utf-8")
