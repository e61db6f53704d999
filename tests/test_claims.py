"""Sweeps that survive (issue 10, points 1–3): claims of runs in flight, abandoned runs redone, resume from a custom
sweep folder, and concurrent workers that run each configuration exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from peftbench import report
from peftbench.analysis.report import claims_lines
from peftbench.run import claims, job
from peftbench.run.config import as_plain, compose
from peftbench.run.record import find_completed, run_key, write_record

TINY = ["model=tiny_bert"]
INFO = {"method": "lora", "task": "sst2", "seed": 0, "run_dir": "somewhere"}


def hold_in_child(root: Path, key: str, *, exit_holding: bool) -> subprocess.Popen | int:
    """A child process takes the claim of `key`: it either keeps it (returns the running child, which exits when
    its stdin closes) or dies holding it (os._exit without release; returns its pid once dead)."""
    code = (
        "import os, sys; from peftbench.run import claims\n"
        f"c = claims.acquire({str(root)!r}, {key!r}, {INFO!r}); assert isinstance(c, claims.Claim)\n"
        "print('held', flush=True)\n"
        + ("os._exit(0)\n" if exit_holding else "sys.stdin.read(); c.release()\n")
    )  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    if exit_holding:
        child.wait(timeout=30)
        return child.pid
    return child


def test_a_live_claim_is_exclusive_and_released_with_its_file(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path, "k1", exit_holding=False)
    try:
        holder = claims.acquire(tmp_path, "k1", INFO)
        assert isinstance(holder, dict) and holder["pid"] == child.pid and holder["run_dir"] == "somewhere"
        assert claims.state(claims.claim_path(tmp_path, "k1")) == claims.IN_FLIGHT
    finally:
        child.communicate("", timeout=30)
    assert not claims.claim_path(tmp_path, "k1").exists()  # released: the file is gone
    mine = claims.acquire(tmp_path, "k1", INFO)
    assert isinstance(mine, claims.Claim) and mine.taken_over is None
    again = claims.acquire(tmp_path, "k1", INFO)  # another open file in this same process: still exclusive
    assert isinstance(again, dict) and again["pid"] == os.getpid()
    mine.release()


def test_a_claim_whose_process_died_is_abandoned_and_taken_over(tmp_path: Path) -> None:
    dead = hold_in_child(tmp_path, "k2", exit_holding=True)
    path = claims.claim_path(tmp_path, "k2")
    assert path.exists() and claims.state(path) == claims.ABANDONED
    (listed,) = claims.list_claims([tmp_path])
    assert (listed["state"], listed["pid"], listed["method"]) == (claims.ABANDONED, dead, "lora")
    assert claims_lines([tmp_path]) == [
        f"- abandoned: lora/sst2/seed 0 (pid {dead} on {listed['host']} since {listed['claimed_at']}, somewhere; "
        "rerun the sweep to redo it)"
    ]
    mine = claims.acquire(tmp_path, "k2", INFO)
    assert isinstance(mine, claims.Claim) and mine.taken_over["pid"] == dead
    assert claims.list_claims([tmp_path])[0]["state"] == claims.IN_FLIGHT
    mine.release()
    assert claims.list_claims([tmp_path]) == []


def test_report_prints_claims_but_keeps_them_out_of_summary_md(tmp_path: Path, capsys) -> None:
    """summary.md is committed and must regenerate from the records alone in a fresh clone; a claim (pid, host,
    local path) is this machine's state, so the report prints it and leaves it out of the file."""
    from tests.test_report import make_record, write

    write(tmp_path / "0", make_record("lora", 0, 0.9))
    dead = hold_in_child(tmp_path, "k3", exit_holding=True)
    assert report.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"- abandoned: lora/sst2/seed 0 (pid {dead} " in printed
    md = (tmp_path / "summary.md").read_text()
    assert "1 completed" in md and "abandoned" not in md and str(dead) not in md


def test_find_completed_searches_every_root_once(tmp_path: Path) -> None:
    write_record({"status": "completed", "run_key": "abc", "score": 0.9}, tmp_path / "sweep" / "0")
    write_record({"status": "failed", "run_key": "def"}, tmp_path / "root" / "0")
    assert find_completed([tmp_path / "root", tmp_path / "sweep"], "abc") == tmp_path / "sweep" / "0" / "result.json"
    assert find_completed([tmp_path / "root", tmp_path / "missing"], "abc") is None
    assert find_completed(tmp_path / "root", "def") is None  # a failed record is redone


def test_resume_names_a_corrupt_record_once_and_passes_over_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "result.json").write_text('{"status": "completed", "run_k')  # a half-copied record
    write_record({"status": "completed", "run_key": "abc", "score": 0.9}, tmp_path / "1")
    assert find_completed(tmp_path, "abc") == tmp_path / "1" / "result.json"
    assert find_completed(tmp_path, "xyz") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"resume passes over {tmp_path / '0' / 'result.json'}: not JSON" in err[0]


@pytest.fixture
def stub_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """`run_job` inside a Hydra multirun job (sweep folder tmp/sweep) with training stubbed out; returns the
    list the stub appends to each time a run actually trains."""
    import peftbench.run.setup
    import peftbench.run.train

    trained: list[str] = []

    def train(specs, prep, tracker, checkpoint=None):
        trained.append(specs.method.name)
        return {"metrics": {"accuracy": 0.5}, "score": 0.5, "metric": "accuracy"}

    from peftbench.space.inject import MethodReport

    report = MethodReport(method="lora", trainable=2, stored=2, paper=1, base=100, head=1, paper_share=0.01)
    monkeypatch.setattr(peftbench.run.setup, "prepare", lambda specs: SimpleNamespace(
        report=report, model=torch.nn.Linear(1, 1)))  # fmt: skip
    monkeypatch.setattr(peftbench.run.train, "train_and_evaluate", train)
    hydra_cfg = SimpleNamespace(mode="RunMode.MULTIRUN", sweep=SimpleNamespace(dir=str(tmp_path / "sweep")),
                                runtime=SimpleNamespace(output_dir=str(tmp_path / "sweep" / "0")),
                                overrides=SimpleNamespace(task=["method=lora", "seed=0"]))  # fmt: skip
    monkeypatch.setattr(job, "HydraConfig", SimpleNamespace(get=lambda: hydra_cfg))
    monkeypatch.setattr(job, "FAILED", [])
    return trained


def test_run_job_skips_live_claims_and_records_in_the_sweep_folder(stub_runs: list[str], tmp_path: Path) -> None:
    cfg = compose([*TINY, f"results_root={tmp_path / 'root'}"])
    first = job.run_job(cfg)
    assert first["status"] == "completed" and stub_runs == ["lora"]
    assert claims.list_claims([tmp_path / "root"]) == []  # a finished run leaves no claim
    # its record is in the sweep folder, outside results_root: a rerun still finds it
    assert (tmp_path / "sweep" / "0" / "result.json").exists() and not list((tmp_path / "root").rglob("result.json"))
    assert first["overrides"] == ["method=lora", "seed=0"]  # the job's own overrides, as Hydra gives them
    assert job.run_job(cfg)["status"] == "skipped" and stub_runs == ["lora"]
    # another configuration whose claim a live worker holds is skipped, and nothing is written for it
    other = compose([*TINY, "seed=1", f"results_root={tmp_path / 'root'}"])
    from peftbench.run.precision import resolve_mixed_precision

    # the key of a run holds the precision it computes in, as this machine resolves `auto`
    key = run_key(as_plain(other), resolve_mixed_precision(other.train.mixed_precision, other.train.cpu))
    held = claims.acquire(tmp_path / "root", key, INFO)
    assert isinstance(held, claims.Claim)
    assert job.run_job(other)["status"] == "in flight" and stub_runs == ["lora"]
    held.release()
    assert job.run_job(other)["status"] == "completed" and stub_runs == ["lora", "lora"]


# ----------------------------------------------------------------------------- end to end (subprocess)

SMALL = ["model=tiny_bert", "data.max_train_samples=64", "train.epochs=1", "train.progress=false", "data.held_out=16"]


def sweep(cwd: Path, glue_dir: Path, cache_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PEFTBENCH_GLUE_DIR": str(glue_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "peftbench", "-m", *SMALL, f"data.cache_dir={cache_dir}", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def completed_keys(root: Path) -> list[str]:
    records = [json.loads(p.read_text()) for p in root.rglob("result.json")]
    return sorted(r["run_key"] for r in records if r["status"] == "completed")


@pytest.mark.slow
def test_custom_sweep_dir_rerun_skips_everything(tmp_path: Path, glue_dir: Path) -> None:
    args = ["method=lora,bitfit", "hydra.sweep.dir=custom", f"results_root={tmp_path / 'elsewhere'}"]
    first = sweep(tmp_path, glue_dir, tmp_path / "cache", *args)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert len(completed_keys(tmp_path / "custom")) == 2 and not completed_keys(tmp_path / "elsewhere")
    again = sweep(tmp_path, glue_dir, tmp_path / "cache", *args)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert out.count("skipping") == 2 and len(completed_keys(tmp_path / "custom")) == 2


@pytest.mark.slow
def test_two_concurrent_identical_sweeps_run_each_configuration_once(tmp_path: Path, glue_dir: Path) -> None:
    cache = tmp_path / "cache"
    warm = sweep(tmp_path, glue_dir, cache, "method=lora", "seed=99", "results_root=warm")  # tokenise once
    assert warm.wait(timeout=600) == 0
    args = ["method=lora,bitfit,adapter", "seed=0,1", "results_root=shared"]
    workers = [sweep(tmp_path, glue_dir, cache, *args) for _ in range(2)]
    outputs = [w.communicate(timeout=900) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    keys = completed_keys(tmp_path / "shared")
    assert len(keys) == 6 and len(set(keys)) == 6  # every configuration completed, none twice
    trained = sum(out.count("accuracy=") for out, _ in outputs)
    assert trained == 6
    assert claims.list_claims([tmp_path / "shared"]) == []
    assert len({p.parent.parent for p in (tmp_path / "shared").rglob("result.json")}) <= 2


@pytest.mark.slow
def test_a_killed_sweep_leaves_an_abandoned_claim_that_the_rerun_redoes(tmp_path: Path, glue_dir: Path) -> None:
    args = ["method=lora,bitfit", "results_root=runs", "data.max_train_samples=400", "data.held_out=50"]
    first = sweep(tmp_path, glue_dir, tmp_path / "cache", *args)
    claim_dir = tmp_path / "runs" / claims.CLAIMS_DIR
    deadline = time.monotonic() + 600
    while not (claim_dir.is_dir() and any(claim_dir.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()  # kill -9 while the first run trains
    first.wait(timeout=60)
    (abandoned,) = claims.list_claims([tmp_path / "runs"])
    assert abandoned["state"] == claims.ABANDONED and abandoned["method"] == "lora"
    rerun = sweep(tmp_path, glue_dir, tmp_path / "cache", *args)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    assert "rerunning an abandoned run" in out and len(completed_keys(tmp_path / "runs")) == 2
    assert claims.list_claims([tmp_path / "runs"]) == []


def test_resume_reruns_under_fp32_a_configuration_recorded_in_bf16(tmp_path: Path) -> None:
    """The run key holds the precision as resolved: a bf16 record (`auto` on a CPU with native bf16) is not done for
    an fp32 request of the same configuration, and an fp32 record written under `auto`, before the precision
    entered the key (its stored key is the precision-blind one), is done for a pinned fp32 request."""
    config = {"seed": 0, "method": {"name": "lora"}, "task": {"name": "sst2"}, "train": {"mixed_precision": "auto"}}
    pinned = {**config, "train": {"mixed_precision": "no"}}
    blind = run_key(config)
    write_record({"status": "completed", "run_key": blind, "score": 0.9, "config": config, "mixed_precision": "bf16"},
                 tmp_path / "b")
    assert run_key(pinned, "no") != run_key(config, "bf16")
    assert find_completed(tmp_path, run_key(pinned, "no")) is None  # bf16 is not done for fp32: rerun
    assert find_completed(tmp_path, run_key(config, "bf16")) == tmp_path / "b" / "result.json"
    write_record({"status": "completed", "run_key": blind, "score": 0.9, "config": config, "mixed_precision": "no"},
                 tmp_path / "f")
    assert find_completed(tmp_path, run_key(pinned, "no")) == tmp_path / "f" / "result.json"
    assert run_key(config, "no") == run_key(pinned, "no")  # auto resolved to fp32 and a pinned fp32: one run


def test_the_run_key_holds_the_lr_a_run_trains_at_not_its_factors(tmp_path: Path) -> None:
    """A preset at 2e-3 and the same preset moved to 1e-3 with ``lr_scale=2`` train the same run (issue 25: the MAM
    and prefix presets' lrs changed after records existed, and the grid composed since would have rerun them); a
    ``train.lr`` wins over the preset's, and a different peak lr is a different run."""
    from peftbench.run.config import as_plain, compose

    old = as_plain(compose(["model=tiny_bert", "method=mam", "method.lr=0.002"]))
    new = as_plain(compose(["model=tiny_bert", "method=mam", "method.lr=0.001", "train.lr_scale=2"]))
    assert run_key(old, "no") == run_key(new, "no")
    write_record({"status": "completed", "run_key": run_key(old, "no"), "score": 0.9, "config": old,
                  "mixed_precision": "no"}, tmp_path / "old")
    assert find_completed(tmp_path, run_key(new, "no")) == tmp_path / "old" / "result.json"
    overridden = as_plain(compose(["model=tiny_bert", "method=mam", "train.lr=0.002"]))
    assert run_key(overridden, "no") == run_key(old, "no")
    for other in (["train.lr_scale=4"], ["method.lr=0.003"], ["train.lr=0.001"]):
        assert run_key(as_plain(compose(["model=tiny_bert", "method=mam", *other])), "no") != run_key(old, "no"), other
    tripled = {**old, "method": {**old["method"], "lr": 1e-4}, "train": {**old["train"], "lr_scale": 3.0}}
    three = {**old, "method": {**old["method"], "lr": 3e-4}}
    assert 1e-4 * 3 != 3e-4 and run_key(tripled, "no") == run_key(three, "no")  # the last bit of a product
