"""W&B logging: offline runs work without an account, a tracker that cannot start never breaks a run, and what a
run writes is read back from its offline log (`tests.wandb_files`): name, group, job type, summary, artifact."""

from __future__ import annotations

import json

import pytest

from peftbench.run.config import compose, to_specs
from peftbench.run.tracking import cell_group, lr_used, record_scalars, start_tracker
from tests.test_run import records, run_cli
from tests.wandb_files import offline_runs

RECORD = {"method": "lora", "task": "sst2", "model": "tiny_bert", "sweep": "s", "seed": 0,
          "config": {"seed": 0, "method": {"lr": 5e-4}, "train": {"lr": None, "lr_scale": 0.5}},
          "design": {}, "params": {"paper": 1, "paper_share": 0.01, "modules": ["a"]}, "run_key": "k" * 40,
          "status": "completed", "score": 0.5, "metric": "accuracy", "metrics": {"accuracy": 0.5},
          "mixed_precision": "bf16", "best_epoch": 2, "time_s": 3.0, "peak_mem_mb": 100.0,
          "throughput": {"train_examples_per_s": 9.0, "padding_ratio": 1.1}, "inference": {"ratio": 1.2},
          "artefact": {"save": "modules", "bytes": 1234}, "history": [{"epoch": 1, "select": {"accuracy": 0.6},
                                                                      "best": True}],
          "predictions": {"validation": {"predictions": [1], "references": [1]}}}
#: what the summary of a completed run holds besides its metrics
SUMMARY_KEYS = {"score", "metric", "dev/accuracy", "params/paper", "params/paper_share", "time_s", "peak_mem_mb",
                "throughput/train_examples_per_s", "throughput/padding_ratio", "inference/ratio", "artefact/bytes",
                "precision", "best_epoch", "lr", "select_score", "status", "seed"}


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


def test_record_scalars_hold_the_whole_record():
    scalars = record_scalars(RECORD)
    assert SUMMARY_KEYS <= set(scalars)
    assert scalars["lr"] == lr_used(RECORD) == 2.5e-4  # the preset's lr × lr_scale, train.lr being null
    assert scalars["precision"] == "bf16" and scalars["select_score"] == 0.6
    assert not any(k.startswith(("predictions", "history", "config")) for k in scalars)


def test_the_group_is_the_cell_at_its_lr():
    other_seed = {**RECORD, "seed": 1, "config": {**RECORD["config"], "seed": 1}}
    other_lr = {**RECORD, "config": {**RECORD["config"], "train": {"lr": 1e-3, "lr_scale": 0.5}}}
    assert cell_group(RECORD) == cell_group(other_seed)
    assert cell_group(RECORD).startswith("s/lora/sst2/lr=0.00025/")
    assert cell_group(other_lr) != cell_group(RECORD) and "/lr=0.0005/" in cell_group(other_lr)


def test_a_run_is_read_back_with_its_name_group_summary_and_artifact(tmp_path, monkeypatch):
    """The tracker of a finished run, offline: its folder in <logger.dir>/wandb/ (where `wandb sync` looks)."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "multirun" / "3_lora_sst2_s0"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(RECORD))
    (run_dir / "modules.safetensors").write_bytes(b"0" * 16)
    logger = to_specs(compose(["logger=wandb", f"logger.dir={tmp_path}"])).logger
    tracker = start_tracker(logger, RECORD, str(run_dir))
    tracker.log({"train/loss": 0.7}, step=1)
    tracker.finish(RECORD)
    (run,) = offline_runs(tmp_path)
    assert run.name == "3_lora_sst2_s0" and run.job_type == "lora" and run.group == cell_group(RECORD)
    assert SUMMARY_KEYS <= set(run.summary) and run.summary["score"] == 0.5 and run.summary["lr"] == 2.5e-4
    assert run.config["lr"] == 2.5e-4 and run.config["precision"] == "bf16"
    (artifact,) = run.artifacts
    assert artifact["type"] == "run-record" and artifact["files"] == ["modules.safetensors", "result.json"]
    assert run.exit_code == 0 and any(h.get("train/loss") == 0.7 for h in run.history)


@pytest.mark.slow
def test_offline_wandb_run_logs_and_completes(tmp_path, glue_dir):
    pytest.importorskip("wandb")
    out = run_cli(tmp_path, glue_dir, tmp_path / "cache", "logger=wandb", "logger.mode=offline",
                  "model=tiny_bert", "task=rte", "data.max_train_samples=64", "data.held_out=16",
                  "train.epochs=1", "train.progress=false", "train.log_every=1", wandb_mode=None)
    assert out.returncode == 0, out.stderr[-2000:]
    (record,) = records(tmp_path / "run")
    assert record["status"] == "completed"
    (run,) = offline_runs(tmp_path)  # the command's folder (logger.dir=.), not inside the run folder
    assert run.name == "run" and run.job_type == "lora" and run.group == cell_group(record)
    assert run.summary["score"] == record["score"] and run.summary["lr"] == record["lr"] == run.config["lr"]
    assert {"time_s", "peak_mem_mb", "best_epoch", "precision", "artefact/bytes", "throughput/padding_ratio"} \
        <= set(run.summary)
    assert run.artifacts[0]["files"] == ["modules.safetensors", "result.json"]
