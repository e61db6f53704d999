"""``python -m peftbench [overrides]``: one benchmark run; ``-m`` sweeps any override list.

    python -m peftbench method=lora task=sst2 data.max_train_samples=2000
    python -m peftbench -m method=lora,mam task=sst2,rte seed=0,1,2

Every job writes ``result.json`` in its run directory. Before Hydra starts, every combination of the sweep is
composed and validated, so a typo or an impossible combination fails at once with one line (exit 2) instead of
an hour into a sweep. A run that fails (missing data, NaN loss, ...) writes a ``failed`` record and the sweep
goes on; the process then exits 1.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from peftbench.config import CONF_DIR, as_plain, compose, fail, one_line_error, to_specs

FAILED: list[str] = []
MAX_CHECKED_COMBINATIONS = 256


def _choices(overrides: list[str]) -> dict[str, list[str]]:
    """Each override's key → the single-job overrides its value expands to (Hydra's own parser)."""
    out: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override():
            out[key.lstrip("+~")] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            out[key.lstrip("+~")] = [override.input_line]
    return out


def _sweep_combinations(argv: list[str]) -> list[list[str]]:
    """The override lists of every job a command line asks for, the grid of an experiment's
    ``hydra.sweeper.params`` included (command-line keys win, as in Hydra)."""
    args = [a for a in argv if not a.startswith("-") and not a.startswith("hydra.") and not a.startswith("hydra/")]
    choices = _choices(args)
    if "-m" in argv or "--multirun" in argv:
        first = compose([c[0] for c in choices.values()], return_hydra_config=True)
        params = first.hydra.sweeper.params or {}
        choices.update(_choices([f"{k}={v}" for k, v in params.items() if k.lstrip("+~") not in choices]))
    combos = itertools.product(*choices.values())
    return [list(c) for c in itertools.islice(combos, MAX_CHECKED_COMBINATIONS)]


def validate_command_line(argv: list[str]) -> None:
    """Compose and validate each job of the command line; exit 2 with one line on the first bad one.

    Jobs that differ only by seed compose alike, so one seed is checked.
    """
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            combinations = _sweep_combinations(argv)
        except Exception as err:
            fail(f"invalid command line: {one_line_error(err)}")
        checked: set[tuple[str, ...]] = set()
        for overrides in combinations:
            key = tuple(o for o in overrides if not o.startswith("seed="))
            if key in checked:
                continue
            checked.add(key)
            try:
                to_specs(compose(overrides))
            except Exception as err:
                fail(f"{' '.join(overrides) or '(defaults)'}: {one_line_error(err)}")


def run_job(cfg: DictConfig) -> dict:
    """One run: resume check, setup, training, record. Never raises for a failed run; returns its record."""
    from peftbench.record import base_record, find_completed, write_record
    from peftbench.tracking import start_tracker
    from peftbench.train import prepare, train_and_evaluate

    run_dir = HydraConfig.get().runtime.output_dir
    config = as_plain(cfg)
    specs = to_specs(cfg)
    record = base_record(config, specs.method.coordinates())
    if cfg.resume:
        done = find_completed(cfg.results_root, record["run_key"])
        if done is not None:
            print(f"peftbench: skipping {record['method']}/{record['task']}/seed {record['seed']}: "
                  f"completed record {done}")
            return {"status": "skipped", "path": str(done)}
    start = time.perf_counter()
    tracker = None
    try:
        prep = prepare(specs)
        record["params"] = prep.report.as_dict()
        tracker = start_tracker(specs.logger, record, run_dir)
        record.update(train_and_evaluate(specs, prep, tracker))
        record["status"] = "completed"
    except Exception as err:
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {one_line_error(err)}"
        record["traceback"] = traceback.format_exc(limit=8)
    record["time_s"] = time.perf_counter() - start
    path = write_record(record, run_dir)
    if tracker is not None:
        tracker.finish(record)
    if record["status"] == "completed":
        print(f"peftbench: {record['method']}/{record['task']} seed {record['seed']}: "
              f"{record['metric']}={record['score']:.4f} ({record['params']['paper_share']:.3%} params) → {path}")
    else:
        FAILED.append(f"{record['method']}/{record['task']}/seed {record['seed']}")
        print(f"peftbench: error: run failed: {record['error']} (record: {path})", file=sys.stderr)
    return record


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    record = run_job(cfg)
    return record.get("score")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:]
    if not any(a in ("-h", "--help", "--hydra-help", "--info", "--cfg", "-c") or a.startswith("--info")
               for a in argv):
        validate_command_line(argv)
    _hydra_main()
    if FAILED:
        print(f"peftbench: error: {len(FAILED)} run(s) failed: {', '.join(FAILED)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
