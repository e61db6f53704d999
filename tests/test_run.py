"""The benchmark run end to end on real GLUE data (small but real): records, sweeps, resume, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftbench.run.config import compose, to_specs

pytestmark = pytest.mark.slow
SMALL = ["model=tiny_bert", "data.max_train_samples=96", "train.epochs=1", "train.progress=false",
         "data.held_out=32"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenized")


def run_cli(tmp_path: Path, glue_dir: Path, cache_dir: Path, *args: str,
            wandb_mode: str | None = "disabled") -> subprocess.CompletedProcess:
    env = {**os.environ, "PEFTBENCH_GLUE_DIR": str(glue_dir), "HF_HUB_OFFLINE": "1"}
    env.pop("WANDB_MODE", None)
    env.pop("WANDB_SERVICE", None)  # a W&B service this test process started: the command starts its own
    if wandb_mode is not None:
        env["WANDB_MODE"] = wandb_mode
    cmd = [sys.executable, "-m", "peftbench", *args, f"results_root={tmp_path / 'multirun'}",
           f"data.cache_dir={cache_dir}"]
    if "-m" not in args:
        cmd.append(f"hydra.run.dir={tmp_path / 'run'}")
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]


RECORD_FIELDS = {"status", "method", "task", "model", "seed", "design", "params", "metrics", "score", "metric",
                 "history", "time_s", "peak_mem_mb", "throughput", "versions", "git_commit", "config", "run_key"}


@pytest.mark.parametrize(
    ("task", "metric_keys"),
    [("mrpc", {"accuracy", "f1"}), ("stsb", {"pearson", "spearmanr"}), ("cola", {"matthews_correlation"})],
)
def test_single_run_writes_a_complete_record(tmp_path, glue_dir, cache_dir, task, metric_keys):
    out = run_cli(tmp_path, glue_dir, cache_dir, *SMALL, f"task={task}", "method=mam")
    assert out.returncode == 0, out.stderr[-2000:]
    (record,) = records(tmp_path / "run")
    assert RECORD_FIELDS <= set(record) and record["status"] == "completed"
    assert set(record["metrics"]) == metric_keys and record["score"] == record["metrics"][record["metric"]]
    assert record["params"]["paper"] == 2 * 16 * 32 * 2 + 2 * 16 * 32 * 2  # prefix + FFN adapter on tiny_bert
    assert record["history"][0]["select"], "the epoch is chosen on the held-out split"
    assert record["config"]["data"]["max_eval_samples"] is None  # the full dev set is reported
    assert record["design"]["attn"]["composition"] == "gate"


def test_lora_learns_sst2_on_minilm(tmp_path, glue_dir, cache_dir):
    """LoRA on the offline default model beats the majority class (50.9% of SST-2 dev) by a wide margin."""
    out = run_cli(tmp_path, glue_dir, cache_dir, "method=lora", "task=sst2", "data.max_train_samples=1200",
                  "train.epochs=2", "train.progress=false", "data.held_out=200")
    assert out.returncode == 0, out.stderr[-2000:]
    (record,) = records(tmp_path / "run")
    assert record["score"] > 0.70, record["metrics"]
    assert record["throughput"]["train_examples_per_s"] > 0 and record["peak_mem_mb"] > 0


def test_sweep_and_resume(tmp_path, glue_dir, cache_dir):
    out = run_cli(tmp_path, glue_dir, cache_dir, "-m", "method=lora,mam", "task=sst2", *SMALL)
    assert out.returncode == 0, out.stderr[-2000:]
    done = records(tmp_path / "multirun")
    assert sorted(r["method"] for r in done) == ["lora", "mam"] and all(r["status"] == "completed" for r in done)
    for r in done:  # each record keeps its own job's overrides (what `report --next-lrs` rebuilds a command from)
        assert f"method={r['method']}" in r["overrides"] and "task=sst2" in r["overrides"]
        assert "method=lora,mam" not in r["overrides"] and "data.max_train_samples=96" in r["overrides"]
    table = out.stdout.split("peftbench: 2 job(s) in ", 1)[1].splitlines()[1:]  # the sweep ends with its runs
    assert table[0].split() == ["job", "status", "score", "×100", "time"]
    assert [row.split()[:3] for row in table[1:3]] == [["0_lora_sst2_s0", "completed", "accuracy"],
                                                       ["1_mam_sst2_s0", "completed", "accuracy"]]
    again = run_cli(tmp_path, glue_dir, cache_dir, "-m", "method=lora,mam", "task=sst2", *SMALL)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipping") == 2
    assert again.stdout.count("  skipped  accuracy ") == 2  # resumed jobs show the record they found
    assert len(records(tmp_path / "multirun")) == 2  # nothing ran twice


def test_failed_runs_write_failed_records_and_the_sweep_goes_on(tmp_path, glue_dir, cache_dir):
    bad = tmp_path / "glue"
    (bad / "RTE").mkdir(parents=True)
    (bad / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    (bad / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    out = run_cli(tmp_path, glue_dir, cache_dir, "-m", "task=rte,mrpc", f"data.glue_dir={bad}", *SMALL)
    assert out.returncode == 1
    by_task = {r["task"]: r for r in records(tmp_path / "multirun")}
    assert by_task["rte"]["status"] == by_task["mrpc"]["status"] == "failed"
    assert "maybe" in by_task["rte"]["error"] and by_task["rte"]["score"] is None
    assert "MRPC" in by_task["mrpc"]["error"]
    assert "2 run(s) failed" in out.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["task=sst3"], "Could not find 'task/sst3'; valid: cola, mnli"),
     (["-m", "method=lora,lorra"], "Could not find 'method/lorra'"),
     (["method.modules.attn.insertion=diagonal"], "insertion='diagonal' is not valid"),
     (["train.epochs=two"], "could not be converted to Integer")],
)
def test_bad_command_lines_fail_before_anything_runs(tmp_path, glue_dir, cache_dir, args, needle):
    out = run_cli(tmp_path, glue_dir, cache_dir, *args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr
    assert not records(tmp_path)


def test_nan_loss_ends_the_run_as_diverged(glue_dir, cache_dir):
    from peftbench.run.setup import prepare
    from peftbench.run.train import TrainingDiverged, train_and_evaluate

    cfg = compose([*SMALL, "task=rte", f"data.glue_dir={glue_dir}", f"data.cache_dir={cache_dir}"])
    specs = to_specs(cfg)
    prep = prepare(specs)
    forward = prep.model.forward

    def poisoned(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.loss = out.loss * torch.tensor(float("nan"))
        return out

    prep.model.forward = poisoned
    with pytest.raises(TrainingDiverged, match="loss is nan at epoch 1 step 1"):
        train_and_evaluate(specs, prep)


def test_same_seed_same_result_on_cpu(tmp_path, glue_dir, cache_dir):
    scores = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        out = run_cli(tmp_path / str(i), glue_dir, cache_dir, *SMALL, "task=rte", "method=mam", "resume=false")
        assert out.returncode == 0, out.stderr[-2000:]
        (record,) = records(tmp_path / str(i) / "run")
        scores.append((record["metrics"], record["history"][0]["train_loss"]))
        assert record["determinism"].startswith("bitwise")  # the record says what a rerun will give
        named = "bitwise, fp32" if record["mixed_precision"] == "no" else "bitwise on one kind of CPU, bf16"
        assert record["determinism"].startswith(named)  # and names the precision it holds for
    assert scores[0] == scores[1]
