"""What to run next, as commands: a cell whose chosen lr is the end of its grid gets the command that extends
the grid one ×2 step past that edge (`next_lr_commands`, ``--next-lrs``); a cell short of evaluation seeds gets the
command that runs the missing ones at its chosen lr (`next_evaluation_commands`, ``--next-evals N``). Each command is
rebuilt from the overrides its runs recorded.
"""

from __future__ import annotations

import functools
import json
import math
import shlex
from pathlib import Path

import pandas as pd

from peftbench.analysis.cells import CELL, MIN_GRID, format_lr, grid_edge

#: the overrides a next-lr command sets itself: the seeds its cell ran, the lr scale that reaches the next lr, and
#: (when a DIR is given) where the records go
NEXT_LR_SETS = ("seed", "train.lr_scale", "results_root")


@functools.cache
def _arms(sweep: str) -> tuple[tuple[str, dict], ...]:
    """The arms an experiment's sweep visits, as (override, composed ``method`` and ``train``): for ``<grid>_cpu`` or
    ``<grid>_paper``, every ``conf/experiment/arm/<grid>/*.yaml`` composed under ``+experiment=<sweep>``."""
    from omegaconf import OmegaConf

    from peftbench.run.config import CONF_DIR, compose

    grid = sweep.removesuffix("_cpu").removesuffix("_paper")
    arms = []
    for path in sorted((CONF_DIR / "experiment" / "arm" / grid).glob("*.yaml")):
        override = f"experiment/arm/{grid}={path.stem}"
        cfg = OmegaConf.to_container(compose([f"+experiment={sweep}", override]), resolve=True)
        arms.append((override, {"method": cfg["method"], "train": cfg["train"]}))
    return tuple(arms)


def _within(recorded: object, composed: object) -> bool:
    """Whether every value `recorded` holds (``lr`` aside: a preset's lr may have moved since) is `composed`'s; a
    field the record lacks (added later) is not compared."""
    if isinstance(recorded, dict):
        return isinstance(composed, dict) and all(
            k == "lr" or (k in composed and _within(v, composed[k])) for k, v in recorded.items())
    return recorded == composed or (isinstance(recorded, list) and isinstance(composed, tuple | list)
                                    and list(recorded) == list(composed))


def _arm_override(runs: pd.DataFrame) -> tuple[str, float] | None:
    """For records that predate ``overrides``: the one arm of their sweep whose composed method is theirs, and that
    arm's lr before scaling; None when no arm or several arms match (or the record cannot be read)."""
    sweep = runs["sweep"].dropna()
    if not len(sweep):
        return None
    try:
        method = json.loads(Path(runs["path"].iloc[0]).read_text(encoding="utf-8"))["config"]["method"]
        matches = [(o, a) for o, a in _arms(str(sweep.iloc[0])) if _within(method, a["method"])]
    except Exception:  # noqa: BLE001 - an unreadable record or an experiment that no longer composes: no arm
        return None
    if len(matches) != 1:
        return None
    override, arm = matches[0]
    return override, float(arm["train"].get("lr") or arm["method"]["lr"])


def _composed_base(overrides: list[str]) -> float | None:
    """The lr before scaling (``train.lr`` or the preset's) that `overrides` compose to today, None if they fail."""
    from peftbench.run.config import compose

    try:
        cfg = compose(overrides)
        return float(cfg.train.get("lr") or cfg.method.lr)
    except Exception:  # noqa: BLE001 - a record from another checkout's config: fall back to the records' base
        return None


def _cell_command(
    runs_all: pd.DataFrame, cell: pd.Series, target_lr: float, seeds: list[int], root: str | Path | None
) -> tuple[str, str]:
    """The command that runs `cell` at `target_lr` for `seeds` (its recorded overrides with ``seed``,
    ``train.lr_scale`` and, given `root`, ``results_root`` replaced), and a note where the records predate
    ``overrides`` and no arm of their sweep matches their method.

    ``train.lr_scale`` is the target ÷ the lr the command composes to today before scaling (a preset's lr may have
    moved since the records ran); where the command does not compose, ÷ the records' own base."""
    runs = runs_all[(runs_all[CELL] == cell[CELL].to_numpy()).all(axis=1)].sort_values(["seed", "path"])
    base = (pd.to_numeric(runs["lr"]) / pd.to_numeric(runs["lr_scale"])).median()
    place = {"results_root": shlex.quote(str(root))} if root is not None else {}
    recorded = runs["overrides"].dropna()
    note = ""
    if len(recorded):
        kept = [o for o in shlex.split(recorded.iloc[0])
                if o.split("=", 1)[0].lstrip("+~") not in NEXT_LR_SETS]
        base = _composed_base(kept) or base
    elif arm := _arm_override(runs):
        kept = [f"+experiment={runs['sweep'].dropna().iloc[0]}", f"task={cell['task']}", arm[0]]
        base = arm[1]
    else:
        sweep = runs["sweep"].dropna()
        kept = [f"+experiment={sweep.iloc[0]}", f"task={cell['task']}"] if len(sweep) else [
            f"method={cell['method']}", f"task={cell['task']}", f"model={cell['model']}"]
        note = f"  # and the override that selects {cell['method']} (these records predate `overrides`)"
    sets = {"seed": ",".join(str(s) for s in seeds), "train.lr_scale": f"{target_lr / base:g}", **place}
    command = " ".join(["python -m peftbench -m", *map(shlex.quote, kept), *(f"{k}={v}" for k, v in sets.items())])
    return command, note


def next_lr_commands(df: pd.DataFrame, cells: pd.DataFrame, root: str | Path | None = None) -> list[str]:
    """For each cell whose chosen lr is an edge of its grid (`grid_edge`): a comment naming the cell and a command
    that runs it one ×2 step past that edge, at the seeds it ran.

    The command is the recorded ``overrides`` of one of its runs with ``seed``, ``train.lr_scale`` (the lr ÷ the
    run's lr before scaling, so that the preset's lr stays the base) and, given `root`, ``results_root`` replaced.
    Records written before ``overrides`` was recorded give ``+experiment=<sweep> task=<task>`` and a note: what
    selects the method must be added by hand. Empty when no choice is at an edge."""
    if df.empty or cells.empty:
        return []
    runs_all = df[df["status"] == "completed"].assign(setting=df["setting"].fillna(""))
    lines = []
    for _, cell in cells.iterrows():
        edge = grid_edge(cell)
        if not edge:
            continue
        grid = sorted(lr for lr in cell["lr_grid"] if math.isfinite(lr))
        target = grid[0] / 2 if edge == "lowest" else grid[-1] * 2
        seeds = sorted({int(x) for x in runs_all.loc[(runs_all[CELL] == cell[CELL].to_numpy()).all(axis=1)
                                                      & (runs_all["role"] != "evaluation"), "seed"]})
        command, note = _cell_command(runs_all, cell, target, seeds, root)
        lines += [f"# {cell['task']} {cell['label']}: chosen lr {format_lr(cell['lr'])} is the {edge} of "
                  f"{', '.join(format_lr(lr) for lr in grid)}; next: {format_lr(target)}", command + note]
    return lines


def next_evaluation_commands(
    df: pd.DataFrame, cells: pd.DataFrame, n_seeds: int | dict[tuple[str, str], int], root: str | Path | None = None
) -> list[str]:
    """For each cell with fewer than `n_seeds` evaluation seeds at its chosen lr: a comment and the command that
    runs the missing ones (from the first evaluation seed of its records' protocol on) at that lr. A cell whose grid
    has fewer than `MIN_GRID` lrs (run the tuning grid first) or whose choice sits at a grid edge (extend it first,
    `next_lr_commands`) is skipped with a note. `n_seeds` may be a number per cell, keyed by (task, label): the
    cells it does not name are left alone (`peftbench.analysis.findings.evaluation_targets`)."""
    if df.empty or cells.empty:
        return []
    runs_all = df[df["status"] == "completed"].assign(setting=df["setting"].fillna(""))
    lines = []
    for _, cell in cells.iterrows():
        want = n_seeds.get((cell["task"], cell["label"]), 0) if isinstance(n_seeds, dict) else n_seeds
        if not math.isfinite(cell["lr"]) or cell["n"] == 0 or not want:
            continue
        runs = runs_all[(runs_all[CELL] == cell[CELL].to_numpy()).all(axis=1)]
        at_lr = runs[pd.to_numeric(runs["lr"]).sub(cell["lr"]).abs() <= 1e-9 * cell["lr"]]
        have = sorted({int(x) for x in at_lr.loc[at_lr["role"] == "evaluation", "seed"]})
        if len(have) >= want:
            continue
        grid = sorted(lr for lr in cell["lr_grid"] if math.isfinite(lr))
        if len(grid) < MIN_GRID:
            lines.append(f"# {cell['task']} {cell['label']}: {len(grid)} lr{'s' * (len(grid) != 1)} on the tuning seeds "
                         f"({', '.join(format_lr(lr) for lr in grid)}), the protocol chooses among at least "
                         f"{MIN_GRID}: run the tuning grid first")  # fmt: skip
            continue
        if edge := grid_edge(cell):
            lines.append(f"# {cell['task']} {cell['label']}: chosen lr {format_lr(cell['lr'])} is the {edge} of its "
                         "grid: extend the grid first (--next-lrs)")  # fmt: skip
            continue
        start = int(runs["evaluation_seeds_from"].max())
        missing = [s for s in range(start, start + want + len(have)) if s not in have][: want - len(have)]
        command, note = _cell_command(runs_all, cell, float(cell["lr"]), missing, root)
        lines += [f"# {cell['task']} {cell['label']}: {len(have)} of {want} evaluation seeds at its chosen lr "
                  f"{format_lr(cell['lr'])}", command + note]  # fmt: skip
    return lines
