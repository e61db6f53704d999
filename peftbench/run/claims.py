"""Claims: a run marks its configuration as in flight, so workers sharing a results folder never run it twice.

A run about to train opens ``<results_root>/.claims/<run_key>.json`` and takes an exclusive ``flock`` on it for as
long as it runs; the file says who (host, pid, run dir, start time). The lock, not the file, is the claim: the
kernel drops it when the process ends, however it ends (``kill -9`` included), so

- a claim whose lock is held is **in flight**: another worker skips that configuration;
- a claim file whose lock is free is **abandoned** (its run died before writing a record): the next worker that
  wants the configuration takes the claim over and reruns it;
- a run that ends (completed or failed) deletes its claim after writing its record.

A worker re-checks for a completed record after taking a claim (the previous holder may have finished in between).
``flock`` works between processes of one machine and on most shared filesystems (NFSv4, Lustre with ``flock``);
where it is not supported, taking a claim fails with a warning and the run goes ahead unclaimed.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CLAIMS_DIR = ".claims"
IN_FLIGHT, ABANDONED = "in flight", "abandoned"
UNREADABLE = "unreadable"  # a path in .claims/ that cannot be opened as a claim (a directory, no permission)


def claim_path(results_root: str | Path, key: str) -> Path:
    return Path(results_root).expanduser().absolute() / CLAIMS_DIR / f"{key}.json"


@dataclass
class Claim:
    """A held claim: the open, locked claim file. `taken_over` holds the previous holder of an abandoned claim."""

    path: Path
    handle: IO[str]
    taken_over: dict[str, Any] | None = None

    def release(self) -> None:
        """Delete the claim file, then drop the lock (in that order: a worker waiting on this file finds it gone)."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.handle.close()


def _read(handle: IO[str]) -> dict[str, Any] | None:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "null")
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def acquire(results_root: str | Path, key: str, info: dict[str, Any]) -> Claim | dict[str, Any]:
    """Take the claim of run `key`: a `Claim` when this process now holds it, else the live holder's info
    (host, pid, run dir, start time). `info` (what this run is) is written into the claim with host and pid."""
    path = claim_path(results_root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the run: the lock lives on it)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(handle) or {}
            handle.close()
            return holder
        try:  # the file may have been released (deleted) between our open and our lock: then lock the new one
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            handle.close()
            continue
        previous = _read(handle)
        handle.seek(0)
        handle.truncate()
        mine = {**info, "host": socket.gethostname(), "pid": os.getpid(),
                "claimed_at": dt.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
        handle.write(json.dumps(mine))
        handle.flush()
        return Claim(path, handle, taken_over=previous)


def state(path: Path) -> str:
    """`IN_FLIGHT` when some process holds the claim's lock, `ABANDONED` when none does (its run died)."""
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return IN_FLIGHT
        fcntl.flock(handle, fcntl.LOCK_UN)
        return ABANDONED


def list_claims(dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every claim under `dirs` (searched recursively for ``.claims/``): its info plus ``state`` and ``path``; a
    claim path that cannot be read (a directory, ...) has ``state`` `UNREADABLE` and its ``error``."""
    out, seen = [], set()
    for root in dirs:
        root = Path(root)
        candidates = [root / CLAIMS_DIR] if (root / CLAIMS_DIR).is_dir() else []
        candidates += [p for p in root.rglob(CLAIMS_DIR) if p.is_dir()] if root.is_dir() else []
        for folder in candidates:
            for path in sorted(folder.glob("*.json")):
                if path.resolve() in seen:
                    continue
                seen.add(path.resolve())
                try:
                    with open(path, encoding="utf-8") as handle:
                        info = _read(handle) or {}
                    out.append({**info, "state": state(path), "path": str(path)})
                except FileNotFoundError:  # released while we looked
                    continue
                except OSError as err:  # named by its path, and the other claims still listed
                    out.append({"state": UNREADABLE, "path": str(path), "error": err.strerror or str(err)})
    return out
