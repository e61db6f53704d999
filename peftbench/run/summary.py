"""The table a sweep prints when it ends: one row per job of ``python -m peftbench -m ...``, read from the records
its jobs wrote (a Hydra callback, registered in ``conf/config.yaml`` as ``hydra.callbacks.sweep_summary``).

A job that resume skipped leaves ``skipped.json`` in its folder, naming the completed record it found
(`note_skipped`), so that its row shows that record's score; a job that wrote nothing (killed, or in flight in
another worker) is a row without a score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SKIPPED = "skipped.json"


def note_skipped(run_dir: str | Path, record_path: str | Path) -> None:
    """Leave in a skipped job's folder the path of the completed record resume found (the summary reads it)."""
    try:
        (Path(run_dir) / SKIPPED).write_text(json.dumps({"status": "skipped", "path": str(record_path)}))
    except OSError:
        pass  # the table then shows the job without its score: nothing else depends on it


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def job_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep (Hydra's numbered subfolders), in job order."""
    def number(folder: Path) -> tuple[int, str]:
        head = folder.name.split("_", 1)[0]
        return (int(head), folder.name) if head.isdigit() else (1 << 30, folder.name)

    rows = []
    folders = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra").is_dir()] \
        if Path(sweep_dir).is_dir() else []
    for folder in sorted(folders, key=number):
        record, status = _read(folder / "result.json"), None
        if record is None and (pointer := _read(folder / SKIPPED)) is not None:
            record, status = _read(Path(str(pointer.get("path")))), "skipped"
        record = record or {}
        score, metric = record.get("score"), record.get("metric") or "score"
        rows.append({
            "job": folder.name, "status": status or record.get("status") or "no record",
            "score": f"{metric} {100 * score:.1f}" if isinstance(score, int | float) else "-",
            "time": f"{record['time_s']:.0f} s" if status is None and isinstance(record.get("time_s"), int | float)
            else "-",
        })  # fmt: skip
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned columns: job folder, status, score ×100, time."""
    header = {"job": "job", "status": "status", "score": "score ×100", "time": "time"}
    widths = {k: max(len(str(r[k])) for r in [header, *rows]) for k in header}
    return "\n".join("  ".join(str(r[k]).ljust(widths[k]) for k in header).rstrip() for r in [header, *rows])


class SweepSummary(Callback):
    """Prints `format_table` of the sweep's jobs when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = job_rows(sweep_dir)
        if rows:
            print(f"\npeftbench: {len(rows)} job(s) in {sweep_dir} "
                  f"(`python -m peftbench.report {sweep_dir}` for tables and figures):")
            print(format_table(rows))
