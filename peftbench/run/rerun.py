"""How a committed record is rerun (for ``python -m peftbench.verify``).

Exactly its recorded resolved configuration (its ``config``), through the command every run goes through:
``python -m peftbench <overrides>`` in a subprocess (its own process, as a single run). The overrides are computed
from the record: the config groups named by the record (``method=<name>`` where ``conf/method/<name>.yaml`` exists,
likewise model, task and ``data=<source>``), then ``key=value`` for every leaf that differs from what those compose
to, ``+key=...`` / ``~key`` for slots added to or missing from an open mapping (``method.modules``,
``model.config``); keys the record lacks because they were added later keep their defaults (the run key leaves them
out at their default, `peftbench.run.record.ADDED_KEYS`). Forced: ``train.mixed_precision`` to the record's resolved
precision (``auto`` would follow this machine), ``train.cpu=true`` for a CPU record on a machine with a GPU, and the
keys of `peftbench.run.record.NOT_IN_KEY` that do not change what a run computes: records to a temporary folder,
``resume=false``, ``logger=none``, ``train.checkpoint=false``, ``train.inference_batches=0``, ``save=none``,
``train.progress=false``; ``data.glue_dir`` is ``$PEFTBENCH_GLUE_DIR`` where set, else the record's where it exists
(``--set data.glue_dir=... data.cache_dir=...`` sets such keys, and only such keys). Before anything runs, the
overrides are composed in-process: every recorded value must come back and the run key must equal the record's
(`peftbench.run.record.record_key`: its config at its resolved precision), so a rerun never tests another config;
the rerun's own record must carry that key too.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.run.record import NOT_IN_KEY, record_precision, run_key
from peftbench.space.presets import CONF_DIR

IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
RECORD = "result.json"
#: what every rerun sets, whatever the record says: none of these changes what a run computes (`NOT_IN_KEY`)
RERUN_SETTINGS = {"resume": False, "train.checkpoint": False, "train.keep_checkpoint": False,
                  "train.inference_batches": 0, "save": "none", "train.progress": False}
#: `NOT_IN_KEY` keys kept as the record has them (a name, the thread count, the logging period)
KEPT = ("sweep", "train.threads", "train.log_every", "evaluation_seeds_from")


class VerifyError(Exception):
    """Bad input: exit 2 with one line."""


# ----------------------------------------------------------------------------------------------- overrides


def literal(value: Any) -> str:
    """`value` in Hydra's override grammar (strings quoted, interpolations escaped)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, str):
        text = re.sub(r"(\\+)(?='|$)", lambda m: m[1] * 2, value)  # a backslash before a quote or at the end
        return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = [str(k) if IDENTIFIER.fullmatch(str(k)) else literal(str(k)) for k in value]
        return "{" + ",".join(f"{k}:{literal(v)}" for k, v in zip(keys, value.values(), strict=True)) + "}"
    raise VerifyError(f"cannot write {value!r} ({type(value).__name__}) as an override")


def _pop(config: dict[str, Any], dotted: str) -> Any:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return node.pop(last, None) if isinstance(node, dict) else None


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


@dataclass
class Plan:
    """How one record is rerun: the overrides of ``python -m peftbench`` (but ``results_root`` and the run folder,
    which `rerun` adds) and the run key they must give."""

    overrides: list[str]
    key: str
    precision: str
    forced: dict[str, Any] = field(default_factory=dict)


def _choices(config: dict[str, Any]) -> list[str]:
    """The config groups the record names, where this version has them (otherwise the defaults' are overridden)."""
    picks = [("method", (config.get("method") or {}).get("name")), ("model", (config.get("model") or {}).get("name")),
             ("task", (config.get("task") or {}).get("name")), ("data", (config.get("data") or {}).get("source"))]
    out = ["logger=none", "train=default"]
    for group, name in picks:
        if isinstance(name, str) and (CONF_DIR / group / f"{name}.yaml").is_file():
            out.append(f"{group}={name}")
    return out


def _diff(node: Any, target: dict[str, Any], prefix: str) -> Iterator[str]:
    """Overrides that turn the composed `node` (a DictConfig) into `target` (the record's plain config)."""
    from omegaconf import OmegaConf

    open_mapping = OmegaConf.get_type(node) is dict
    for key, value in target.items():
        path = f"{prefix}{key}"
        if key not in node:
            if not open_mapping:
                raise VerifyError(f"the record's key {path} no longer exists in the config: it cannot be rerun "
                                  "as recorded")
            yield f"+{path}={literal(value)}"
            continue
        child = node._get_node(key)
        current = None if OmegaConf.is_missing(node, key) else node[key]
        if isinstance(value, dict) and OmegaConf.is_dict(child) and current is not None:
            yield from _diff(current, value, f"{path}.")
            continue
        plain = OmegaConf.to_container(current, resolve=True) if OmegaConf.is_config(current) else current
        if plain != value or type(plain) is not type(value):
            yield f"{path}={literal(value)}"
    if open_mapping:
        yield from (f"~{prefix}{key}" for key in node if key not in target)


def plan(record: dict[str, Any], settings: dict[str, str] | None = None) -> Plan:
    """The overrides that rerun `record` as recorded (checked: composed here, they give the record's run key)."""
    import torch

    from peftbench.run.config import as_plain, compose, one_line_error

    precision = record_precision(record)
    if precision is None:
        raise VerifyError("the record's precision is unknown")
    target = copy.deepcopy(record["config"])
    target.pop("hydra", None)
    kept = {k: _pop(target, k) for k in KEPT}
    for dotted in NOT_IN_KEY:
        _pop(target, dotted)
    forced: dict[str, Any] = {"train.mixed_precision": precision}
    if not str(record.get("device") or "cpu").startswith("cuda") and torch.cuda.is_available():
        forced["train.cpu"] = True  # a CPU record: a GPU would compute other numbers
    for dotted, value in forced.items():
        _set(target, dotted, value)
    for dotted, value in kept.items():
        if value is not None:
            _set(target, dotted, value)
    glue_dir = (record["config"].get("data") or {}).get("glue_dir")
    fixed = [f"{k}={literal(v)}" for k, v in RERUN_SETTINGS.items()]  # results_root: where it runs (`rerun`)
    if not os.environ.get("PEFTBENCH_GLUE_DIR") and isinstance(glue_dir, str) and Path(glue_dir).is_dir():
        fixed.append(f"data.glue_dir={literal(glue_dir)}")
    fixed += [f"{k}={v}" for k, v in (settings or {}).items()]
    choices = _choices(record["config"])
    try:
        base = compose([*choices, *fixed])
        overrides = [*choices, *_diff(base, target, ""), *fixed]
        composed = as_plain(compose(overrides))
    except VerifyError:
        raise
    except Exception as err:
        raise VerifyError(f"its config does not compose as overrides: {one_line_error(err)}") from None
    expected = run_key({**record["config"], **_nested(forced, record["config"])}, precision)
    key = run_key(composed, precision)
    where = _first_difference(target, composed)
    if key != expected or where:
        raise VerifyError(f"its config cannot be rerun as recorded: the overrides compose another run "
                          f"({where or 'another run key'})")
    return Plan(overrides, key, precision, forced)


def _nested(forced: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The top-level entries of `config` with the `forced` dotted keys set (for the expected run key)."""
    out = copy.deepcopy({k.split(".")[0]: config.get(k.split(".")[0]) for k in forced})
    for dotted, value in forced.items():
        _set(out, dotted, value)
    return out


def _first_difference(target: Any, composed: Any, prefix: str = "") -> str | None:
    if isinstance(target, dict) and isinstance(composed, dict):
        for key in target:
            if key not in composed:
                return f"{prefix}{key} missing"
            found = _first_difference(target[key], composed[key], f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if target == composed else f"{prefix.rstrip('.')}: recorded {target!r}, composed {composed!r}"


# ----------------------------------------------------------------------------------------------- run


def rerun(plan_: Plan, folder: Path) -> dict[str, Any]:
    """Run the plan with ``python -m peftbench`` (its own process); the rerun's record (or a failed stand-in)."""
    run_dir = folder / "run"
    cmd = [sys.executable, "-m", "peftbench", *plan_.overrides, f"results_root={literal(str(folder / 'runs'))}",
           f"hydra.run.dir={literal(str(run_dir))}"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    with open(folder / "rerun.log", "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    path = run_dir / RECORD
    errors = [ln for ln in (folder / "rerun.log").read_text(errors="replace").splitlines() if "error" in ln.lower()]
    last = (errors[-1:] or ["no error line in its output"])[0].strip()[-300:]
    if path.is_file():
        record = json.loads(path.read_text())
        if done.returncode != 0:
            record["verify_exit"] = f"{done.returncode} ({last})"
        return record
    return {"status": "failed", "error": f"exit {done.returncode}, no record ({last})"}
