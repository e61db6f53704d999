"""Issue 12, point 4: sweeps on Hydra's launcher plugins. A 4-run sweep through joblib (2 worker processes) and
through submitit_local writes 4 completed records; a rerun skips them all (resume); a run that fails in a worker
is recorded as failed, the others complete, and the command exits 1. The grid is validated once, before any
launcher starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
pytestmark = pytest.mark.slow

RUN = ["model=tiny_bert", "data=local", "data.max_train_samples=64", "data.held_out=16", "data.max_eval_samples=32",
       "train.epochs=1", "train.progress=false", "train.threads=1"]


def sweep(cwd: Path, glue: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PEFTBENCH_GLUE_DIR": str(glue), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "peftbench", "-m", *RUN, f"data.cache_dir={cwd / 'cache'}", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]


@pytest.mark.parametrize("launcher", [
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
], ids=["joblib", "submitit_local"])  # fmt: skip
def test_a_sweep_through_a_launcher_writes_every_record_and_resumes(tmp_path, glue_dir, launcher):
    args = [*launcher, "method=lora,bitfit", "seed=0,1", "results_root=runs"]
    first = sweep(tmp_path, glue_dir, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    done = records(tmp_path / "runs")
    assert sorted((r["method"], r["seed"], r["status"]) for r in done) == [
        ("bitfit", 0, "completed"), ("bitfit", 1, "completed"), ("lora", 0, "completed"), ("lora", 1, "completed")]
    again = sweep(tmp_path, glue_dir, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(records(tmp_path / "runs")) == 4  # nothing ran twice
    out = again.stdout + again.stderr
    if launcher[0].endswith("joblib"):  # submitit keeps its jobs' output in its own folder
        assert out.count("skipping") == 4, out[-3000:]


def test_a_failing_run_in_a_worker_fails_alone(tmp_path, glue_dir):
    glue = tmp_path / "glue"
    for folder in ("SST-2", "RTE"):
        (glue / folder).mkdir(parents=True)
        for split in ("train.tsv", "dev.tsv"):
            lines = (glue_dir / folder / split).read_text(encoding="utf-8").splitlines(keepends=True)
            (glue / folder / split).write_text("".join(lines[:81]), encoding="utf-8")
    broken = glue / "RTE" / "train.tsv"
    broken.write_text(broken.read_text(encoding="utf-8").replace("\tentailment\n", "\tmaybe\n", 1), encoding="utf-8")
    out = sweep(tmp_path, glue, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=lora", "task=sst2,rte",
                "seed=0,1", "results_root=runs", f"data.glue_dir={glue}")
    assert out.returncode == 1, out.stderr[-3000:]
    assert "peftbench: error: 2 run(s) failed: lora/rte/seed 0, lora/rte/seed 1" in out.stderr or \
        "peftbench: error: 2 run(s) failed: lora/rte/seed 1, lora/rte/seed 0" in out.stderr, out.stderr[-3000:]
    statuses = sorted((r["task"], r["seed"], r["status"]) for r in records(tmp_path / "runs"))
    assert statuses == [("rte", 0, "failed"), ("rte", 1, "failed"), ("sst2", 0, "completed"), ("sst2", 1, "completed")]
    assert all("RTE/train.tsv" in r["error"] for r in records(tmp_path / "runs") if r["status"] == "failed")


def test_the_grid_is_validated_before_any_launcher_starts(tmp_path, glue_dir):
    out = sweep(tmp_path, glue_dir, "hydra/launcher=joblib", "method=lora,nosuch", "results_root=runs")
    assert out.returncode == 2 and "Could not find 'method/nosuch'" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_optuna_optimises_the_held_out_score_never_dev(tmp_path, glue_dir):
    """Issue 12, point 7: the task function returns the run's held-out selection score, so optuna's best value is
    the best held-out score of its trials (an lr on a log interval and a rank among choices)."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    out = sweep(tmp_path, glue_dir, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.direction=maximize",
                "hydra.sweeper.sampler.seed=0", "train.lr=tag(log,interval(1e-4,3e-2))",
                "method.modules.attn.r=choice(2,8)", "data.held_out=24", "results_root=runs",
                "hydra.sweep.dir=sweep")
    assert out.returncode == 0, out.stderr[-3000:]
    trials = records(tmp_path / "sweep")
    assert len(trials) == 3 and all(r["status"] == "completed" for r in trials)
    held_out = [max(h["select"]["accuracy"] for h in r["history"]) for r in trials]
    result = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(held_out))
    best = trials[held_out.index(max(held_out))]
    assert result["best_params"]["train.lr"] == pytest.approx(best["lr"])
    assert result["best_params"]["method.modules.attn.r"] == best["design"]["attn"]["r"]
    assert all(1e-4 <= r["lr"] <= 3e-2 for r in trials)
