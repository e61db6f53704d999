"""A command line's jobs: what ``python -m peftbench [-m] overrides`` asks Hydra to run, as one override list per job.

`normalise_argv` puts ``-m`` where Hydra reads it and turns ``+method.modules.<new slot>.*`` into a new module slot;
`planned_jobs` expands every sweep value (the grid of an experiment's ``hydra.sweeper.params`` included, command-line
keys winning as in Hydra) with Hydra's own override parser. The report counts an experiment's planned runs with it.
"""

from __future__ import annotations

import itertools

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType

from peftbench.run.config import add_new_slots, compose
from peftbench.space.presets import CONF_DIR

MULTIRUN_FLAGS = ("-m", "--multirun")


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


def sweep_choices(argv: list[str]) -> dict[str, list[str]]:
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

    choices = _in_conf(sweep_choices, normalise_argv(list(argv)))
    return [list(job) for job in itertools.product(*choices.values())]


def _in_conf(fn, *args):
    """`fn(*args)` with Hydra initialised on conf/ (as it is already inside a Hydra app or test)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return fn(*args)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return fn(*args)


#: keys whose sweep values set one leaf of the composed config: `planned_keys` composes a grid once per combination
#: of the other keys and sets these on a copy (equal to composing every job: tests/test_experiments.py)
LEAF_KEYS = ("seed", "train.lr_scale")


def planned_keys(argv: list[str]) -> list[str]:
    """The run key of every job `planned_jobs` lists, as a run computes it (its composed config at the precision
    this machine resolves): what resume matches a completed record against, so that a report counts the jobs of a
    grid that are done (`peftbench.analysis.findings`) rather than its records, which lr extensions and evaluation
    seeds outnumber."""
    from omegaconf import OmegaConf

    from peftbench.run.config import as_plain
    from peftbench.run.precision import resolve_mixed_precision
    from peftbench.run.record import run_key

    def keys() -> list[str]:
        composed: dict[tuple[str, ...], object] = {}
        out = []
        for job in planned_jobs(argv):
            leaves = [o for o in job if o.split("=", 1)[0] in LEAF_KEYS]
            rest = tuple(o for o in job if o not in leaves)
            if rest not in composed:
                composed[rest] = compose(list(rest))
            cfg = composed[rest].copy()
            for override in OverridesParser.create().parse_overrides(leaves):
                OmegaConf.update(cfg, override.get_key_element(), override.value())
            precision = resolve_mixed_precision(cfg.train.mixed_precision, cfg.train.cpu)
            out.append(run_key(as_plain(cfg), precision))
        return out

    return _in_conf(keys)
