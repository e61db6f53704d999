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
import os
import sys

import hydra
from omegaconf import DictConfig

from peftbench.run.job import FAILED_LOG_ENV, failures, run_job, selection_score
from peftbench.run.sweep import normalise_argv
from peftbench.run.validate import validate_command_line
from peftbench.space.presets import CONF_DIR

#: Hydra's flags that print help and run nothing (--cfg prints a job's config: that one is validated)
HELP_FLAGS = ("-h", "--help", "--hydra-help", "--info", "-i")
#: Hydra's flags that print the config instead of running it, with the value each takes (--cfg job)
PRINT_FLAGS = {"--cfg": 1, "-c": 1, "--package": 1, "-p": 1, "--resolve": 0}


def without_print_flags(argv: list[str]) -> list[str]:
    """The command line as a run would be validated: ``--cfg job``, ``--package P`` and ``--resolve`` left out."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in PRINT_FLAGS:
            skip = PRINT_FLAGS[arg]
        else:
            out.append(arg)
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    """Hydra's task function. Its return value is what a sweeper (e.g. optuna) optimises: the held-out score."""
    record = run_job(cfg)
    return selection_score(record)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = normalise_argv(sys.argv[1:])
    sys.argv[1:] = argv  # what Hydra parses
    if not any(a in HELP_FLAGS or a.startswith("--info") for a in argv):
        validate_command_line(without_print_flags(argv))  # --cfg prints what a run would get: validated alike
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
