"""Read back what an offline W&B run wrote: its ``run-<id>.wandb`` file, a LevelDB-style log of protobuf records
(``wandb.proto.wandb_internal_pb2.Record``), the format ``wandb sync`` uploads. wandb 0.31 ships no Python reader
(its core is a Go binary), so this is the log format in a few lines: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of chunks, each ``crc32 (4) | length (2) | type (1)``, type 1 a whole record, 2/3/4 its first, middle
and last pieces."""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        if pos + HEADER + length > len(data):
            break  # the writer has not flushed the rest yet
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What one offline run holds: its identity, config, summary (last value per key), history rows, artifacts."""

    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def read_run(folder: Path, wait_s: float = 30.0) -> OfflineRun:
    """The run in an ``offline-run-*`` folder, once its log holds the exit record: ``run.finish()`` returns before
    W&B's service has flushed the whole log, so it is read again until it does (at most `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while not any(folder.glob("*.wandb")) and time.monotonic() < deadline:
        time.sleep(0.2)  # a service shared with another process may create it late
    (log,) = folder.glob("*.wandb")
    run = _parse(log)
    while run.exit_code is None and time.monotonic() < deadline:
        time.sleep(0.2)
        run = _parse(log)
    return run


def _parse(log: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun()
    for raw in raw_records(log):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":  # a run record may come again later, updating only some fields
            run.name = record.run.display_name or run.name
            run.group, run.job_type = record.run.run_group or run.group, record.run.job_type or run.job_type
            run.config.update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            run.config.update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "summary":
            run.summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append({"name": a.name, "type": a.type, "files": sorted(c.path for c in a.manifest.contents),
                                  "metadata": json.loads(a.metadata) if a.metadata else {}})
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under ``root/wandb/``, in the order they started."""
    return [read_run(folder) for folder in sorted((root / "wandb").glob("offline-run-*"))]
