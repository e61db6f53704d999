"""Read the run records (`result.json`) of any directory tree and report them like the paper.

Every training run writes one self-describing record; this module is the only reader:

- `load_records` finds `result.json` files recursively, flattens one row per run, reports unreadable records
  as `Problem`s instead of raising, and keeps one record per `run_key` (a resumed sweep that re-ran a job,
  or a directory given twice): the latest completed one by `finished_at`.
- `summarize` aggregates completed runs per cell (task, method, model, design) at the learning rate chosen on
  the held-out split of train (never on dev; `choose_lr=False` keeps one row per lr): n seeds, median, sample
  std, mean and its 95% t interval of the score ×100 (`peftbench.analysis.stats.describe`), the paper's parameter share
  in %, and the failed runs of the cell.
- `markdown_table` renders paper Table 2 (rows = methods with their share, columns = tasks, median ± std and
  the chosen lr) and the mean [95% CI] of the same cells; `markdown_lr_table` shows held-out and dev per lr;
  `plot_budget_vs_score` draws paper Figure 1 (score against % of parameters on a log axis).
- `peftbench.analysis.costs` adds what each cell stores and costs (artefact size, training time, inference overhead,
  pareto.png).
- `compare` runs the comparisons each experiment declares (`peftbench.analysis.compare`) and any ``A:B`` asked for.

The command line (``python -m peftbench.report``) is `peftbench/report.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from peftbench.analysis import stats
from peftbench.run.record import (
    EVALUATION,
    NOT_IN_KEY,
    TUNING,
    VERBALIZER_KEYS,
    as_float,
    at_added_default,
    completed_score,
    evaluation_seeds_from,
    reads_verbalizer_keys,
    record_key,
    record_precision,
    seed_role,
    selection_score,
)

RECORD_NAME = "result.json"
REQUIRED_KEYS = ("status", "method", "task", "model", "seed", "run_key")
STATUSES = ("completed", "failed", "interrupted")  # interrupted: stopped by SIGTERM, resumable from a checkpoint
PARAM_KEYS = ("trainable", "stored", "paper", "base", "paper_share")
RUN_COLUMNS = [
    "status", "error", "method", "task", "model", "seed", "role", "evaluation_seeds_from", "run_key", "sweep", "design_key", "metric", "score",
    "setting", "precision", "lr", "select_score", "best_epoch", *(f"params.{k}" for k in PARAM_KEYS),
    "time_s", "peak_mem_mb", "train_examples_per_s", "train_time_s", "artefact_bytes", "inference_ratio",
    "inference_ratio_merged", "lr_scale", "eval_samples", "overrides", "finished_at", "n_dropped", "path",
]  # fmt: skip
CELL = ["task", "method", "model", "design_key", "setting"]
#: config sections whose keys can make runs of one design differ (data size, epochs, batch size, ...)
SETTING_SECTIONS = ("data", "train", "task")
#: keys that never define a setting: the lr (chosen per cell), the task's name, what does not change the result
NOT_SETTING = frozenset({*NOT_IN_KEY, "train.lr", "train.lr_scale", "task.name"})
#: The verbalizer's task keys: part of a verbalizer run's design (`record_design`), never of the setting.
VERBALIZER_SETTING = frozenset(f"task.{k}" for k in VERBALIZER_KEYS)
SUMMARY_COLUMNS = [
    "task", "method", "model", "design_key", "setting", "label", "metric", "lr", "lr_grid", "lr_choice", "chosen",
    "select_score", "n", "dev_on", "n_tuning", "n_evaluation", "n_failed", "n_failed_grid", "median", "std", "mean", "ci_low", "ci_high",
    "share_pct", "params_trainable", "params_stored", "params_paper", "seeds", "eval_samples",
]  # fmt: skip
MISSING = "—"
PRECISION_KEY = "train.mixed_precision"
#: a resolved ``mixed_precision`` as the report names it
PRECISION_NAMES = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}
#: the JSON type each field a reader relies on must have, where it is not null
FIELD_TYPES = {
    "method": str, "task": str, "model": str, "run_key": str, "seed": int, "params": dict, "metrics": dict,
    "throughput": dict, "artefact": dict, "inference": dict, "config": dict, "history": list, "overrides": list,
}  # fmt: skip
JSON_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list"}
NO_LR = -1.0  # the grouping key of runs whose learning rate is unknown


@dataclass(frozen=True)
class Problem:
    """A record that could not be used: where it is and why."""

    path: str
    reason: str


def design_key(design: object) -> str:
    """A short stable hash of a record's `design`: runs that differ only by seed share it."""
    canonical = json.dumps(design, sort_keys=True, default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:8]


def _record_files(dirs: Iterable[str | Path], problems: list[Problem]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        if d.is_file():
            files.append(d)
        elif d.is_dir():
            files.extend(sorted(d.rglob(RECORD_NAME)))
        else:
            problems.append(Problem(str(d), "directory does not exist"))
    return files


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    """The record at `path` and None, or None and the reason it cannot be used."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable file: {err}"
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err}"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    missing = [k for k in REQUIRED_KEYS if record.get(k) is None]
    if missing:
        return None, f"missing required keys: {', '.join(missing)}"
    if record["status"] not in STATUSES:
        return None, f"unknown status {record['status']!r}"
    for key, kind in FIELD_TYPES.items():
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            return None, f"{key} is {json.dumps(value)[:40]}, expected {JSON_NAMES[kind]}"
    if record["status"] == "completed" and completed_score(record) is None:  # the rule resume follows too
        return None, f"completed record whose score {record.get('score')!r} is not a finite number (resume reruns it)"
    return record, None


def record_lr(record: dict) -> float | None:
    """The learning rate a run used: the record's `lr`; for a failed run (no `lr`) the resolved config's
    ``train.lr``, else the method preset's ``method.lr``."""
    if as_float(record.get("lr")) is not None:
        return as_float(record["lr"])
    config = record.get("config")
    for section in ("train", "method"):
        node = config.get(section) if isinstance(config, dict) else None
        lr = as_float(node.get("lr")) if isinstance(node, dict) else None
        if lr is not None:
            return lr
    return None


def _lr_scale(record: dict) -> float:
    """The record's ``train.lr_scale`` (1 in a record written before the key existed)."""
    train = (record.get("config") or {}).get("train")
    scale = as_float(train.get("lr_scale")) if isinstance(train, dict) else None
    return scale if scale is not None else 1.0


def _eval_samples(record: dict) -> int | None:
    """The record's ``data.max_eval_samples``: the size of the dev subset its score is on; None = the full dev set."""
    data = (record.get("config") or {}).get("data")
    value = as_float(data.get("max_eval_samples")) if isinstance(data, dict) else None
    return int(value) if value is not None and math.isfinite(value) else None


def record_design(record: dict) -> object:
    """The record's `design`, with the template and label words of a verbalizer head added (`VERBALIZER_KEYS`,
    task keys that only the verbalizer reads): two templates are two designs, and a verbalizer run and a linear-head
    run of one task share the setting, so that they are compared."""
    design = record.get("design")
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    if not (isinstance(design, dict) and reads_verbalizer_keys(config.get("method"))):
        return design
    task = config.get("task") if isinstance(config.get("task"), dict) else {}
    return {**design, "verbalizer": {k: task.get(k) for k in VERBALIZER_KEYS}}


def _flatten(record: dict, path: Path) -> dict:
    params = record.get("params") or {}
    throughput = record.get("throughput") or {}
    row = {
        **{k: record.get(k) for k in ("status", "error", "method", "task", "model", "seed")},
        "role": seed_role(record),  # tuning seed (chooses the lr) or evaluation seed (reports dev)
        "evaluation_seeds_from": evaluation_seeds_from(record),
        "run_key": record_key(record),  # precision-aware: a bf16 and an fp32 run of one config are two runs
        "precision": PRECISION_NAMES.get(record_precision(record) or "", record_precision(record)),
        "sweep": record.get("sweep"),
        "design_key": design_key(record_design(record)),
        "_setting": setting_items(record),
        "metric": record.get("metric"),
        "score": record.get("score") if record["status"] == "completed" else None,
        "lr": record_lr(record),
        "select_score": selection_score(record) if record["status"] == "completed" else None,
        "best_epoch": record.get("best_epoch"),
        **{f"params.{k}": params.get(k) for k in PARAM_KEYS},
        "time_s": record.get("time_s"),
        "peak_mem_mb": record.get("peak_mem_mb"),
        "train_examples_per_s": throughput.get("train_examples_per_s"),
        "train_time_s": throughput.get("train_time_s"),
        "artefact_bytes": (record.get("artefact") or {}).get("bytes"),
        "inference_ratio": (record.get("inference") or {}).get("ratio"),
        "inference_ratio_merged": (record.get("inference") or {}).get("ratio_merged"),
        "lr_scale": _lr_scale(record),
        "eval_samples": _eval_samples(record),
        "overrides": " ".join(map(shlex.quote, record["overrides"])) if isinstance(record.get("overrides"), list)
        else None,
        "finished_at": record.get("finished_at"),
        "path": str(path),
    }
    for name, value in (record.get("metrics") or {}).items():
        row[f"metric.{name}"] = value
    return row


def setting_items(record: dict) -> dict[str, str]:
    """The record's training setting: every ``data.*``, ``train.*`` and ``task.*`` key of its resolved config
    (JSON-encoded values) except those of `NOT_SETTING`, ``train.mixed_precision`` as the run resolved it (fp32 /
    bf16 / fp16: runs of two precisions are two settings, never pooled or compared), and a key added after records existed
    (`record.ADDED_KEYS`) when it holds its default: a record written before the key equals one at its default, as
    in the run key. Empty without a config."""
    config = record.get("config")
    items: dict[str, str] = {}
    skip = NOT_SETTING | VERBALIZER_SETTING  # the head's, not the setting's: in the design key (`record_design`)
    for section in SETTING_SECTIONS:
        node = config.get(section) if isinstance(config, dict) else None
        for key, value in (node or {}).items() if isinstance(node, dict) else ():
            dotted = f"{section}.{key}"
            if dotted == PRECISION_KEY:  # the precision the run computed in, not the one asked for (`auto`)
                value = PRECISION_NAMES.get(record_precision(record) or "", value)
            if dotted not in skip and not at_added_default(dotted, value):
                items[dotted] = json.dumps(value, sort_keys=True, default=str)
    return items


def setting_labels(items: list[dict[str, str]]) -> list[str]:
    """Per run, the keys of its setting that differ between the given runs, as ``max_train_samples=4000,
    epochs=2`` (the section dropped unless two sections share the name); "" where no key differs."""
    keys = list(dict.fromkeys(k for row in items for k in row))  # in the config's order
    varying = [k for k in keys if len({row.get(k) for row in items}) > 1]
    names = [k.split(".", 1)[1] for k in varying]
    short = {k: (n if names.count(n) == 1 else k) for k, n in zip(varying, names, strict=True)}
    return [", ".join(f"{short[k]}={row.get(k, 'unset')}" for k in varying) for row in items]


def load_records(dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, list[Problem]]:
    """One row per run found under `dirs` (searched recursively for result.json), and the unusable records.

    A record that cannot be used (unreadable, invalid JSON, missing required keys, a field of the wrong type, a
    completed run without a finite score: `record.completed_score`, the rule resume follows) and a directory that
    does not exist become a `Problem`, never an exception.
    Records sharing a `run_key` are one run: the latest completed one (by `finished_at`) is kept, else the
    latest failed one; `n_dropped` counts the others per row and `df.attrs["duplicates_dropped"]` in total.
    `setting` names the config keys (data size, epochs, ...; not the lr) in which the runs of a task differ, so
    that runs of one design at two data sizes are two cells (`setting_labels`).
    """
    problems: list[Problem] = []
    rows: list[dict] = []
    bad_files: set[Path] = set()
    for path in _record_files(dirs, problems):
        record, reason = _read_record(path)
        if record is not None:
            try:
                rows.append(_flatten(record, path))
            except Exception as err:  # a field of a shape `_read_record` does not check: this record only
                record, reason = None, f"malformed record: {type(err).__name__}: {err}"
        if record is None and path.resolve() not in bad_files:  # a directory given twice reports its bad files once
            bad_files.add(path.resolve())
            problems.append(Problem(str(path), reason or "unusable record"))

    by_key: dict[str, list[dict]] = {}
    for row in rows:
        by_key.setdefault(str(row["run_key"]), []).append(row)
    kept = []
    for same_run in by_key.values():
        best = max(
            same_run, key=lambda r: (r["status"] == "completed", str(r["finished_at"] or ""), r["path"])
        )
        kept.append({**best, "n_dropped": len(same_run) - 1})
    for task in {str(row["task"]) for row in kept}:  # per task: max_length differs between tasks, not runs
        same_task = [row for row in kept if str(row["task"]) == task]
        for row, label in zip(same_task, setting_labels([r["_setting"] for r in same_task]), strict=True):
            row["setting"] = label
    for row in kept:
        del row["_setting"]

    metric_columns = sorted({c for row in kept for c in row if c.startswith("metric.")})
    df = pd.DataFrame(kept, columns=RUN_COLUMNS[:-2] + metric_columns + RUN_COLUMNS[-2:])
    df = df.sort_values(["task", "method", "model", "seed", "path"], ignore_index=True)
    df.attrs["duplicates_dropped"] = int(df["n_dropped"].sum()) if len(df) else 0
    return df, problems


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


def seeds_caption(cells: pd.DataFrame) -> str:
    """Which seeds the dev columns of `cells` are on: the evaluation seeds (which took no part in any choice), or
    the tuning seeds (no evaluation seeds yet: chosen and reported on the same runs, so biased upward); a table that
    has both marks the tuning-seed cells with †."""
    on = cells["dev_on"].fillna(TUNING) if "dev_on" in cells else pd.Series(TUNING, index=cells.index)
    if (on == EVALUATION).all():
        return ("dev on evaluation seeds only: seeds that took no part in the lr choice (made on the tuning seeds' "
                "held-out split)")
    if (on == TUNING).all():
        return ("dev on the tuning seeds: no evaluation seeds yet, so each cell is chosen and reported on the same "
                "runs (the maximum of noisy means is biased upward)")
    return ("dev on evaluation seeds (which took no part in the lr choice), except the cells marked † (no evaluation "
            "seeds yet: dev of the tuning seeds that chose the lr, biased upward)")


def _format_cell(cell: pd.Series | None) -> str:
    """``median ± std (lr 5e-4)``; the median alone for one seed; ``—`` for no completed run; † when the dev score is
    of the tuning seeds although other cells have evaluation seeds (set by `markdown_table`)."""
    if cell is None or cell["n"] == 0:
        return MISSING
    text = f"{cell['median']:.1f}" + ("†" if cell.get("_dagger", False) else "")
    if cell["n"] > 1 and math.isfinite(cell["std"]):
        text += f" ± {cell['std']:.1f}"
    return text + (f" (lr {format_lr(cell['lr'])})" if math.isfinite(cell.get("lr", math.nan)) else "")


def _format_ci(cell: pd.Series | None) -> str:
    """``mean [ci_low, ci_high]``; the mean alone for one seed."""
    if cell is None or cell["n"] == 0:
        return MISSING
    ci = f" [{cell['ci_low']:.1f}, {cell['ci_high']:.1f}]" if math.isfinite(cell["ci_low"]) else ""
    return f"{cell['mean']:.1f}{ci}"


def _task_grid(sub: pd.DataFrame, tasks: list[str], fmt: Callable[[pd.Series | None], str]) -> list[str]:
    """Rows = methods with their share (and lr, in the per-lr view), columns = tasks, cells `fmt(cell)`."""
    identity = ["method", "design_key", "setting", "label"] + (["lr_key"] if sub.duplicated(CELL).any() else [])
    sub = sub.assign(lr_key=sub["lr"].fillna(NO_LR))
    rows = sub.sort_values(["share_pct", "method", "setting", "lr_key"]).drop_duplicates(identity)
    cells = {(*(r[k] for k in identity), r["task"]): r for _, r in sub.iterrows()}
    lines = ["| method (share) | " + " | ".join(tasks) + " |", "|:---|" + "---:|" * len(tasks)]
    for _, m in rows.iterrows():
        row = [fmt(cells.get((*(m[k] for k in identity), t))) for t in tasks]
        lines.append(f"| {m['label']} | " + " | ".join(row) + " |")
    return lines


def markdown_table(summary: pd.DataFrame) -> str:
    """Paper Table 2: rows = methods with their share, columns = tasks, cells ``median ± std (lr …)`` (×100),
    then the same cells as ``mean [95% CI]``.

    A cell with one seed shows the median (mean) alone; a missing or all-failed cell shows ``—``.
    With several models, one pair of tables per model under a heading.
    """
    if summary.empty:
        return "_No runs to report._"
    tasks = sorted(summary["task"].unique())
    metrics = ", ".join(
        f"{t}: {summary.loc[summary['task'] == t, 'metric'].dropna().iloc[0]}"
        if summary.loc[summary["task"] == t, "metric"].notna().any() else t
        for t in tasks
    )  # fmt: skip
    models = sorted(summary["model"].unique())
    on = summary["dev_on"].fillna(TUNING) if "dev_on" in summary else pd.Series(TUNING, index=summary.index)
    mixed = (on[summary["n"] > 0] == EVALUATION).any() and (on[summary["n"] > 0] == TUNING).any()
    summary = summary.assign(_dagger=mixed & (on == TUNING))
    parts = []
    for model in models:
        sub = summary[summary["model"] == model]
        n = sub.loc[sub["n"] > 0, "n"]
        heading = [f"### {model}", ""] if len(models) > 1 else []
        if not len(n):
            parts.append("\n".join([*heading, *_task_grid(sub, tasks, _format_cell), "", f"Model {model}: no "
                                    "completed runs."]))  # fmt: skip
            continue
        seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
        caption = (
            f"Model {model}; median ± sample std ×100 over {seeds} seed(s) of completed runs on "
            f"{dev_set_words(sub[sub['n'] > 0])} ({metrics}); share = the paper's parameter count / base model"
        )
        if sub["lr"].notna().any():
            caption += "; (lr …) = the cell's learning rate, chosen on the held-out split of train when it ran several"
        caption += "; " + seeds_caption(sub[sub["n"] > 0])
        ci_caption = (
            "Mean ×100 [95% confidence interval of the mean: Student's t with n − 1 df] over the same runs; "
            "one seed: the mean alone."
        )
        main, ci = _task_grid(sub, tasks, _format_cell), _task_grid(sub, tasks, _format_ci)
        parts.append("\n".join([*heading, *main, "", caption + ".", "", *ci, "", ci_caption]))
    return "\n\n".join(parts)


def dev_set_words(cells: pd.DataFrame) -> str:
    """What the cells' scores are on: "the full dev set", or the subset ``data.max_eval_samples`` made."""
    sizes = cells["eval_samples"] if "eval_samples" in cells else pd.Series(dtype=float)
    subsets = sorted({int(v) for v in sizes.dropna()})
    if not subsets:
        return "the full dev set"
    if len(subsets) == 1 and sizes.notna().all():
        return (f"a {subsets[0]:,}-example subset of the dev set, the same in every run "
                f"(data.max_eval_samples={subsets[0]})")
    return (f"the full dev set or a subset of it (data.max_eval_samples={', '.join(map(str, subsets))} where a "
            "row's setting says so)")


def markdown_lr_table(per_lr: pd.DataFrame) -> str:
    """Every lr of the cells that ran several (`summarize(df, choose_lr=False)`): held-out and dev side by side,
    the chosen one marked; empty when every cell ran one lr."""
    if per_lr.empty or not per_lr.duplicated(CELL).any():
        return ""
    multi = per_lr[per_lr.duplicated(CELL, keep=False)]
    model = multi["model"].nunique() > 1
    lines = [
        "| task | method (share) | lr | runs | failed | held-out ×100 | dev median ± std | dev mean [95% CI] | chosen |",
        "|:---|:---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for _, r in multi.iterrows():
        label = f"{r['label']}, {r['model']}" if model else r["label"]
        held_out = f"{r['select_score']:.1f}" if math.isfinite(r["select_score"]) else MISSING
        dev = _format_cell(r.drop("lr"))
        edge = grid_edge(r) if r["chosen"] else ""
        mark = f"✓ ({edge})" if edge else "✓" if r["chosen"] else ""
        lines.append(f"| {r['task']} | {label} | {format_lr(r['lr'])} | {r['n']} | {r['n_failed']} | {held_out} "
                     f"| {dev} | {_format_ci(r)} | {mark} |")  # fmt: skip
    caption = (
        "Learning rate per cell. held-out = the mean over seeds of the selection score of the kept epoch, on the "
        "split held out of train. The chosen lr (✓) has the highest held-out score; ties: fewer failed runs, then "
        "the smaller lr; an lr whose runs all failed cannot be chosen. The dev columns never enter the choice. "
        "(lowest) / (highest): the choice sits at the edge of a grid of three or more lrs, so a better lr may lie "
        "beyond it; extend the grid past that edge (`train.lr_scale`) and the report chooses again."
    )
    return "\n".join(["## Learning rate per cell", "", *lines, "", caption])


def grid_edge(cell: pd.Series) -> str:
    """"lowest" / "highest" when a cell's lr is the end of its grid of three or more lrs, else "".

    A grid of two is a coarse check (either choice is an edge); from three, an edge choice says the grid may not
    bracket the best lr."""
    grid = [lr for lr in cell["lr_grid"] if math.isfinite(lr)]  # an unknown lr is NaN (`_cell_row`)
    if len(grid) < 3 or not math.isfinite(cell["lr"]):
        return ""
    return "lowest" if cell["lr"] == min(grid) else "highest" if cell["lr"] == max(grid) else ""


#: the overrides a next-lr command sets itself: the seeds its cell ran, the lr scale that reaches the next lr, and
#: (when a DIR is given) where the records go
NEXT_LR_SETS = ("seed", "train.lr_scale", "results_root")


def _cell_command(
    runs_all: pd.DataFrame, cell: pd.Series, target_lr: float, seeds: list[int], root: str | Path | None
) -> tuple[str, str]:
    """The command that runs `cell` at `target_lr` for `seeds` (its recorded overrides with ``seed``,
    ``train.lr_scale`` and, given `root`, ``results_root`` replaced), and a note where the records predate
    ``overrides``."""
    runs = runs_all[(runs_all[CELL] == cell[CELL].to_numpy()).all(axis=1)].sort_values(["seed", "path"])
    base = (pd.to_numeric(runs["lr"]) / pd.to_numeric(runs["lr_scale"])).median()
    sets = {
        "seed": ",".join(str(s) for s in seeds),
        "train.lr_scale": f"{target_lr / base:g}",
        **({"results_root": shlex.quote(str(root))} if root is not None else {}),
    }
    recorded = runs["overrides"].dropna()
    if len(recorded):
        kept = [o for o in shlex.split(recorded.iloc[0]) if o.split("=", 1)[0].lstrip("+~") not in sets]
        note = ""
    else:
        sweep = runs["sweep"].dropna()
        kept = [f"+experiment={sweep.iloc[0]}", f"task={cell['task']}"] if len(sweep) else [
            f"method={cell['method']}", f"task={cell['task']}", f"model={cell['model']}"]
        note = f"  # and the override that selects {cell['method']} (these records predate `overrides`)"
    command = " ".join(["python -m peftbench -m", *map(shlex.quote, kept), *(f"{k}={v}" for k, v in sets.items())])
    return command, note


def next_lr_commands(df: pd.DataFrame, cells: pd.DataFrame, root: str | Path | None = None) -> list[str]:
    """For each cell whose chosen lr is an edge of its grid (`grid_edge`): a comment naming the cell and a command
    that runs it one ×2 step past that edge, at the seeds it ran.

    The command is the recorded ``overrides`` of one of its runs with ``seed``, ``train.lr_scale`` (the lr ÷ the
    run's lr before scaling, so that the preset's lr stays the base) and, given `root`, ``results_root`` replaced.
    Records written before ``overrides`` was recorded give ``+experiment=<sweep> task=<task>`` and a note: what
    selects the method must be added by hand. Empty when no choice is at an edge."""
    if df.empty or cells.empty:
        return []
    runs_all = df[df["status"] == "completed"].assign(setting=df["setting"].fillna(""))
    lines = []
    for _, cell in cells.iterrows():
        edge = grid_edge(cell)
        if not edge:
            continue
        grid = sorted(lr for lr in cell["lr_grid"] if math.isfinite(lr))
        target = grid[0] / 2 if edge == "lowest" else grid[-1] * 2
        seeds = sorted({int(x) for x in runs_all.loc[(runs_all[CELL] == cell[CELL].to_numpy()).all(axis=1)
                                                      & (runs_all["role"] != "evaluation"), "seed"]})
        command, note = _cell_command(runs_all, cell, target, seeds, root)
        lines += [f"# {cell['task']} {cell['label']}: chosen lr {format_lr(cell['lr'])} is the {edge} of "
                  f"{', '.join(format_lr(lr) for lr in grid)}; next: {format_lr(target)}", command + note]
    return lines


def next_evaluation_commands(
    df: pd.DataFrame, cells: pd.DataFrame, n_seeds: int, root: str | Path | None = None
) -> list[str]:
    """For each cell with fewer than `n_seeds` evaluation seeds at its chosen lr: a comment and the command that
    runs the missing ones (from the first evaluation seed of its records' protocol on) at that lr. A cell whose
    choice sits at a grid edge is skipped with a note: extend its grid first (`next_lr_commands`)."""
    if df.empty or cells.empty:
        return []
    runs_all = df[df["status"] == "completed"].assign(setting=df["setting"].fillna(""))
    lines = []
    for _, cell in cells.iterrows():
        if not math.isfinite(cell["lr"]) or cell["n"] == 0:
            continue
        runs = runs_all[(runs_all[CELL] == cell[CELL].to_numpy()).all(axis=1)]
        at_lr = runs[pd.to_numeric(runs["lr"]).sub(cell["lr"]).abs() <= 1e-9 * cell["lr"]]
        have = sorted({int(x) for x in at_lr.loc[at_lr["role"] == "evaluation", "seed"]})
        if len(have) >= n_seeds:
            continue
        if edge := grid_edge(cell):
            lines.append(f"# {cell['task']} {cell['label']}: chosen lr {format_lr(cell['lr'])} is the {edge} of its "
                         "grid: extend the grid first (--next-lrs)")  # fmt: skip
            continue
        start = int(runs["evaluation_seeds_from"].max())
        missing = [s for s in range(start, start + n_seeds + len(have)) if s not in have][: n_seeds - len(have)]
        command, note = _cell_command(runs_all, cell, float(cell["lr"]), missing, root)
        lines += [f"# {cell['task']} {cell['label']}: {len(have)} of {n_seeds} evaluation seeds at its chosen lr "
                  f"{format_lr(cell['lr'])}", command + note]  # fmt: skip
    return lines


def plot_budget_vs_score(df: pd.DataFrame, path: str | Path | None, task: str | None = None) -> Figure:
    """Paper Figure 1: score ×100 against % of parameters (log axis), one marker and colour per method.

    A point per cell is the median over seeds with the sample std as error bar (when > 1 seed); the points
    of one method at several budgets are joined. One subplot per task. Saves a PNG at `path` (if given).
    """
    summary = summarize(df if task is None else df[df["task"] == task])
    summary = summary[(summary["n"] > 0) & (summary["share_pct"] > 0)]
    tasks = sorted(summary["task"].unique()) or [task or "no completed runs"]
    ncols = min(len(tasks), 3)
    nrows = math.ceil(len(tasks) / ncols)
    fig = Figure(figsize=(5.5 * ncols, 4.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    several_models = summary["model"].nunique() > 1
    series = ["method", "model", "setting"]
    series_names = sorted(set(summary[series].itertuples(index=False, name=None)))
    markers = "osD^v<>phX*P"
    style = {s: (markers[i % len(markers)], f"C{i % 10}") for i, s in enumerate(series_names)}
    for ax, t in zip(axes, tasks, strict=False):
        cells = summary[summary["task"] == t]
        for (method, model, setting), points in cells.groupby(series):
            points = points.sort_values("share_pct")
            marker, colour = style[(method, model, setting)]
            name = f"{method} ({model})" if several_models else method
            name += f" · {setting}" if setting else ""
            ax.errorbar(
                points["share_pct"], points["median"], yerr=points["std"].where(points["n"] > 1),
                fmt=marker + ("-" if len(points) > 1 else ""), color=colour, capsize=3, label=name, ms=7,
            )  # fmt: skip
            for x, y in zip(points["share_pct"], points["median"], strict=True):
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8, color=colour)
        metric = cells["metric"].dropna().iloc[0] if cells["metric"].notna().any() else "score"
        ax.set_xscale("log")
        if len(cells):  # ticks at the budgets present, labelled like the table; room for the point labels
            shares = sorted(cells["share_pct"].unique())
            ax.set_xticks(shares, labels=[format_share(x) for x in shares])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(shares[0] / 1.5, shares[-1] * 2.0)
        ax.set_xlabel("fine-tuned parameters (% of the base model, paper count)")
        ax.set_ylabel(f"{metric} ×100 (median over seeds)")
        ax.set_title(t)
        ax.grid(True, which="both", alpha=0.3)
        if len(cells):
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


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


def counts_line(df: pd.DataFrame, problems: list[Problem]) -> str:
    """``N completed, N failed, N duplicates dropped, N problems``."""
    completed = int((df["status"] == "completed").sum())
    failed = int((df["status"] == "failed").sum())
    dropped = int(df["n_dropped"].sum()) if len(df) else 0
    return f"{completed} completed, {failed} failed, {dropped} duplicates dropped, {len(problems)} problems"


def precision_line(df: pd.DataFrame) -> str:
    """Which precision the runs computed in: ``Precision: every run fp32.``, or the count of each and the rule that
    runs of different precision are never pooled or compared (each precision is its own setting)."""
    known = df["precision"].dropna() if "precision" in df else pd.Series(dtype=object)
    counts = known.value_counts().sort_index()
    unknown = len(df) - len(known)
    tail = f" ({unknown} run(s) of unknown precision)" if unknown else ""
    if len(counts) == 1:
        return f"Precision: every run of known precision {counts.index[0]}{tail}." if unknown else \
            f"Precision: every run {counts.index[0]}."
    if len(counts) == 0:
        return "Precision: unknown for every run."
    shown = ", ".join(f"{name} {n}" for name, n in counts.items())
    return (f"Precision: runs of several precisions ({shown}){tail}; each precision is its own setting (its cells "
            "carry mixed_precision=...), and runs of different precision are never pooled or compared.")
