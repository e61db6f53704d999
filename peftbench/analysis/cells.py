"""Cells: the runs of one task × method × model × design × setting, summarised at the learning rate chosen on
the held-out split of train (never on dev).

`summarize` aggregates the completed runs of each cell (`CELL`) per lr: n seeds, median, sample std, mean and its
95% t interval of the score ×100 (`peftbench.analysis.stats.describe`), the paper's parameter share in %, the
failed runs; `choose_lr_row` picks the lr a cell reports from the tuning seeds' held-out scores; `grid_edge` says
when that choice is the end of its grid (a better lr may lie beyond it).
"""

from __future__ import annotations

import math

import pandas as pd

from peftbench.analysis import stats
from peftbench.analysis.records import design_key
from peftbench.run.record import EVALUATION, TUNING

CELL = ["task", "method", "model", "design_key", "setting"]
SUMMARY_COLUMNS = [
    "task", "method", "model", "design_key", "setting", "label", "metric", "lr", "lr_grid", "lr_choice", "chosen",
    "select_score", "n", "dev_on", "n_tuning", "n_evaluation", "n_failed", "n_failed_grid", "median", "std", "mean", "ci_low", "ci_high",
    "share_pct", "params_trainable", "params_stored", "params_paper", "seeds", "eval_samples",
]  # fmt: skip
NO_LR = -1.0  # the grouping key of runs whose learning rate is unknown


def format_share(share_pct: float) -> str:
    """A parameter share in percent as the paper writes it: 0.24%, 0.5%, 3.6%, 100%."""
    if share_pct is None or not math.isfinite(share_pct):
        return "?%"
    return f"{share_pct:.3g}%" if share_pct >= 1 else f"{share_pct:.2g}%"


def format_lr(lr: float | None) -> str:
    """A learning rate as papers write it: 1e-4, 2.5e-4, 5e-5; ``?`` when unknown."""
    if lr is None or not math.isfinite(lr):
        return "?"
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _cell_row(key: tuple, done: pd.DataFrame, n_failed: int, fallback: pd.DataFrame) -> dict:
    """The statistics of the completed runs `done` of one cell at one lr (key = cell + lr).

    The held-out `select_score` (what chooses the lr) is the mean over the *tuning* seeds' runs only; the dev
    statistics are those of the *evaluation* seeds' runs when the lr has any (`dev_on` = "evaluation"), else of the
    tuning seeds' (`dev_on` = "tuning": chosen and reported on the same runs, biased upward by the choice)."""
    roles = done["role"] if "role" in done else pd.Series(TUNING, index=done.index, dtype=object)
    tuning, evaluation = done[roles != EVALUATION], done[roles == EVALUATION]
    dev = evaluation if len(evaluation) else tuning
    scores = stats.describe(dev["score"].astype(float).to_numpy() * 100)
    select = pd.to_numeric(tuning["select_score"], errors="coerce")
    source = done if len(done) else fallback
    share = pd.to_numeric(source["params.paper_share"], errors="coerce").median() * 100
    return {
        **dict(zip(CELL, key[: len(CELL)], strict=True)),
        "metric": source["metric"].dropna().iloc[0] if source["metric"].notna().any() else None,
        "lr": key[len(CELL)] if key[len(CELL)] != NO_LR else math.nan,
        "select_score": select.mean() * 100 if select.notna().any() else math.nan,
        "n": len(dev),
        "dev_on": EVALUATION if len(evaluation) else TUNING,
        "n_tuning": len(tuning),
        "n_evaluation": len(evaluation),
        "n_failed": n_failed,
        "median": scores.median, "std": scores.std, "mean": scores.mean,
        "ci_low": scores.ci_low, "ci_high": scores.ci_high,
        "share_pct": share,
        **{
            f"params_{k}": pd.to_numeric(source[f"params.{k}"], errors="coerce").median()
            for k in ("trainable", "stored", "paper")
        },
        "seeds": sorted(int(s) for s in dev["seed"]),
        # one value per cell: runs on different dev subsets differ in their setting (data.max_eval_samples)
        "eval_samples": source["eval_samples"].dropna().iloc[0] if source["eval_samples"].notna().any() else None,
    }  # fmt: skip


def choose_lr_row(grid: pd.DataFrame) -> tuple[object | None, str]:
    """The index of the row (one per lr of one cell) the cell reports, and how it was chosen.

    One lr: that one ("only"). Several: among the lrs with completed runs and a held-out selection score,
    the highest mean held-out score; ties → fewer failed runs, then the smaller lr ("held-out"). The dev
    score never enters. None when no lr qualifies ("all failed" / "no held-out score").
    """
    if len(grid) == 1:
        return grid.index[0], "only"
    ran = grid[(grid["n"] > 0) & grid["select_score"].notna()]
    if ran.empty:
        return None, "all failed" if (grid["n"] == 0).all() else "no held-out score"

    def rank(i: object) -> tuple[float, int, float]:
        lr = ran.at[i, "lr"]
        return (
            -round(float(ran.at[i, "select_score"]), 7),
            int(ran.at[i, "n_failed"]),
            lr if lr >= 0 else math.inf,
        )

    return min(ran.index, key=rank), "held-out"


def summarize(df: pd.DataFrame, choose_lr: bool = True) -> pd.DataFrame:
    """Per cell (task, method, model, design; everything but the lr and the seed) at the lr of `choose_lr`:
    n seeds, median, sample std (ddof=1), mean and its 95% t interval of score ×100 (`stats.describe`).

    Only completed runs enter the statistics; `n_failed` counts the failed runs of the cell at its lr and
    `n_failed_grid` at all its lrs (a failed run without a design joins its (task, method, model) when that has
    a single design). A cell with only failed runs has n = 0 and a NaN median. `select_score` is the mean over
    seeds of the held-out selection score ×100 of the kept epoch; `lr_grid` the lrs the cell ran; `label` the
    Table 2 row name, e.g. ``lora (0.24%)``. With ``choose_lr=False``: one row per cell × lr, `chosen` marking
    the lr the default view reports.
    """
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    df = df.assign(_lr=pd.to_numeric(df.get("lr", pd.Series(index=df.index)), errors="coerce").fillna(NO_LR))
    if "select_score" not in df:
        df["select_score"] = math.nan
    if "setting" not in df:
        df["setting"] = ""
    df["setting"] = df["setting"].fillna("")
    keys = [*CELL, "_lr"]
    done = df[df["status"] == "completed"]
    failed = df[df["status"] == "failed"].copy()
    done_cells = set(done.groupby(CELL).groups)
    no_design = design_key(None)
    for i, row in failed.iterrows():
        designs = {
            k[3] for k in done_cells if (*k[:3], k[4]) == (row["task"], row["method"], row["model"], row["setting"])
        }
        if row["design_key"] == no_design and len(designs) == 1:
            failed.at[i, "design_key"] = designs.pop()

    failed_groups = dict(list(failed.groupby(keys))) if len(failed) else {}
    done_keys = set(done.groupby(keys).groups)
    rows = [_cell_row(k, g, len(failed_groups.get(k, ())), g) for k, g in done.groupby(keys)]
    rows += [_cell_row(k, done.iloc[:0], len(g), g) for k, g in failed_groups.items() if k not in done_keys]
    per_lr = pd.DataFrame(rows)
    out = []
    for _, grid in per_lr.groupby(CELL, sort=False):
        chosen, how = choose_lr_row(grid)
        extra = {
            "lr_grid": sorted(grid["lr"].dropna()),
            "lr_choice": how,
            "n_failed_grid": grid["n_failed"].sum(),
        }
        if not choose_lr:
            out += [{**r.to_dict(), **extra, "chosen": i == chosen} for i, r in grid.iterrows()]
        elif chosen is not None:
            out.append({**grid.loc[chosen].to_dict(), **extra, "chosen": True})
        else:  # nothing to report honestly: no statistics, the failures of the whole grid
            blank = dict.fromkeys(
                ("lr", "select_score", "median", "std", "mean", "ci_low", "ci_high"), math.nan
            )
            out.append({**grid.iloc[0].to_dict(), **blank, **extra, "n": 0, "n_tuning": 0, "n_evaluation": 0,
                        "seeds": [], "chosen": False,
                        "n_failed": extra["n_failed_grid"]})  # fmt: skip
    summary = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    summary["label"] = [
        (f"{m} ({format_share(s)})" if math.isfinite(s) else m) + (f" · {setting}" if setting else "")
        for m, s, setting in zip(summary["method"], summary["share_pct"], summary["setting"], strict=True)
    ]
    # Two designs of one method with the same share would share a row name: tell them apart.
    clash = summary.groupby(["model", "label", "setting"])["design_key"].transform("nunique") > 1
    summary.loc[clash, "label"] = summary.loc[clash, "label"] + " [" + summary.loc[clash, "design_key"] + "]"
    return summary.sort_values(
        ["task", "model", "share_pct", "method", "design_key", "setting", "lr"], ignore_index=True
    )


#: the fewest lrs a tuning grid needs before its choice counts (an edge, evaluation seeds); two is a coarse check
MIN_GRID = 3


def grid_edge(cell: pd.Series) -> str:
    """"lowest" / "highest" when a cell's lr is the end of its grid of three or more lrs, else "".

    A grid of two is a coarse check (either choice is an edge); from three, an edge choice says the grid may not
    bracket the best lr."""
    grid = [lr for lr in cell["lr_grid"] if math.isfinite(lr)]  # an unknown lr is NaN (`_cell_row`)
    if len(grid) < MIN_GRID or not math.isfinite(cell["lr"]):
        return ""
    return "lowest" if cell["lr"] == min(grid) else "highest" if cell["lr"] == max(grid) else ""
