"""One job of a sweep, as Hydra's task function runs it: resume, claim, checkpoint, train, record.

`run_job` never raises for a failed run: a completed record elsewhere under ``results_root`` skips the job
(`peftbench.run.record.find_completed`), a live claim of another worker skips it (`peftbench.run.claims`), and
otherwise the run is set up (`peftbench.run.setup`) and trains (`peftbench.run.train`) with its checkpoint
(`peftbench.run.checkpoint`) and writes its record, ``failed`` or ``interrupted`` included. Each failed run is
noted in a log shared by every process of the command (`note_failure`, `failures`), so that the command exits 1
whatever launcher ran it.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from peftbench.run.config import as_plain, one_line_error, to_specs

FAILED: list[str] = []
#: a file where every process of the sweep (launcher workers, SLURM or local submitit jobs) notes its failed runs,
#: so that the command exits 1 whatever launcher ran them
FAILED_LOG_ENV = "PEFTBENCH_FAILED_LOG"


def world_size() -> int:
    """The processes of one data-parallel run (``accelerate launch --num_processes N``); 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of a data-parallel run writes the record, the artefact and the checkpoints; the others only train."""
    return int(os.environ.get("RANK", "0")) == 0


def note_failure(what: str) -> None:
    FAILED.append(what)
    path = os.environ.get(FAILED_LOG_ENV)
    if path:
        with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as f:
            f.write(what + "\n")


def failures() -> list[str]:
    """The failed runs of this command: from the shared log where there is one, else this process's."""
    path = os.environ.get(FAILED_LOG_ENV)
    if path and Path(path).is_file():
        with contextlib.suppress(OSError):
            return list(dict.fromkeys(Path(path).read_text(encoding="utf-8").splitlines()))
    return FAILED


def _resume_roots(cfg: DictConfig) -> list[str]:
    """Where resume looks for completed records: ``results_root``, and a sweep's own folder when
    ``hydra.sweep.dir`` points elsewhere."""
    roots = [str(cfg.results_root)]
    hydra_cfg = HydraConfig.get()
    if str(getattr(hydra_cfg, "mode", "")) == "RunMode.MULTIRUN":
        roots.append(str(hydra_cfg.sweep.dir))
    return roots


def _claim(cfg: DictConfig, record: dict, run_dir: str):
    """Take this run's claim (`peftbench.run.claims`): the claim, or None to go ahead unclaimed (claims unsupported
    here), or the live holder's info (another worker runs this configuration: skip it)."""
    from peftbench.run import claims

    try:
        return claims.acquire(cfg.results_root, record["run_key"], {
            "method": record["method"], "task": record["task"], "seed": record["seed"], "run_dir": run_dir})
    except OSError as err:
        print(f"peftbench: warning: cannot claim the run in {cfg.results_root} ({err.strerror}); running it "
              "unclaimed: a concurrent worker could run it too", file=sys.stderr)
        return None


def run_job(cfg: DictConfig) -> dict:
    """One run: resume check, claim, setup, training, record. Never raises for a failed run; returns its record.
    SIGTERM from the start of the job on asks it to stop: an interrupted record and exit 143 (`_job`)."""
    from peftbench.run.checkpoint import STOP

    restore_handler = STOP.install()
    try:
        record = _job(cfg)
    finally:
        restore_handler()
    if STOP and record.get("status") != "interrupted":
        # SIGTERM came while the run set up or evaluated (the training loop polls it): the run is recorded, and
        # the sweep stops as it would have mid-training, instead of the next job clearing the request.
        print("peftbench: SIGTERM received outside training: this run finished; stopping the sweep", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)
    return record


def _checkpoint(cfg: DictConfig, key: str) -> Path | None:
    """Where this run keeps its checkpoint (`peftbench.run.checkpoint`), or None: ``train.checkpoint=false``, or a
    ``results_root`` where none can be kept after all (validation checked it; a warning)."""
    if not cfg.train.checkpoint:
        return None
    from peftbench.run.checkpoint import checkpoint_path

    path = checkpoint_path(cfg.results_root, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:
            path.unlink(missing_ok=True)  # resume=false: start over (else training resumes from it, if it reads)
    except OSError as err:
        print(f"peftbench: warning: no checkpoint for this run: cannot use {path.parent} ({err.strerror})",
              file=sys.stderr)
        return None
    return path


def _job(cfg: DictConfig) -> dict:
    from peftbench.run.claims import Claim
    from peftbench.run.record import base_record, find_completed
    from peftbench.run.summary import note_skipped

    run_dir = HydraConfig.get().runtime.output_dir
    specs = to_specs(cfg)  # first: it names a model given by path in cfg (`name_model_from_path`)
    config = as_plain(cfg)
    from peftbench.run.precision import resolve_mixed_precision

    # the precision this machine will compute in (auto: bf16 where native, else fp32) is part of the run key
    record = base_record(config, specs.method.coordinates(),
                         resolve_mixed_precision(cfg.train.mixed_precision, cfg.train.cpu))
    # the job's own overrides (command line and the experiment's sweep), so that a report can print the command
    # that extends this run's cell (`python -m peftbench.report --next-lrs`); not in the run key
    record["overrides"] = list(HydraConfig.get().overrides.task)
    what = f"{record['method']}/{record['task']}/seed {record['seed']}"
    claim = None
    if cfg.resume:
        roots = _resume_roots(cfg)
        done = find_completed(roots, record["run_key"])
        if done is None and world_size() == 1:  # processes of one data-parallel run decide alike, unclaimed
            claim = _claim(cfg, record, run_dir)
            if isinstance(claim, dict):
                print(f"peftbench: skipping {what}: in flight in another worker "
                      f"(pid {claim.get('pid')} on {claim.get('host')}, {claim.get('run_dir')})")
                return {"status": "in flight", "holder": claim}
            done = find_completed(roots, record["run_key"])  # it may have completed while we took the claim
        if done is not None:
            if isinstance(claim, Claim):
                claim.release()
            print(f"peftbench: skipping {what}: completed record {done}")
            note_skipped(run_dir, done)
            return {"status": "skipped", "path": str(done)}
        if isinstance(claim, Claim) and claim.taken_over:
            print(f"peftbench: {what}: rerunning an abandoned run (pid {claim.taken_over.get('pid')} on "
                  f"{claim.taken_over.get('host')} died in {claim.taken_over.get('run_dir')})")
    checkpoint = _checkpoint(cfg, record["run_key"])
    try:
        record = _train_and_record(specs, record, run_dir, checkpoint)
    finally:
        if isinstance(claim, Claim):
            claim.release()
    if checkpoint is not None and record["status"] != "interrupted" and not cfg.train.keep_checkpoint \
            and is_main_process():
        with contextlib.suppress(OSError):  # completed, or failed (a failed run is redone from the start)
            checkpoint.unlink(missing_ok=True)
    if record["status"] == "interrupted":
        raise SystemExit(128 + signal.SIGTERM)  # the process was asked to stop: the sweep stops too
    return record


def _train_and_record(specs, record: dict, run_dir: str, checkpoint: Path | None = None) -> dict:
    """Setup, training, evaluation and the record of a run that goes ahead; a failure becomes a failed record,
    SIGTERM during training an interrupted one (its checkpoint saved)."""
    from peftbench.run.artefacts import save_artefact
    from peftbench.run.checkpoint import RunInterrupted
    from peftbench.run.record import write_record
    from peftbench.run.setup import prepare
    from peftbench.run.tracking import start_tracker
    from peftbench.run.train import train_and_evaluate

    start = time.perf_counter()
    tracker = None
    try:
        prep = prepare(specs)
        record["params"] = prep.report.as_dict()
        main = is_main_process()
        if main:
            print(f"peftbench: {what_of(record)}: {budget_line(prep.report)}")
        tracker = start_tracker(specs.logger, record, run_dir) if main else None
        record.update(train_and_evaluate(specs, prep, tracker, checkpoint))
        if main:
            record["artefact"] = save_artefact(prep.model, specs, run_dir)
        record["status"] = "completed"
    except RunInterrupted as err:
        record["status"], record["error"] = "interrupted", str(err)
    except Exception as err:
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {one_line_error(err)}"
        record["traceback"] = traceback.format_exc(limit=8)
    record["time_s"] = time.perf_counter() - start
    if not is_main_process():  # another rank of a data-parallel run: rank 0 writes the one record
        if record["status"] == "failed":
            print(f"peftbench: error: rank {os.environ.get('RANK')}: run failed: {record['error']}", file=sys.stderr)
        return record
    path = None
    try:
        path = write_record(record, run_dir)
    except Exception as err:  # disk full, permissions: without its record the run is lost, so it failed
        lost = f"cannot write its record in {run_dir}: {type(err).__name__}: {one_line_error(err)}"
        record["error"] = f"{record['error']}; {lost}" if record["status"] == "failed" else lost
        record["status"] = "failed"
    if tracker is not None:
        tracker.finish(record)
    if record["status"] == "interrupted":
        print(f"peftbench: {record['error']} (record: {path})", file=sys.stderr)
    elif record["status"] == "completed":
        print(f"peftbench: {record['method']}/{record['task']} seed {record['seed']}: "
              f"{record['metric']}={record['score']:.4f} ({record['params']['paper_share']:.3%} params) → {path}")
    else:
        note_failure(f"{record['method']}/{record['task']}/seed {record['seed']}")
        where = f"record: {path}" if path else "no record written"
        print(f"peftbench: error: run failed: {record['error']} ({where})", file=sys.stderr)
    return record


def what_of(record: dict) -> str:
    return f"{record['method']}/{record['task']}/seed {record['seed']}"


def budget_line(report) -> str:
    """peft's familiar line (``print_trainable_parameters``), then the paper's count and share."""
    total = report.base + report.head + sum(b["trainable"] for b in report.breakdown.values())
    return (f"trainable params: {report.trainable:,d} || all params: {total:,d} || trainable%: "
            f"{100 * report.trainable / total:.4f} || paper count: {report.paper:,d} = {report.paper_share:.3%} of "
            f"the base model (stored: {report.stored:,d})")


def selection_score(record: dict) -> float:
    """What a sweeper may optimise: the held-out selection score of the epoch the run kept (never the dev score);
    for a run skipped on resume, its completed record's; NaN for a run without one (failed, or
    data.select_on=last), which optuna counts as a failed trial."""
    from peftbench.run.record import selection_score as held_out

    if record.get("status") == "skipped" and record.get("path"):
        import json

        record = json.loads(Path(record["path"]).read_text())
    score = held_out(record) if record.get("status") == "completed" else None
    return math.nan if score is None else score
