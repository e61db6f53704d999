"""Checkpoints inside a run: a killed or preempted run continues where it stopped and ends as if never stopped.

A run saves its training state at the end of every epoch, and mid-epoch when asked to stop (SIGTERM, what SLURM
sends before preemption), to ``<results_root>/.checkpoints/<run_key>.pt``: keyed by the run's configuration, so
a rerun finds it whichever sweep folder it writes to. The state is everything the rest of the run depends on:

- the trainable parameters (the frozen ones are rebuilt from the checkpoint of the model and the seed),
  the optimizer and the scheduler;
- where the data order stands: the sampler generator's state at the start of the current epoch and the number of
  batches done in it (a resumed epoch regenerates the same order and skips the batches done);
- the RNG states that dropout draws from (torch CPU and CUDA, numpy, python);
- the history so far, the best held-out score and its parameters, step and example counters, training time.

Restoring it in a fresh process gives the same metrics and loss history as an uninterrupted run on the CPU
(tested). A completed run deletes its checkpoint unless ``train.keep_checkpoint=true``.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS_DIR = ".checkpoints"


class RunInterrupted(RuntimeError):
    """The run was asked to stop (SIGTERM); its checkpoint is saved and a rerun resumes it."""


def checkpoint_path(results_root: str | Path, key: str) -> Path:
    return Path(results_root).expanduser().absolute() / CHECKPOINTS_DIR / f"{key}.pt"


def rng_states() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: a reader (or a rerun after a crash mid-write) sees the old checkpoint or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: Path | None, what: str = "this run") -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none, or it cannot be read (a checkpoint from another
    torch, or damaged: it is discarded and the run starts over, which is always correct). Says which, for `what`."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        where = f"epoch {state['epoch']}, batch {state['batch']}"
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"peftbench: warning: {what}: its checkpoint {path} cannot be read ({type(err).__name__}"
              f"{': ' + reason[:200] if reason else ''}); discarded: the run starts over", file=sys.stderr)
        return None
    print(f"peftbench: {what}: resuming from its checkpoint {path} ({where})")
    return state


class StopRequest:
    """Set by SIGTERM while a run trains (main thread only); the training loop polls it after every step."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    def install(self):
        """Route SIGTERM to this request (cleared: a new job starts); returns a callable that restores the
        previous handler."""
        self.event.clear()
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: self.event.set())
        return lambda: signal.signal(signal.SIGTERM, previous)


STOP = StopRequest()
