"""The GLUE data layer: a strict TSV loader, the hub as the other source, held-out splits and subsets.

Both sources give the same schema, the hub's (`nyu-mll/glue`): the task's text fields, `label`
(a `ClassLabel` in the hub's id order, or a float32 score for STS-B) and `idx` (the row's position).

- `source="local"` reads the standard GLUE download layout (`SST-2/train.tsv`, `MNLI/dev_matched.tsv`, ...)
  with quoting disabled, checking every row's column count and label; a bad row raises `DataError`
  naming the file and line.
- `source="hub"` calls `datasets.load_dataset("nyu-mll/glue", task)` (needs network or a warm HF cache). With
  ``HF_HUB_OFFLINE`` set, or the hub unreachable (`hub_offline`: one TCP connect, 3 s at most), it reads the
  cache only, so a missing task fails at once instead of after five retries.

The task facts are `peftbench.run.tasks`; tokenisation is `peftbench.run.tokenisation`. Model selection uses
`split_for_selection` (a part of train held out); the dev set is only reported. Nothing here imports torch or
transformers at module level.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, DatasetInfo, NamedSplit
from datasets.table import InMemoryTable

from peftbench.run.tasks import DataError, TaskInfo, get_task

HUB_DATASET = "nyu-mll/glue"
SOURCES = ("auto", "local", "hub")
GLUE_DIR_ENV = "PEFTBENCH_GLUE_DIR"
_PARSER_VERSION = 1  # bump when the parsing changes what a file yields (it is part of every fingerprint)


# ----------------------------------------------------------------------------------------------- loading


def load_glue(
    task: str,
    source: str = "local",
    glue_dir: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
) -> DatasetDict:
    """Load a GLUE task as a `DatasetDict` of `splits` (None = train and the task's evaluation splits).

    `glue_dir` (local source only) defaults to the environment variable PEFTBENCH_GLUE_DIR; a relative
    path is taken against the directory the program was launched from (Hydra's original cwd).
    """
    info = get_task(task)
    wanted = info.splits if splits is None else tuple(splits)
    unknown = [s for s in wanted if s not in info.splits]
    if unknown or not wanted:
        raise DataError(
            f"{info.name}: unknown split(s) {unknown or '(none given)'}; valid: {', '.join(info.splits)}"
        )
    if source == "auto":
        source, why_not_local = pick_source(info.name, glue_dir, wanted)
        if source == "hub":
            try:
                return _load_hub(info, wanted)
            except Exception as err:  # offline, no cache, ...: say where both sources were looked for
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise DataError(f"{info.name}: found neither locally ({why_not_local}) nor on the hub "
                                f"({HUB_DATASET}: {type(err).__name__}: {first}); set data.glue_dir or "
                                f"${GLUE_DIR_ENV} to a GLUE folder, or connect to the hub") from err
    if source == "local":
        return _load_local(info, resolve_glue_dir(glue_dir), wanted)
    if source == "hub":
        return _load_hub(info, wanted)
    raise DataError(f"unknown data source {source!r}; valid sources: {', '.join(SOURCES)}")


def pick_source(task: str, glue_dir: str | os.PathLike | None, splits: Sequence[str] | None = None) -> tuple[str, str | None]:
    """``data.source=auto``: ``("local", None)`` when the local GLUE folder has every file of the task's splits,
    else ``("hub", why the local folder cannot serve)``."""
    info = get_task(task)
    try:
        glue = resolve_glue_dir(glue_dir)
    except DataError as err:
        return "hub", str(err).split(":")[0]
    if glue.exists() and not glue.is_dir():
        return "hub", f"GLUE directory {glue} is a file, not a folder"
    folder = glue / info.local_dir
    missing = [folder / info.local_file(s) for s in (splits or info.splits) if not (folder / info.local_file(s)).is_file()]
    if not missing:
        return "local", None
    return "hub", f"{missing[0]} is a directory, not a file" if missing[0].is_dir() else f"no {missing[0]}"


def resolve_glue_dir(glue_dir: str | os.PathLike | None) -> Path:
    """`glue_dir`, else $PEFTBENCH_GLUE_DIR, made absolute against the original working directory."""
    if glue_dir is None or str(glue_dir) == "":
        glue_dir = os.environ.get(GLUE_DIR_ENV)
    if not glue_dir:
        raise DataError(
            f"no GLUE directory given: set data.glue_dir or the environment variable {GLUE_DIR_ENV} "
            "to the folder holding SST-2/, MRPC/, ... (or use data.source=hub)"
        )
    return absolute_path(glue_dir)


def absolute_path(path: str | os.PathLike) -> Path:
    """A user path made absolute against the launch directory, also inside a Hydra run that chdir'ed."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    try:
        from hydra.utils import to_absolute_path  # falls back to os.getcwd() outside a Hydra app

        return Path(to_absolute_path(str(path)))
    except ImportError:
        return path.resolve()


def hub_offline(timeout_s: float = 3.0) -> str | None:
    """Why the hub cannot be reached (``HF_HUB_OFFLINE`` set, or no TCP connection to its endpoint within
    `timeout_s`); None when it can, or when a proxy is configured (which a direct connection does not test)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "offline (HF_HUB_OFFLINE is set)"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError as err:
        return f"unreachable ({url.hostname}:{port}: {err.strerror or err})"
    return None


def _load_hub(info: TaskInfo, splits: tuple[str, ...]) -> DatasetDict:
    import datasets
    from huggingface_hub import constants

    offline = hub_offline()
    if offline is None:
        dsd = datasets.load_dataset(HUB_DATASET, info.name)
    else:  # the cache only: no request, so no retries (huggingface_hub retries a failing request five times)
        saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
        try:
            dsd = datasets.load_dataset(HUB_DATASET, info.name)
        except Exception as err:
            raise ConnectionError(f"the hub is {offline} and {HUB_DATASET}/{info.name} is not in the datasets "
                                  "cache") from err
        finally:
            constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved
    missing = [s for s in splits if s not in dsd]
    if missing:
        raise DataError(f"{HUB_DATASET}/{info.name} has no split(s) {missing}; it has: {', '.join(dsd)}")
    return DatasetDict({s: dsd[s] for s in splits})


def _load_local(info: TaskInfo, glue_dir: Path, splits: tuple[str, ...]) -> DatasetDict:
    if not glue_dir.is_dir():
        what = "is a file, not a folder" if glue_dir.exists() else "does not exist"
        raise DataError(f"GLUE directory {glue_dir} {what} (set data.glue_dir or {GLUE_DIR_ENV} to the folder "
                        "holding SST-2/, MRPC/, ...)")
    folder = glue_dir / info.local_dir
    if not folder.is_dir():
        found = sorted(p.name for p in glue_dir.iterdir() if p.is_dir())
        raise DataError(f"{info.name}: no folder {folder}; {glue_dir} has: {', '.join(found) or 'nothing'}")
    out = {}
    for split in splits:
        path = folder / info.local_file(split)
        if not path.is_file():
            if path.is_dir():
                raise DataError(f"{info.name}: split {split!r} needs the file {path}, which is a directory")
            found = sorted(p.name for p in folder.iterdir())
            raise DataError(
                f"{info.name}: split {split!r} needs {path}, which does not exist; {folder} has: "
                f"{', '.join(found) or 'nothing'} (ask for splits={list(info.eval_splits)}, or use the hub)"
            )
        out[split] = read_glue_tsv(path, info, split)
    return DatasetDict(out)


def read_glue_tsv(path: str | os.PathLike, task: str | TaskInfo, split: str = "train") -> Dataset:
    """Parse one GLUE TSV strictly (no quoting, UTF-8 with or without BOM, exact column counts).

    The dataset's fingerprint is a hash of the file's bytes, so the tokenisation cache is keyed by content.
    """
    info = task if isinstance(task, TaskInfo) else get_task(task)
    path = Path(path)
    raw = path.read_bytes()
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = bom + err.start
        line = raw[:at].count(b"\n") + 1
        message = f"{path}:{line}: byte {at} (0x{raw[at]:02x}) is not UTF-8; a GLUE TSV must be UTF-8 text"
        raise DataError(message) from None
    # Split on "\n" only: str.splitlines() would also split on \x1c, \x85, \u2028 ... inside a sentence.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    layout = info.layout
    first = 1
    if layout.header:
        if not lines:
            raise DataError(f"{path}: empty file, expected a header line")
        header = lines[0].split("\t")
        width = len(header)
        wanted = [*layout.text_columns, layout.label_column]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {missing}; it has {header}, expected {wanted}")
        text_at = [header.index(c) for c in layout.text_columns]
        label_at = header.index(layout.label_column)
        lines, first = lines[1:], 2
    else:
        width = layout.num_columns
        text_at, label_at = list(layout.text_columns), layout.label_column

    if not lines:
        where = " after the header" if layout.header else ""
        raise DataError(f"{path}: no data rows{where}; a split needs examples")

    columns: dict[str, list[Any]] = {f: [] for f in info.text_fields}
    labels: list[int | float] = []
    for lineno, line in enumerate(lines, start=first):
        fields = line.split("\t")
        if len(fields) != width:
            raise DataError(
                f"{path}:{lineno}: expected {width} tab-separated columns, found {len(fields)} "
                f"(text in column(s) {list(layout.text_columns)}, label in {layout.label_column!r})"
            )
        for name, at in zip(info.text_fields, text_at, strict=True):
            columns[name].append(fields[at])
        labels.append(_parse_label(fields[label_at].strip(), info, path, lineno))
    columns["label"] = labels
    columns["idx"] = list(range(len(labels)))

    features = info.features()
    digest = hashlib.sha256(f"{_PARSER_VERSION}|{info.name}|{split}|".encode() + raw).hexdigest()[:16]
    table = InMemoryTable.from_pydict(columns, schema=features.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=features), split=NamedSplit(split), fingerprint=digest)


def _parse_label(value: str, info: TaskInfo, path: Path, lineno: int) -> int | float:
    fmt = info.layout.label_format
    if fmt == "float":
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise DataError(f"{path}:{lineno}: score {value!r} is not a finite number")
        return score
    if fmt == "name":
        if value in info.label_names:
            return info.label_names.index(value)
        raise DataError(f"{path}:{lineno}: label {value!r} is not one of {list(info.label_names)}")
    valid = [str(i) for i in range(info.num_labels)]
    if value in valid:
        return int(value)
    names = ", ".join(f"{i}={n}" for i, n in enumerate(info.label_names))
    raise DataError(f"{path}:{lineno}: label {value!r} is not one of {valid} ({names})")


# ---------------------------------------------------------------------------------- selection, subsets


def split_for_selection(train: Dataset, held_out: int | float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out part of train for model selection (we never select on the dev set we report).

    `held_out`: an int is a number of examples, a float in (0, 1) a fraction of train. Returns
    (train without the held-out rows, the held-out rows), both in the original order; the same seed
    gives the same split.
    """
    n = len(train)
    if isinstance(held_out, bool) or not isinstance(held_out, numbers.Real):
        raise DataError(
            f"held_out must be an int (examples) or a float in (0, 1) (fraction), got {held_out!r}"
        )
    if isinstance(held_out, numbers.Integral):
        k = int(held_out)
    elif 0 < held_out < 1:
        k = round(float(held_out) * n)
    else:
        raise DataError(f"held_out={held_out!r}: a float is a fraction in (0, 1); give an int for a count")
    if not 0 < k < n:
        raise DataError(
            f"held_out={held_out!r} gives {k} of {n} train examples; it must leave both parts non-empty"
        )
    order = np.random.default_rng(seed).permutation(n)
    return train.select(np.sort(order[k:])), train.select(np.sort(order[:k]))


def subsample(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """A deterministic random subset of `n` rows in their original order (`data.max_train_samples`).

    None, or an `n` at least the dataset's size, returns `ds` unchanged.
    """
    if n is None:
        return ds
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise DataError(f"a sample size must be a positive int or null, got {n!r}")
    if n >= len(ds):
        return ds
    return ds.select(np.sort(np.random.default_rng(seed).permutation(len(ds))[: int(n)]))
