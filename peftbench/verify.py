"""``python -m peftbench.verify DIR [--sample N] [--seed S] [--records PATH ...]``: rerun committed records and
check that the code of today computes them again, bit for bit (``--dry-run`` prints the reruns' commands).

    python -m peftbench.verify results/table2_cpu --sample 3            # 3 records, spread over methods
    python -m peftbench.verify --records results/table2_cpu/2026-12-02/sst2/45_mam_sst2_s1

**Which records.** The completed records (``status: completed``, with a ``config`` and dev ``predictions``) under
DIR. ``--sample N`` picks N of them, deterministically for a ``--seed S``: the records (sorted by path) are shuffled
by ``random.Random(S)`` and taken in order of their rank within their method (the k-th record of a method before
the (k+1)-th of any), so N records cover min(N, #methods) methods. ``--records`` names records (files or run
folders) instead. A record this machine cannot compute as it was computed is refused, not rerun differently: a
bf16 record on a CPU without native bf16 (torch emulates bf16 there, ~30x slower than fp32, and rounds differently
from a native bf16 unit), a GPU record on a machine without a GPU. Named records are refused with an error (exit
2); a sample passes over them with one line saying how many.

**How a record is rerun.** Exactly its recorded resolved configuration (its ``config``), through the command every
run goes through: ``python -m peftbench <overrides>`` in a subprocess (its own process, as a single run). The
overrides are computed from the record: the config groups named by the record (``method=<name>`` where
``conf/method/<name>.yaml`` exists, likewise model, task and ``data=<source>``), then ``key=value`` for every leaf
that differs from what those compose to, ``+key=...`` / ``~key`` for slots added to or missing from an open mapping
(``method.modules``, ``model.config``); keys the record lacks because they were added later keep their defaults
(the run key leaves them out at their default, `peftbench.run.record.ADDED_KEYS`). Forced: ``train.mixed_precision``
to the record's resolved precision (``auto`` would follow this machine), ``train.cpu=true`` for a CPU record on a
machine with a GPU, and the keys of `peftbench.run.record.NOT_IN_KEY` that do not change what a run computes: records
to a temporary folder, ``resume=false``, ``logger=none``, ``train.checkpoint=false``, ``train.inference_batches=0``,
``save=none``, ``train.progress=false``; ``data.glue_dir`` is ``$PEFTBENCH_GLUE_DIR`` where set, else the
record's where it exists (``--set data.glue_dir=... data.cache_dir=...`` sets such keys, and only such keys).
Before anything runs, the overrides are composed in-process: every recorded value must come back and the run key
must equal the record's (`peftbench.run.record.record_key`: its config at its resolved precision), so a rerun never
tests another config; the rerun's own record must carry that key too.

**What is compared.** For every dev split, the rerun's per-example predictions against the committed
``predictions[split]["predictions"]``, element by element with ``==`` (class ids; regression scores as recorded,
7 significant digits); the dev metrics and ``score``; and the per-epoch ``history`` (train loss, lr, held-out
metrics, gate λ: the fields both records have), whose first differing epoch says whether training diverged at
once or late. A record is *identical* when all of these are equal. One line per record (path, method, seed,
committed score, rerun score, ``identical`` or ``N of M predictions differ``, the first differing epoch), then a
summary line.

Exit status: 0 when every rerun is identical, 1 when any differs or fails, 2 on bad input (DIR missing, no
completed record, a named record unreadable, refused or not expressible as overrides), with one
``peftbench.verify: error:`` line.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.run.config import CONF_DIR
from peftbench.run.record import NOT_IN_KEY, record_key, record_precision, run_key

PROG = "peftbench.verify"
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
RECORD = "result.json"
#: what every rerun sets, whatever the record says: none of these changes what a run computes (`NOT_IN_KEY`)
RERUN_SETTINGS = {"resume": False, "train.checkpoint": False, "train.keep_checkpoint": False,
                  "train.inference_batches": 0, "save": "none", "train.progress": False}
#: `NOT_IN_KEY` keys kept as the record has them (a name, the thread count, the logging period)
KEPT = ("sweep", "train.threads", "train.log_every", "evaluation_seeds_from")


class VerifyError(Exception):
    """Bad input: exit 2 with one line."""


def error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------- records


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except OSError as err:
        raise VerifyError(f"cannot read {path}: {err.strerror}") from None
    except ValueError as err:
        raise VerifyError(f"{path} is not JSON ({err})") from None
    if not isinstance(record, dict):
        raise VerifyError(f"{path} is not a record (a JSON object)")
    return record


def usable(record: dict[str, Any]) -> str | None:
    """Why a record cannot be verified at all (None when it can): not completed, no config or predictions."""
    if record.get("status") != "completed":
        return f"its status is {record.get('status')!r}, not completed"
    if not isinstance(record.get("config"), dict):
        return "it has no resolved config"
    predictions = record.get("predictions")
    if not isinstance(predictions, dict) or not predictions:
        return "it has no dev predictions"
    if record_precision(record) is None:
        return "its precision is unknown"
    return None


def refusal(record: dict[str, Any]) -> str | None:
    """Why this machine cannot compute the record as it was computed (None when it can)."""
    import torch

    device = str(record.get("device") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"it ran on a GPU ({device}) and this machine has none"
    if record_precision(record) == "bf16" and not device.startswith("cuda"):
        from peftbench.run.precision import cpu_supports_bf16

        if not cpu_supports_bf16():
            return ("it ran in bf16 and this CPU has no native bf16 (no AMX / AVX512-BF16: torch would emulate it, "
                    "~30x slower, with other rounding); verify it on a CPU with native bf16")
    return None


def completed_records(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The verifiable records under `root`, sorted by path; unreadable and unusable ones are passed over."""
    out = []
    for path in sorted(root.rglob(RECORD)):
        try:
            record = _read(path)
        except VerifyError:
            continue
        if usable(record) is None:
            out.append((path, record))
    return out


def sample(records: list[tuple[Path, dict[str, Any]]], n: int, seed: int) -> list[tuple[Path, dict[str, Any]]]:
    """`n` records spread over methods: shuffled with `seed`, then the k-th of each method before any (k+1)-th."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    rank: dict[str, int] = {}
    keyed = []
    for position, (path, record) in enumerate(shuffled):
        method = str(record.get("method"))
        keyed.append((rank.get(method, 0), position, path, record))
        rank[method] = rank.get(method, 0) + 1
    return [(path, record) for _, _, path, record in sorted(keyed, key=lambda k: k[:2])[:n]]


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


# ----------------------------------------------------------------------------------------------- compare


@dataclass
class Outcome:
    identical: bool
    rerun_score: float | None
    differing: int = 0
    total: int = 0
    first_epoch: int | None = None
    notes: list[str] = field(default_factory=list)


def compare(committed: dict[str, Any], rerun: dict[str, Any], key: str | None = None) -> Outcome:
    """The rerun against the committed record: predictions element by element, metrics, score and history;
    the rerun's run key must be `key` (the plan's; default the record's own)."""
    out = Outcome(identical=True, rerun_score=rerun.get("score"))
    if rerun.get("status") != "completed":
        return Outcome(False, None, notes=[f"rerun {rerun.get('status')}: {rerun.get('error')}"])
    if rerun.get("verify_exit"):
        out.notes.append(f"the rerun wrote its record but exited {rerun['verify_exit']}")
    if rerun.get("run_key") != (key or record_key(committed)):
        out.identical = False
        out.notes.append("the rerun's run key differs from the record's")
    for split, recorded in committed["predictions"].items():
        mine = (rerun.get("predictions") or {}).get(split)
        if not isinstance(mine, dict):
            out.identical = False
            out.notes.append(f"no {split} predictions in the rerun")
            continue
        theirs, ours = recorded.get("predictions") or [], mine.get("predictions") or []
        out.total += len(theirs)
        if len(theirs) != len(ours):
            out.differing += len(theirs)
            out.notes.append(f"{split}: {len(ours)} predictions, recorded {len(theirs)}")
        else:
            out.differing += sum(a != b for a, b in zip(theirs, ours, strict=True))
        if recorded.get("references") != mine.get("references"):
            out.notes.append(f"{split}: the references differ (other dev data)")
            out.identical = False
    if out.differing:
        out.identical = False
    if committed.get("score") != rerun.get("score") or committed.get("metrics") != rerun.get("metrics"):
        out.identical = False
    history, again = committed.get("history") or [], rerun.get("history") or []
    for i, (a, b) in enumerate(zip(history, again, strict=False)):
        if any(a[k] != b[k] for k in a.keys() & b.keys()):
            out.first_epoch = a.get("epoch", i + 1)
            break
    else:
        if len(history) != len(again):
            out.first_epoch = min(len(history), len(again)) + 1
    if out.first_epoch is not None:
        out.identical = False
    if not out.identical:
        before, now = committed.get("versions") or {}, rerun.get("versions") or {}
        changed = [f"{k} {before.get(k)} -> {now.get(k)}" for k in ("torch", "transformers", "accelerate")
                   if before.get(k) != now.get(k)]
        if changed:
            out.notes.append("versions differ: " + ", ".join(changed))
    return out


def line(path: Path, record: dict[str, Any], outcome: Outcome) -> str:
    def fmt(score: Any) -> str:
        return f"{score:.6f}" if isinstance(score, int | float) else "-"

    if outcome.identical:
        verdict = "identical"
    elif outcome.total:
        verdict = f"{outcome.differing} of {outcome.total} predictions differ"
    else:
        verdict = "differs"
    epoch = "" if outcome.first_epoch is None else f", first differing epoch {outcome.first_epoch}"
    notes = "".join(f"; {n}" for n in outcome.notes)
    return (f"{path}  {record.get('method')}  seed {record.get('seed')}  committed {fmt(record.get('score'))}  "
            f"rerun {fmt(outcome.rerun_score)}  {verdict}{epoch}{notes}")


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


def _resolve(path: Path) -> Path:
    return path / RECORD if path.is_dir() else path


def _settings(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in NOT_IN_KEY or key in RERUN_SETTINGS or key in ("logger", "results_root"):
            free = sorted(set(NOT_IN_KEY) - set(RERUN_SETTINGS) - {"logger", "results_root"})
            raise VerifyError(f"--set {pair!r}: only keys that do not change what a run computes can be set "
                              f"(KEY=VALUE with KEY one of {', '.join(free)})")
        out[key] = value
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise SystemExit(error(message))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 identical, 1 a difference or a failed rerun, 2 bad input)."""
    parser = _Parser(prog=f"python -m {PROG}", description="Rerun committed records from their recorded "
                     "config and compare predictions, metrics and history bit for bit.")
    parser.add_argument("dir", nargs="?", type=Path, help="a folder searched recursively for completed records")
    parser.add_argument("--sample", type=int, default=3, metavar="N", help="records to rerun (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="the sample's seed (default %(default)s)")
    parser.add_argument("--records", nargs="+", type=Path, default=[], metavar="PATH",
                        help="rerun these records (result.json files or run folders) instead of a sample")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="settings",
                        help="a key that does not change what a run computes (data.glue_dir, data.cache_dir, ...)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each chosen record and the command that reruns it, and run nothing")
    parser.add_argument("--keep", type=Path, default=None, metavar="OUT",
                        help="keep each rerun's folder (record, log) under OUT instead of a temporary folder")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0), or a bad argument (2, its line printed)
        return int(stop.code or 0)
    try:
        chosen, passed_over = _select(args)
        settings = _settings(args.settings)
        plans = []
        for path, record in chosen:  # every record checked before anything runs
            try:
                plans.append(plan(record, settings))
            except VerifyError as err:
                raise VerifyError(f"{path}: {err}") from None
    except VerifyError as err:
        return error(str(err))
    if passed_over:
        print(f"{PROG}: passing over {passed_over}")
    if args.dry_run:
        for (path, record), how in zip(chosen, plans, strict=True):
            print(f"{path}  {record.get('method')}  seed {record.get('seed')}: python -m peftbench "
                  + " ".join(shlex.quote(o) for o in how.overrides))
        return 0
    identical = 0
    for i, ((path, record), how) in enumerate(zip(chosen, plans, strict=True)):
        print(f"{PROG}: rerunning {i + 1}/{len(chosen)}: {path}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="peftbench-verify-") as tmp:
            folder = (Path(tmp) if args.keep is None else args.keep / f"{i}_{path.parent.name}").absolute()
            folder.mkdir(parents=True, exist_ok=True)
            run = rerun(how, folder)
        outcome = compare(record, run, how.key)
        identical += outcome.identical
        print(line(path, record, outcome), flush=True)
    differ = len(chosen) - identical
    where = ", ".join(str(p) for p in ([args.dir] if args.dir else [])) or "named records"
    print(f"{PROG}: {len(chosen)} record(s) rerun from {where}: {identical} identical, {differ} differ")
    return 0 if differ == 0 else 1


def _select(args: argparse.Namespace) -> tuple[list[tuple[Path, dict[str, Any]]], str | None]:
    """The records to rerun, and a note on the ones a sample passed over (refused here); VerifyError on bad input."""
    if args.records:
        chosen = []
        for given in args.records:
            path = _resolve(given)
            if not path.is_file():
                raise VerifyError(f"no record at {given}")
            record = _read(path)
            problem = usable(record) or refusal(record)
            if problem:
                raise VerifyError(f"{path} cannot be verified: {problem}")
            chosen.append((path, record))
        return chosen, None
    if args.dir is None:
        raise VerifyError("give a DIR of records or --records PATH ...")
    if not args.dir.is_dir():
        raise VerifyError(f"{args.dir} is not a directory")
    if args.sample < 1:
        raise VerifyError(f"--sample {args.sample}: give a number of records >= 1")
    records = completed_records(args.dir)
    if not records:
        raise VerifyError(f"no completed {RECORD} records with a config and predictions under {args.dir}")
    refused: dict[str, int] = {}
    runnable = []
    for path, record in records:
        why = refusal(record)
        if why is None:
            runnable.append((path, record))
        else:
            refused[why] = refused.get(why, 0) + 1
    note = "; ".join(f"{n} record(s): {why}" for why, n in refused.items()) or None
    if not runnable:
        raise VerifyError(f"none of the {len(records)} completed records under {args.dir} can be rerun here ({note})")
    return sample(runnable, args.sample, args.seed), note


if __name__ == "__main__":
    raise SystemExit(main())
