"""Weights & Biases logging that never breaks a run: offline by default, disabled in tests, and any failure to
start (no API key, no network) turns into a warning and no logging."""

from __future__ import annotations

import os
import warnings
from typing import Any


class WandbTracker:
    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        self.run.log(values, step=step)

    def finish(self, record: dict[str, Any]) -> None:
        summary = {"status": record["status"], "score": record["score"], "metric": record["metric"],
                   **{f"dev/{k}": v for k, v in (record.get("metrics") or {}).items()},
                   **{f"params/{k}": v for k, v in (record.get("params") or {}).items() if not isinstance(v, (dict, list))}}
        self.run.summary.update(summary)
        self.run.finish(exit_code=0 if record["status"] == "completed" else 1)


def start_tracker(logger_cfg: Any, record: dict[str, Any], run_dir: str) -> WandbTracker | None:
    """A W&B run grouped per sweep × method × task (so a group is one table cell across seeds), or None."""
    if not logger_cfg.wandb or os.environ.get("WANDB_MODE") == "disabled" or logger_cfg.mode == "disabled":
        return None
    try:
        import wandb

        group = logger_cfg.group or f"{record['sweep'] or 'runs'}/{record['method']}/{record['task']}"
        run = wandb.init(project=logger_cfg.project, entity=logger_cfg.entity, mode=logger_cfg.mode, group=group,
                         job_type=record["method"], dir=run_dir, config=record["config"], reinit="finish_previous",
                         tags=[record["method"], record["task"], record["model"]])
        run.config.update({"design": record["design"], "params": record["params"], "run_key": record["run_key"]},
                          allow_val_change=True)
        return WandbTracker(run)
    except Exception as err:  # a missing key or no network must never break the run
        warnings.warn(f"W&B logging disabled: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                      stacklevel=2)
        return None
