"""Records in: every ``result.json`` under some folders, as one row per run, and the records that cannot be used.

`load_records` finds the records recursively and flattens each into a row (`RUN_COLUMNS`); a record that cannot be
used (unreadable, not JSON, a required key missing, a field of the wrong type, a completed run without a finite
score: `peftbench.run.record.completed_score`, the rule resume follows) becomes a `Problem` named by its path,
never an exception. Records sharing a run key (`peftbench.run.record.record_key`, precision included) are one run:
the latest completed one is kept. A run's *design* (`design_key`) and *setting* (`setting_items`: data size,
epochs, ..., and the precision it computed in) say which runs are seeds of one cell (`peftbench.analysis.cells`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from peftbench.run.record import (
    NOT_IN_KEY,
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
    "setting", "precision", "cpu_isa", "lr", "select_score", "best_epoch", *(f"params.{k}" for k in PARAM_KEYS),
    "time_s", "peak_mem_mb", "train_examples_per_s", "train_time_s", "artefact_bytes", "inference_ratio",
    "inference_ratio_merged", "lr_scale", "eval_samples", "overrides", "finished_at", "n_dropped", "path",
]  # fmt: skip
#: config sections whose keys can make runs of one design differ (data size, epochs, batch size, ...)
SETTING_SECTIONS = ("data", "train", "task")
#: keys that never define a setting: the lr (chosen per cell), the task's name, what does not change the result
NOT_SETTING = frozenset({*NOT_IN_KEY, "train.lr", "train.lr_scale", "task.name"})
#: The verbalizer's task keys: part of a verbalizer run's design (`record_design`), never of the setting.
VERBALIZER_SETTING = frozenset(f"task.{k}" for k in VERBALIZER_KEYS)
PRECISION_KEY = "train.mixed_precision"
#: a resolved ``mixed_precision`` as the report names it
PRECISION_NAMES = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}
#: the JSON type each field a reader relies on must have, where it is not null
FIELD_TYPES = {
    "method": str, "task": str, "model": str, "run_key": str, "seed": int, "params": dict, "metrics": dict,
    "throughput": dict, "artefact": dict, "inference": dict, "config": dict, "history": list, "overrides": list,
}  # fmt: skip
JSON_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list"}


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
        "cpu_isa": record.get("cpu_isa"),  # the CPU kind (fp32 is bitwise only within one); None before 2026-12-07
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
