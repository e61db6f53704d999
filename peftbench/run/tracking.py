"""Weights & Biases logging that never breaks a run: offline by default, disabled in tests, and any failure to
start (no API key, no network) turns into a warning and no logging.

A W&B run mirrors a run folder and its record:

- its name is the folder's (``<job>_<method>_<task>_s<seed>``), its ``job_type`` the method, and its group the cell
  it is a seed of (`cell_group`: experiment / method / task / lr / a hash of everything else the run computes,
  i.e. design and setting), so that a group holds exactly the seeds of one cell at one lr;
- its config is the resolved config with the lr the run used (``lr``: ``train.lr`` is null when the preset's applies);
- its summary is every scalar of the record (`record_scalars`: score and metrics, parameters, time, peak memory,
  throughput and padding, inference ratio, artefact bytes, precision, best epoch, lr);
- its artifact (type ``run-record``) holds ``result.json`` and, when the run saved one, ``modules.safetensors``.

Its folder goes to ``<logger.dir>/wandb/`` (default: the folder the command runs in), so that a plain
``wandb sync`` from there finds every run. `peftbench.analysis.wandb_report` logs finished records the same way
(`log_record_run`) without retraining.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

from peftbench.run.record import record_precision, run_key, selection_score

#: record fields that are not scalars of the run (or are in the config already)
NOT_SUMMARY = ("config", "history", "predictions", "versions", "design", "gate_lambda", "overrides", "traceback")
#: how the record's sections are named in the summary (the metrics as before: ``dev/<metric>``)
SECTION_NAMES = {"metrics": "dev"}
PRECISION_NAMES = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}
RECORD_ARTIFACT = "run-record"
#: W&B's limit on a group's length
GROUP_MAX = 128


def lr_used(record: dict[str, Any]) -> float | None:
    """The peak lr the run used: the record's ``lr``, or before training ends ``train.lr`` (else the preset's
    ``method.lr``) × ``train.lr_scale``, as `peftbench.run.train.effective_lr` computes it."""
    lr = record.get("lr")
    if isinstance(lr, int | float) and not isinstance(lr, bool):
        return float(lr)
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    train, method = config.get("train") or {}, config.get("method") or {}
    base = train.get("lr") or method.get("lr")
    return float(base) * float(train.get("lr_scale") or 1.0) if base else None


def cell_group(record: dict[str, Any]) -> str:
    """The W&B group of a run: ``<experiment>/<method>/<task>/lr=<lr>/<cell hash>``, the hash being that of the run
    key without the seed (design, setting, model and precision: everything else the run computes)."""
    config = dict(record.get("config") or {})
    config.pop("seed", None)
    cell = hashlib.sha1(run_key(config, record_precision(record)).encode()).hexdigest()[:8]
    lr = lr_used(record)
    group = f"{record.get('sweep') or 'runs'}/{record['method']}/{record['task']}/lr={lr:g}/{cell}" if lr else \
        f"{record.get('sweep') or 'runs'}/{record['method']}/{record['task']}/{cell}"
    return group if len(group) <= GROUP_MAX else f"{group[: GROUP_MAX - 10]}…/{cell}"


def _scalars(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _scalars(f"{prefix}/{key}" if prefix else str(key), item, out)
    elif isinstance(value, bool | int | float | str) or value is None:
        out[prefix] = value


def record_scalars(record: dict[str, Any]) -> dict[str, Any]:
    """Every scalar of the record, nested sections joined with ``/`` (``throughput/padding_ratio``,
    ``inference/ratio``, ``artefact/bytes``, ``params/paper_share``; the metrics as ``dev/<metric>``), plus the
    ``precision`` it computed in (fp32 / bf16 / fp16), the ``lr`` it used and its held-out ``select_score``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key not in NOT_SUMMARY:
            _scalars(SECTION_NAMES.get(key, key), value, out)
    out["precision"] = PRECISION_NAMES.get(record_precision(record) or "", record_precision(record))
    out["lr"] = lr_used(record)
    if record.get("status") == "completed":
        out["select_score"] = selection_score(record)
    return out


def run_name(record: dict[str, Any], run_dir: str | Path) -> str:
    """The run folder's name (``<job>_<method>_<task>_s<seed>``), else ``<method>_<task>_s<seed>``."""
    name = Path(run_dir).name
    return name or f"{record['method']}_{record['task']}_s{record['seed']}"


def init_run(record: dict[str, Any], run_dir: str | Path, *, project: str = "peftbench", entity: str | None = None,
             mode: str = "offline", group: str | None = None, root: str | Path = ".", quiet: bool = False) -> Any:
    """A W&B run for this record: named like its folder, grouped per cell, its folder in ``<root>/wandb/``
    (``quiet``: without W&B's own lines, for uploads of many records)."""
    import wandb

    Path(root).mkdir(parents=True, exist_ok=True)
    config = {**(record.get("config") or {}), "lr": lr_used(record), "design": record.get("design"),
              "run_key": record.get("run_key"), "precision": record_scalars(record)["precision"]}
    return wandb.init(project=project, entity=entity, mode=mode, dir=str(root), name=run_name(record, run_dir),
                      group=group or cell_group(record), job_type=record["method"], config=config,
                      reinit="finish_previous", tags=[record["method"], record["task"], record["model"]],
                      settings=wandb.Settings(silent=True) if quiet else None)


def log_record(run: Any, record: dict[str, Any], run_dir: str | Path) -> None:
    """The record's scalars as the run's summary, and ``result.json`` (with ``modules.safetensors`` when saved) as
    its artifact; then the run finishes (exit code 1 unless completed)."""
    import wandb

    summary = record_scalars(record)
    run.summary.update(summary)
    files = [p for p in (Path(run_dir) / "result.json", Path(run_dir) / "modules.safetensors") if p.is_file()]
    if files:
        name = f"{record['method']}_{record['task']}_s{record['seed']}-{str(record.get('run_key'))[:8]}"
        keep = ("status", "score", "metric", "precision", "lr", "params/paper_share", "artefact/bytes")
        artifact = wandb.Artifact(name, type=RECORD_ARTIFACT, metadata={k: summary.get(k) for k in keep})
        for path in files:
            artifact.add_file(str(path))
        run.log_artifact(artifact)
    run.finish(exit_code=0 if record.get("status") == "completed" else 1)


class WandbTracker:
    """The W&B run of a run in progress: training logs its curves (`log`), the job its record (`finish`)."""

    def __init__(self, run: Any, run_dir: str | Path) -> None:
        self.run, self.run_dir = run, run_dir

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        self.run.log(values, step=step)

    def finish(self, record: dict[str, Any]) -> None:
        try:
            log_record(self.run, record, self.run_dir)
        except Exception as err:  # the record is written already: W&B must not fail the run now
            warnings.warn(f"W&B: could not log the record: {type(err).__name__}: {err}", stacklevel=2)


def start_tracker(logger_cfg: Any, record: dict[str, Any], run_dir: str) -> WandbTracker | None:
    """The W&B run of this run (`init_run`), or None: logging off, W&B disabled, or it cannot start (a warning)."""
    if not logger_cfg.wandb or os.environ.get("WANDB_MODE") == "disabled" or logger_cfg.mode == "disabled":
        return None
    try:
        run = init_run(record, run_dir, project=logger_cfg.project, entity=logger_cfg.entity, mode=logger_cfg.mode,
                       group=logger_cfg.group, root=logger_cfg.dir)
        return WandbTracker(run, run_dir)
    except Exception as err:  # a missing key or no network must never break the run
        warnings.warn(f"W&B logging disabled: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                      stacklevel=2)
        return None
