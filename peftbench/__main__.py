"""``python -m peftbench [overrides]``: one benchmark run; ``-m`` sweeps any override list.

    python -m peftbench method=lora task=sst2 data.max_train_samples=2000
    python -m peftbench -m method=lora,mam task=sst2,rte seed=0,1,2

Every job writes ``result.json`` in its run directory. Before Hydra starts, every combination of the sweep is
composed and validated and the folders it writes to are checked, so a typo or an impossible combination fails at once
with one line (exit 2) instead of an hour into a sweep. A run that fails (missing data, NaN loss, a record
that cannot be written, ...) writes a ``failed`` record where it can, and the sweep goes on; the process then
exits 1.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from omegaconf import DictConfig, OmegaConf, open_dict

from peftbench.run.config import CONF_DIR, add_new_slots, as_plain, compose, fail, one_line_error, to_specs

FAILED: list[str] = []
MULTIRUN_FLAGS = ("-m", "--multirun")
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


def _choices(overrides: list[str]) -> dict[str, list[str]]:
    """Each override's key → the single-job overrides its value expands to (Hydra's own parser)."""
    out: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.value_type == ValueType.INTERVAL_SWEEP:  # a sweeper samples it (optuna): check both ends
            interval = override.value()
            out[key.lstrip("+~")] = [f"{key}={v}" for v in (interval.start, interval.end)]
        elif override.is_sweep_override():
            out[key.lstrip("+~")] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            out[key.lstrip("+~")] = [override.input_line]
    return out


def normalise_argv(argv: list[str]) -> list[str]:
    """What the user means: ``-m`` anywhere (Hydra takes it only before the overrides) moves to the front, and
    ``+method.modules.<new slot>.<field>=v`` adds a module slot (:func:`peftbench.run.config.add_new_slots`)."""
    flags = [a for a in argv if a in MULTIRUN_FLAGS][:1]
    return flags + add_new_slots([a for a in argv if a not in MULTIRUN_FLAGS])


def _sweep_choices(argv: list[str]) -> dict[str, list[str]]:
    """Each key of the jobs a command line asks for → its single-job overrides, the grid of an experiment's
    ``hydra.sweeper.params`` included (command-line keys win, as in Hydra)."""
    args = [a for a in argv if not a.startswith("-") and not a.startswith("hydra.") and not a.startswith("hydra/")]
    choices = _choices(args)
    if any(a in MULTIRUN_FLAGS for a in argv):
        first = compose([c[0] for c in choices.values()], return_hydra_config=True)
        params = first.hydra.sweeper.params or {}
        choices.update(_choices([f"{k}={v}" for k, v in params.items() if k.lstrip("+~") not in choices]))
    return choices


def planned_jobs(argv: list[str]) -> list[list[str]]:
    """The overrides of every job a command line asks for (``["-m", "+experiment=table2_cpu"]``: the experiment's
    whole grid, command-line keys winning as in Hydra), one list per job."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    argv = normalise_argv(list(argv))
    if GlobalHydra.instance().is_initialized():
        choices = _sweep_choices(argv)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            choices = _sweep_choices(argv)
    return [list(job) for job in itertools.product(*choices.values())]


def _plain_seed(override: str) -> bool:
    """``seed=<int in range>``: a job with it composes exactly like the same job with another such seed."""
    match = re.fullmatch(r"\+{0,2}seed=(\d+)", override)
    return match is not None and int(match[1]) < 2**32


def _exists(path: Path) -> bool:
    """Whether `path` exists. Unlike ``Path.exists()``, which answers False for any error, only "no such file" is
    False: a symlink loop, a name too long or a folder that cannot be searched raise their OSError."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def folder_problem(key: str, folder: str, usage: str, write: bool) -> str | None:
    """Why the folder the override `key` gives cannot hold (``write``) or be searched (read) for what `usage`
    says; None when it can. A folder that does not exist yet can be created where its nearest existing parent is
    a writable directory and each new folder name fits the file system."""
    path = Path(folder).expanduser().absolute()
    key = f"{key}={folder!r}"
    need, what = (os.R_OK | os.W_OK | os.X_OK, "read and write") if write else (os.R_OK | os.X_OK, "read")
    limit = _name_max(Path(path.anchor))
    long = [part for part in path.parts if len(os.fsencode(part)) > limit]
    if long:  # e.g. a 300-character method.name in the job's folder
        return (f"{key} cannot be created: its folder name {long[0][:32]}... is {len(os.fsencode(long[0]))} bytes "
                f"long, over the file system's limit of {limit} ({usage}); shorten the values it is made of")
    try:
        if _exists(path):
            if not path.is_dir():
                return f"{key} is not a directory ({usage}); give a directory or a path to create"
            if not os.access(path, need):
                return f"{key}: no permission to {what} {path} ({usage}); give a directory you can {what}"
            return None
        if not write:
            return None  # nothing to read from yet
        parent = path.parent
        while not _exists(parent):
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            return f"{key} cannot be created: {parent} is not a writable directory ({usage})"
    except OSError as err:  # a symlink loop, a name too long, a parent folder that cannot be searched
        return f"{key} cannot be checked: {err.strerror} ({usage}); give a directory you can {what}"
    return None


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def results_root_problem(root: str, write: bool, usage: str | None = None) -> str | None:
    """Why ``results_root`` cannot hold (``write``) or be searched for (resume) records; None when it can."""
    usage = usage or ("records are written and resumed from there" if write else "resume searches it for records")
    return folder_problem("results_root", root, usage, write)


def results_root_use(cfg: DictConfig, multirun: bool) -> str | None:
    """What a job writes under ``results_root``, or None when it does not use it. A sweep writes its records there;
    a single run its claim (when it resumes, which also searches it for records) and its checkpoint."""
    if multirun:
        return "records are written and resumed from there"
    kept = [what for what, used in (("claim", cfg.resume), ("checkpoint", cfg.train.checkpoint)) if used]
    if not kept:
        return None
    resume = "resume searches it for records and " if cfg.resume else ""
    return f"{resume}a single run keeps its {' and '.join(kept)} there"


#: overrides of where Hydra writes (checked with the job's folders); other ``hydra.*`` keys are Hydra's to check
_HYDRA_DIRS = re.compile(r"\+{0,2}hydra\.(run|sweep)\.")


def job_folders(cfg: DictConfig, multirun: bool) -> tuple[tuple[str, str], ...]:
    """The folders Hydra creates for a job (`cfg` composed with its hydra config), as (override key, resolved
    path): the run's folder, or the sweep's folder and the job's folder in it."""
    with open_dict(cfg):
        if OmegaConf.is_missing(cfg.hydra.job, "num"):
            cfg.hydra.job.num = 0
    if not multirun:
        return (("hydra.run.dir", str(cfg.hydra.run.dir)),)
    sweep = str(cfg.hydra.sweep.dir)
    return (("hydra.sweep.dir", sweep), ("hydra.sweep.subdir", str(Path(sweep) / str(cfg.hydra.sweep.subdir))))


def _quoted(override: str) -> str:
    """``key='value'``, or for a list each element of other than ASCII characters quoted: ``key=[bad,'schön']``."""
    key, _, value = override.partition("=")
    if value.startswith("[") and value.endswith("]"):
        items = [i.strip() for i in value[1:-1].split(",")]
        return f"{key}=[{','.join(i if i.isascii() else repr(i) for i in items)}]"
    return f"{key}={value!r}"


def parse_problem(args: list[str], multirun: bool) -> str | None:
    """A command line Hydra's parser refuses (with the hint that a value of non-ASCII characters needs quotes:
    Hydra's lexer takes only ASCII unquoted), or several values (a sweep) without ``-m``; None when it parses."""
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception as err:
        odd = [a for a in args if not a.isascii()]
        hint = (f"; Hydra reads only ASCII characters unquoted: quote the value, e.g. \"{_quoted(odd[0])}\" (the "
                "double quotes for the shell)" if odd else "")
        return f"invalid command line: {one_line_error(err)}{hint}"
    if not multirun:
        for override in overrides:
            if override.is_sweep_override():
                key = override.get_key_element()
                return (f"{override.input_line} gives several values, which only a sweep runs: add -m for one job "
                        f"per value; for one list value write {key}=[...], for a string with commas quote it: "
                        f"{key}='...'")
    return None


def validate_command_line(argv: list[str]) -> None:
    """Compose and validate each job of the command line, and check the folders it writes to (``results_root``
    where the job uses it, and Hydra's run or sweep folders); exit 2 with one line on the first problem.

    Jobs that differ only by seed compose alike, so every combination of the other keys is composed with the
    first seed, and the other seeds are only checked to be plain integers (anything else is composed too):
    the cost does not grow with the number of seeds.
    """
    from hydra import initialize_config_dir

    multirun = any(a in MULTIRUN_FLAGS for a in argv)
    problem = parse_problem([a for a in argv if not a.startswith("-")], multirun)
    if problem:
        fail(problem)
    hydra_dirs = [a for a in argv if _HYDRA_DIRS.match(a)]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            choices = _sweep_choices(argv)
        except Exception as err:
            fail(f"invalid command line: {one_line_error(err)}")
        seeds = choices.pop("seed", [])
        combinations = (list(c) + seeds[:1] for c in itertools.product(*choices.values()))
        odd_seeds = [s for s in seeds[1:] if not _plain_seed(s)]
        first = [c[0] for c in choices.values()]
        jobs = itertools.chain(combinations, ([*first, s] for s in odd_seeds))
        roots: set[tuple[str, str]] = set()
        folders: set[tuple[str, str]] = set()
        for overrides in jobs:
            try:
                cfg = compose([*overrides, *hydra_dirs], return_hydra_config=True)
                folders.update(job_folders(cfg, multirun))
                with open_dict(cfg):
                    del cfg["hydra"]  # the job's config, as the task function gets it
                to_specs(cfg)
            except Exception as err:
                fail(f"{' '.join(overrides) or '(defaults)'}: {one_line_error(err)}")
            use = results_root_use(cfg, multirun)
            if use is not None:
                roots.add((str(cfg.results_root), use))
    for root, usage in sorted(roots):
        problem = results_root_problem(root, True, usage)
        if problem:
            fail(problem)
    for key, folder in sorted(folders):
        problem = folder_problem(key, folder, "Hydra writes the job's config and log there", write=True)
        if problem:
            fail(problem)


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

    run_dir = HydraConfig.get().runtime.output_dir
    config = as_plain(cfg)
    specs = to_specs(cfg)
    from peftbench.run.train import resolve_mixed_precision

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
    from peftbench.run.tracking import start_tracker
    from peftbench.run.train import prepare, train_and_evaluate

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


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    """Hydra's task function. Its return value is what a sweeper (e.g. optuna) optimises: the held-out score."""
    record = run_job(cfg)
    return selection_score(record)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = normalise_argv(sys.argv[1:])
    sys.argv[1:] = argv  # what Hydra parses
    if not any(a in ("-h", "--help", "--hydra-help", "--info", "--cfg", "-c") or a.startswith("--info")
               for a in argv):
        validate_command_line(argv)
    import tempfile

    handle, log = tempfile.mkstemp(prefix="peftbench-failed-", suffix=".txt")
    os.close(handle)
    previous = os.environ.get(FAILED_LOG_ENV)
    os.environ[FAILED_LOG_ENV] = log  # inherited by launcher workers and local submitit jobs
    try:
        _hydra_main()
        failed = failures()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(log)
        if previous is None:
            os.environ.pop(FAILED_LOG_ENV, None)
        else:
            os.environ[FAILED_LOG_ENV] = previous
    if failed:
        print(f"peftbench: error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
