"""One self-describing record per run (``result.json``): what was run, what it scored, and on what.

Records are the truth the report, the notebooks and W&B read from. A run that fails writes a record with
``status: failed`` and the error, never one that looks finished. ``run_key`` hashes the resolved config without
the keys that do not change the result (paths, logging, resume), so a rerun of a sweep can skip what is done.

The precision a run computes in is part of its key, as *resolved* (``train.mixed_precision: auto`` becomes ``bf16``
on a CPU or GPU that computes bf16 natively and ``no`` (fp32) elsewhere): the same command gives different numbers
on the two kinds of CPU of this project, so a bf16 record never counts as done for an fp32 request, nor the other
way. `record_key` recomputes the key of a record from its config and its resolved ``mixed_precision``, so records
written before the precision entered the key are read the same way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from peftbench.run.data import absolute_path
from peftbench.space.spec import MODULE_ADDED_DEFAULTS

#: Keys that do not change what a run computes (and so are not part of its key).
NOT_IN_KEY = ("logger", "results_root", "resume", "sweep", "data.glue_dir", "data.cache_dir", "train.progress",
              "train.log_every", "train.threads", "train.checkpoint", "train.keep_checkpoint", "save",
              "train.inference_batches", "evaluation_seeds_from")
#: Keys added to the config after records were written, with their default: left out of the key at that default,
#: so that a record written before the key existed still matches the run it was (resume does not redo it).
ADDED_KEYS = {"train.lr_scale": 1.0, "method.head": "linear", "model.gguf_file": None, "task.head_bias": "zero",
              "method.lr_ratio": 1.0}
#: Keys read only by the verbalizer head: out of the key of a run with the linear head.
VERBALIZER_KEYS = ("template", "label_words")


def reads_verbalizer_keys(method: object) -> bool:
    """Whether a run of this method config reads `VERBALIZER_KEYS` (its head is the verbalizer; default linear)."""
    return isinstance(method, dict) and method.get("head", "linear") == "verbalizer"
PACKAGES = ("peftbench", "torch", "transformers", "datasets", "evaluate", "accelerate", "hydra-core", "numpy")


def at_added_default(dotted: str, value: Any) -> bool:
    """Whether `value` of the config key `dotted` is an added key's default (`ADDED_KEYS`): the same run as a record
    written before the key existed, so it is left out of the run key and of the report's setting."""
    return dotted in ADDED_KEYS and value == ADDED_KEYS[dotted]


def run_key(config: dict[str, Any], precision: str | None = None) -> str:
    """The hash of what a run computes: the resolved `config` without `NOT_IN_KEY` (and `ADDED_KEYS` at their
    defaults), with ``train.mixed_precision`` replaced by the resolved `precision` (``no`` / ``bf16`` / ``fp16``)
    when given, so that ``auto`` resolved to fp32 and an explicit ``no`` are one run."""
    plain = json.loads(json.dumps(config, default=str))
    if precision is not None and isinstance(plain.get("train"), dict):
        plain["train"]["mixed_precision"] = precision
    _lr_as_run(plain)
    for dotted in (*NOT_IN_KEY, *ADDED_KEYS):
        *parents, last = dotted.split(".")
        node = plain
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and (dotted in NOT_IN_KEY or at_added_default(dotted, node.get(last))):
            node.pop(last, None)
    method, task = plain.get("method") or {}, plain.get("task") or {}
    for module in (method.get("modules") or {}).values():
        if isinstance(module, dict) and module.get("init_words") == []:  # added with init=words
            module.pop("init_words")
        for key, default in MODULE_ADDED_DEFAULTS.items():  # added with IA3, DoRA, VeRA, rsLoRA (issue 29)
            if isinstance(module, dict) and key in module and module[key] == default:
                module.pop(key)
    if not reads_verbalizer_keys(method) and isinstance(task, dict):
        for key in VERBALIZER_KEYS:
            task.pop(key, None)
    return hashlib.sha1(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def _lr_as_run(plain: dict[str, Any]) -> None:
    """Put the peak lr a run trains at (``train.lr``, else ``method.lr``, × ``train.lr_scale``:
    `peftbench.run.train.effective_lr`) in ``train.lr``, in place, and drop its factors: a preset at 2e-3 and one at
    1e-3 with ``lr_scale=2`` compute the same run, so a grid composed after a preset's lr changed finds the runs
    recorded before it (rounded to 12 significant digits: 3e-4 × 4 and 1.2e-3 differ in the last bit)."""
    train, method = plain.get("train"), plain.get("method")
    if not (isinstance(train, dict) and isinstance(method, dict)):
        return
    base, scale = as_float(train.get("lr")), as_float(train.get("lr_scale", 1.0))
    base = base if base is not None else as_float(method.get("lr"))
    if base is None or scale is None:
        return
    train["lr"] = float(f"{base * scale:.12g}")
    train.pop("lr_scale", None)
    method.pop("lr", None)


#: the first evaluation seed of a record written before the protocol was recorded (`RunConfig.evaluation_seeds_from`)
EVALUATION_SEEDS_FROM = 100
TUNING, EVALUATION = "tuning", "evaluation"


def evaluation_seeds_from(record: dict[str, Any]) -> int:
    """The first evaluation seed of a record's protocol: its config's ``evaluation_seeds_from``
    (`EVALUATION_SEEDS_FROM` where the record has none)."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    start = config.get("evaluation_seeds_from", EVALUATION_SEEDS_FROM)
    return start if isinstance(start, int) and not isinstance(start, bool) else EVALUATION_SEEDS_FROM


def seed_role(record: dict[str, Any]) -> str:
    """Whether a run's seed is a *tuning* seed (its held-out score may choose the lr) or an *evaluation* seed
    (its dev score is reported and it never enters a choice): evaluation from `evaluation_seeds_from` on."""
    start = evaluation_seeds_from(record)
    seed = record.get("seed")
    return EVALUATION if isinstance(seed, int) and not isinstance(seed, bool) and seed >= start else TUNING


def record_precision(record: dict[str, Any]) -> str | None:
    """The precision a record's run computed in, as resolved (``no`` = fp32, ``bf16``, ``fp16``): the record's
    ``mixed_precision``; for a run that failed before it resolved one, the requested ``train.mixed_precision``
    unless that is ``auto`` (None: unknown)."""
    resolved = record.get("mixed_precision")
    if isinstance(resolved, str):
        return resolved
    train = (record.get("config") or {}).get("train") if isinstance(record.get("config"), dict) else None
    requested = train.get("mixed_precision") if isinstance(train, dict) else None
    return requested if isinstance(requested, str) and requested != "auto" else None


def record_key(record: dict[str, Any]) -> str | None:
    """The precision-aware run key of a record (`run_key` of its config at `record_precision`), recomputed so that
    records written before the precision entered the key compare like new ones; the stored ``run_key`` where the
    record has no config or no known precision."""
    config, precision = record.get("config"), record_precision(record)
    if isinstance(config, dict) and precision is not None:
        return run_key(config, precision)
    stored = record.get("run_key")
    return stored if isinstance(stored, str) else None


def as_float(value: object) -> float | None:
    """A record's number as a float (NaN kept); None for a missing, boolean or non-numeric value."""
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def selection_score(record: dict) -> float | None:
    """The held-out selection score (``select[metric]``, 0–1) of the epoch a run kept: the last history entry
    marked ``best: true`` (training marks each improvement), else the max over epochs; None without any."""
    metric = record.get("metric")
    history = [
        h for h in record.get("history") or [] if isinstance(h, dict) and isinstance(h.get("select"), dict)
    ]
    values = [(bool(h.get("best")), as_float(h["select"].get(metric))) for h in history]
    kept = [v for best, v in values if best and v is not None]
    if kept:
        return kept[-1]
    scores = [v for _, v in values if v is not None]
    return max(scores) if scores else None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def base_record(config: dict[str, Any], design: dict[str, Any] | None, precision: str | None = None) -> dict[str, Any]:
    """The fields every record has, whatever happens to the run; `precision` is the resolved
    ``train.mixed_precision`` (it enters the run key)."""
    return {
        "status": "running",
        "error": None,
        "method": config["method"]["name"],
        "task": config["task"]["name"],
        "model": config["model"]["name"],
        "seed": config["seed"],
        "run_key": run_key(config, precision),
        "mixed_precision": precision,
        "sweep": config.get("sweep"),
        "design": design,
        "params": None,
        "metric": None,
        "metrics": {},
        "score": None,
        "history": [],
        "time_s": None,
        "peak_mem_mb": None,
        "throughput": {},
        "versions": versions(),
        "git_commit": git_commit(),
        "config": config,
        "started_at": dt.datetime.now().isoformat(timespec="seconds"),
        "finished_at": None,
    }


def write_record(record: dict[str, Any], run_dir: str | Path) -> Path:
    record["finished_at"] = dt.datetime.now().isoformat(timespec="seconds")
    path = Path(run_dir) / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name of this writer's own (two processes may write into one folder), in the same folder so
    # the rename is atomic: a reader never sees half a record.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def completed_score(record: object) -> float | None:
    """The score of a completed run: its record says ``status: completed`` and holds a finite number as `score`;
    None otherwise. The one rule for "done": resume skips only such a run (`find_completed`), and the report takes
    a completed record without one as a problem, named by its path (`peftbench.report`), so that both agree that
    its run must be redone."""
    if not isinstance(record, dict) or record.get("status") != "completed":
        return None
    score = record.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return None
    return float(score)


_WARNED: set[Path] = set()


def _warn_unreadable(path: Path, err: Exception | str) -> None:
    """One warning per unusable record and process: resume passes over it (its run counts as not done)."""
    if path not in _WARNED:
        _WARNED.add(path)
        reason = err if isinstance(err, str) else err.strerror if isinstance(err, OSError) else f"not JSON ({err})"
        print(f"peftbench: warning: resume passes over {path}: {reason}; its run, if any, is redone",
              file=sys.stderr)


def find_completed(roots: str | Path | list[str | Path], key: str) -> Path | None:
    """A completed record with this run key (`record_key`: the precision it ran at included) under any of `roots`
    (``results_root``, and the sweep folder where a sweep wrote elsewhere): resume skips its run. Unreadable
    records, and completed ones without a finite score (`completed_score`), are passed over with a warning."""
    roots = [roots] if isinstance(roots, (str, Path)) else roots
    searched: list[Path] = []
    for root in (absolute_path(r) for r in roots):
        if not root.is_dir() or any(root == s or s in root.parents for s in searched):
            continue  # missing, or inside a folder already searched
        searched.append(root)
        for path in root.rglob("result.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                _warn_unreadable(path, err)
                continue
            if not isinstance(record, dict) or record.get("status") != "completed" or record_key(record) != key:
                continue
            if completed_score(record) is not None:
                return path
            _warn_unreadable(path, f"completed, but its score {record.get('score')!r} is not a finite number")
    return None
