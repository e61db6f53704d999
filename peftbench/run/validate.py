"""Fail at the command line, not an hour into a sweep: every job of a command is composed and validated, and
every folder it writes to is checked, before Hydra starts; the first problem exits 2 with one line.

Jobs that differ only by seed compose alike, so the cost does not grow with the number of seeds
(`validate_command_line`); a value Hydra's parser refuses, or several values without ``-m``, are named with the fix
(`parse_problem`); a folder that is a file, read-only, a symlink loop or a name over the file system's limit is
named with its key (`folder_problem`).
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from peftbench.run.config import compose, fail, one_line_error, to_specs
from peftbench.run.sweep import MULTIRUN_FLAGS, _choices, sweep_choices
from peftbench.space.presets import CONF_DIR


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


def explained(err: BaseException, overrides: list[str]) -> str:
    """`one_line_error`, or where Hydra met a null node ("NoneType"), `null_parent` of the job's `overrides` (which
    composes again: only on that path, so a failing sweep is still composed once per combination)."""
    message = one_line_error(err)
    return (null_parent(overrides) or message) if "NoneType" in message else message


def null_parent(overrides: list[str]) -> str | None:
    """Where an override sets a field under a node the rest of the command line leaves null (``method.prompt.length``
    for a method without a prompt), that node named with the presets that have one; Hydra says only "Unexpected
    type for root: NoneType"."""
    for i, override in enumerate(overrides):
        parts = override.split("=", 1)[0].lstrip("+~").split(".")
        if len(parts) < 2 or "=" not in override:
            continue
        try:
            node = compose([o for j, o in enumerate(overrides) if j != i])
        except Exception:
            continue
        for depth in range(1, len(parts)):
            node = node.get(parts[depth - 1]) if isinstance(node, DictConfig) else None
            if node is None:
                parent, field = ".".join(parts[:depth]), parts[depth]
                having = presets_with(parts[1:depth]) if parts[0] == "method" else []
                chosen = next((o for o in overrides if o.split("=", 1)[0] == "method"), "the default method")
                return (f"{parent} is null with {chosen}, so {parent}.{field} cannot be set"
                        + (f"; presets with a {parent}: {', '.join(having)}" if having else ""))
    return None


def first_job(argv: list[str]) -> list[str]:
    """The overrides of a command line's first job (the first value of each list), [] where they do not parse."""
    try:
        return [c[0] for c in _choices([a for a in argv if not a.startswith(("-", "hydra.", "hydra/"))]).values()]
    except Exception:
        return []


def presets_with(path: list[str]) -> list[str]:
    """The method presets (``conf/method/*.yaml``) in which `path` is set (not null)."""
    having = []
    for preset in sorted((CONF_DIR / "method").glob("*.yaml")):
        node = OmegaConf.load(preset)
        for part in path:
            node = node.get(part) if isinstance(node, DictConfig) else None
        if node is not None:
            having.append(preset.stem)
    return having


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
            choices = sweep_choices(argv)
        except Exception as err:
            fail(f"invalid command line: {explained(err, first_job(argv))}")
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
                fail(f"{' '.join(overrides) or '(defaults)'}: {explained(err, overrides)}")
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
