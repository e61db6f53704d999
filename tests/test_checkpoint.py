"""Checkpoints inside a run (issue 10, point 4): a run stopped mid-epoch or after an epoch resumes from its
checkpoint and ends exactly as an uninterrupted run; SIGTERM writes an interrupted record and exits 143; the
rerun resumes and the checkpoint goes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import peftbench.run.checkpoint as ckpt
from peftbench.run.config import compose, to_specs
from peftbench.run.setup import prepare
from peftbench.run.train import train_and_evaluate

pytestmark = pytest.mark.slow
# MAM: dropout, a prefix MLP and an adapter, so the RNG, the optimizer state and the data order all matter
SMALL = ["model=tiny_bert", "method=mam", "task=sst2", "data.max_train_samples=192", "data.held_out=32",
         "train.epochs=2", "train.progress=false", "train.batch_size=16"]  # fmt: skip


class StopAfter:
    """A stand-in for `ckpt.STOP` that asks to stop at its n-th poll (the training loop polls once per step)."""

    def __init__(self, n: int) -> None:
        self.n, self.polls = n, 0

    def __bool__(self) -> bool:
        self.polls += 1
        return self.polls >= self.n


def outcome(result: dict) -> tuple:
    """What must not change with an interruption: metrics, predictions, the history without its timings."""
    history = [{k: v for k, v in h.items()} for h in result["history"]]
    return result["metrics"], result["predictions"], history, result["steps"], result["best_epoch"]


@pytest.fixture(scope="module")
def specs(glue_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    return to_specs(compose([*SMALL, f"data.glue_dir={glue_dir}", f"data.cache_dir={cache}"]))


@pytest.fixture(scope="module")
def uninterrupted(specs, tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple, Path]:
    """An uninterrupted run with a checkpoint path: its result, and the checkpoint it left (end of epoch 1)."""
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    result = train_and_evaluate(specs, prepare(specs), checkpoint=path)
    return outcome(result), path


@pytest.mark.parametrize(
    ("stop_at", "where", "left"),
    [(4, r"epoch 1, step 4 of 20", 16), (13, r"epoch 2, step 13 of 20", 7)],  # 10 steps per epoch
    ids=["in epoch 1", "in epoch 2"],
)
def test_stopped_mid_epoch_resumes_to_the_same_result(
    specs, uninterrupted, tmp_path, monkeypatch, stop_at: int, where: str, left: int
) -> None:
    expected, _ = uninterrupted
    path = tmp_path / "run.pt"
    monkeypatch.setattr(ckpt, "STOP", StopAfter(stop_at))
    with pytest.raises(ckpt.RunInterrupted, match=where + r"; checkpoint .*run.pt: rerun"):
        train_and_evaluate(specs, prepare(specs), checkpoint=path)
    saved = ckpt.load(path)
    assert (saved["step"], saved["batch"]) == (stop_at, stop_at - 10 * (saved["epoch"] - 1))
    resumed = StopAfter(10**9)
    monkeypatch.setattr(ckpt, "STOP", resumed)
    assert outcome(train_and_evaluate(specs, prepare(specs), checkpoint=path)) == expected
    assert resumed.polls == left  # it trained only the steps left, not 20 from the start


def test_killed_after_epoch_one_resumes_at_epoch_two(specs, uninterrupted, tmp_path, monkeypatch) -> None:
    """The checkpoint saved at the end of epoch 1 (what a kill -9 during epoch 2 leaves) resumes at epoch 2."""
    expected, left = uninterrupted
    path = tmp_path / "run.pt"
    shutil.copy(left, path)
    saved = ckpt.load(path)
    assert (saved["epoch"], saved["batch"], len(saved["history"])) == (2, 0, 1)
    resumed = StopAfter(10**9)
    monkeypatch.setattr(ckpt, "STOP", resumed)
    assert outcome(train_and_evaluate(specs, prepare(specs), checkpoint=path)) == expected
    assert resumed.polls == 10


def test_an_unreadable_checkpoint_starts_over(specs, uninterrupted, tmp_path, monkeypatch) -> None:
    expected, _ = uninterrupted
    path = tmp_path / "run.pt"
    path.write_bytes(b"not a checkpoint")
    started = StopAfter(10**9)
    monkeypatch.setattr(ckpt, "STOP", started)
    assert outcome(train_and_evaluate(specs, prepare(specs), checkpoint=path)) == expected
    assert started.polls == 20


def test_sigterm_writes_an_interrupted_record_and_the_rerun_resumes(tmp_path: Path, glue_dir: Path) -> None:
    env = {**os.environ, "PEFTBENCH_GLUE_DIR": str(glue_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "peftbench", "-m", *SMALL, "seed=0,1", "results_root=runs",
           f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    claims = tmp_path / "runs" / ".claims"
    deadline = time.monotonic() + 300
    while not (claims.is_dir() and any(claims.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)  # during the first job's setup: it stops after its first step
    out, err = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("result.json")]
    assert record["status"] == "interrupted" and "stopped by SIGTERM at epoch 1" in record["error"]
    assert "rerun the same command to resume" in err
    (checkpoint,) = (tmp_path / "runs" / ckpt.CHECKPOINTS_DIR).glob("*.pt")
    assert checkpoint.stem == record["run_key"]
    assert not any(claims.glob("*.json"))  # the interrupted run released its claim; seed 1 never started

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from its checkpoint" in rerun.stdout
    done = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("result.json")]
    assert sorted(r["status"] for r in done) == ["completed", "completed", "interrupted"]
    assert not checkpoint.exists()  # deleted once the run completed


def test_sigterm_outside_training_still_stops_the_sweep(monkeypatch, capsys) -> None:
    """A SIGTERM that arrives while a run sets up or evaluates (the training loop is not polling) must not be
    cleared by the next job: the run's record stands and the sweep exits 143."""
    from peftbench.run import job as cli_job

    def job(_cfg):
        os.kill(os.getpid(), signal.SIGTERM)  # caught by the run's handler: sets the stop request
        return {"status": "completed"}

    monkeypatch.setattr(cli_job, "_job", job)
    with pytest.raises(SystemExit) as exit_:
        cli_job.run_job(None)
    assert exit_.value.code == 128 + signal.SIGTERM
    assert "SIGTERM received outside training" in capsys.readouterr().err
    monkeypatch.setattr(cli_job, "_job", lambda _cfg: {"status": "completed"})
    assert cli_job.run_job(None) == {"status": "completed"}  # a new job starts with the request cleared
