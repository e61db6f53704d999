"""W&B logging: offline runs work without an account, and a tracker that cannot start never breaks a run."""

from __future__ import annotations

import pytest

from peftbench.run.config import compose, to_specs
from peftbench.run.tracking import start_tracker
from tests.test_run import records, run_cli

RECORD = {"method": "lora", "task": "sst2", "model": "tiny_bert", "sweep": "s", "config": {"seed": 0},
          "design": {}, "params": {"paper": 1}, "run_key": "k", "status": "completed", "score": 0.5,
          "metric": "accuracy", "metrics": {"accuracy": 0.5}}


def test_tracker_is_off_unless_asked():
    assert start_tracker(to_specs(compose([])).logger, RECORD, ".") is None


def test_a_tracker_that_cannot_start_is_a_warning(monkeypatch, tmp_path):
    wandb = pytest.importorskip("wandb")

    def refuse(**_kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", refuse)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.warns(UserWarning, match="W&B logging disabled: UsageError"):
        assert start_tracker(to_specs(compose(["logger=wandb", "logger.mode=online"])).logger, RECORD,
                             str(tmp_path)) is None


@pytest.mark.slow
def test_offline_wandb_run_logs_and_completes(tmp_path, glue_dir):
    pytest.importorskip("wandb")
    out = run_cli(tmp_path, glue_dir, tmp_path / "cache", "logger=wandb", "logger.mode=offline",
                  "model=tiny_bert", "task=rte", "data.max_train_samples=64", "data.held_out=16",
                  "train.epochs=1", "train.progress=false", "train.log_every=1", wandb_mode=None)
    assert out.returncode == 0, out.stderr[-2000:]
    (record,) = records(tmp_path / "run")
    assert record["status"] == "completed"
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
