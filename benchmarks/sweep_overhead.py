"""Sweep efficiency: how much of a small sweep's wall time is spent outside training and evaluation.

    PEFTBENCH_GLUE_DIR=/work/shared/glue HF_HUB_OFFLINE=1 WANDB_MODE=disabled python benchmarks/sweep_overhead.py

Runs ``python -m peftbench -m method=lora,bitfit seed=0,1 model=tiny_bert task=rte ...`` (4 runs) into a temporary
results folder with a fresh tokenisation cache, then reads each run's ``result.json``:
``time_s`` (the whole job), ``throughput.setup_time_s`` (data, tokenisation, model, method),
``throughput.train_time_s``, ``throughput.eval_time_s``; "other" is the rest of the job (accelerate setup, the
per-epoch selection evaluation, the record). The process row adds what no record sees: interpreter start,
imports, Hydra, and validating every combination of the sweep. The first run tokenises RTE; the others must
load it from the cache (``peftbench.run.tokenisation.tokenize_glue`` logs "cache hit" in each job's log).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["method=lora,bitfit", "seed=0,1", "model=tiny_bert", "task=rte", "data.max_train_samples=64",
         "train.epochs=1", "train.progress=false"]


#: Functions whose cumulative time explains the overhead (file suffix, function name) in a ``--profile`` run.
WHERE = [("validate.py", "validate_command_line"), ("job.py", "run_job"), ("record.py", "git_commit"),
         ("record.py", "versions"), ("record.py", "find_completed"), ("record.py", "write_record"),
         ("setup.py", "prepare"), ("data.py", "load_glue"), ("tokenisation.py", "tokenize_glue"),
         ("models.py", "load_tokenizer"), ("models.py", "load_model"), ("inject.py", "apply_method"),
         ("train.py", "train_and_evaluate"), ("accelerator.py", "__init__"), ("accelerator.py", "prepare"),
         ("evaluate.py", "evaluate_split"), ("metrics.py", "load_glue_metric"), ("<frozen importlib._bootstrap>", "_find_and_load")]


def run_sweep(workdir: Path, overrides: list[str], cache_dir: Path | None,
              profile: Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run the sweep as a user would, into ``workdir``; returns the process wall time and the process.
    With ``profile``, the process runs under cProfile (slower) and writes its statistics there."""
    env = dict(os.environ)
    for key, value in (("HF_HUB_OFFLINE", "1"), ("WANDB_MODE", "disabled"), ("HF_DATASETS_OFFLINE", "1")):
        env.setdefault(key, value)
    if "PEFTBENCH_GLUE_DIR" not in env and Path("/work/shared/glue").is_dir():
        env["PEFTBENCH_GLUE_DIR"] = "/work/shared/glue"
    cache = [f"data.cache_dir={cache_dir}"] if cache_dir is not None else []
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
    command = [sys.executable, *profiler, "-m", "peftbench", "-m", *overrides, f"results_root={workdir / 'runs'}",
               *cache]
    start = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
    return time.perf_counter() - start, process


def job_log_says_cache_hit(run_dir: Path) -> bool | None:
    """Whether the job's log has the tokenisation cache hit line (None when Hydra wrote no log)."""
    logs = list(run_dir.glob("*.log"))
    if not logs:
        return None
    text = "".join(p.read_text() for p in logs)
    return "cache hit" in text


def overhead_table(workdir: Path, wall: float) -> tuple[list[dict], str]:
    records = sorted((workdir / "runs").rglob("result.json"), key=lambda p: p.parent.name)
    rows = []
    for path in records:
        record = json.loads(path.read_text())
        t = record.get("throughput") or {}
        total = record["time_s"]
        setup, train, evaluate = t.get("setup_time_s", 0.0), t.get("train_time_s", 0.0), t.get("eval_time_s", 0.0)
        rows.append({"run": path.parent.name, "status": record["status"], "time_s": total, "setup_s": setup,
                     "train_s": train, "eval_s": evaluate, "other_s": total - setup - train - evaluate,
                     "outside_s": total - train - evaluate, "cache_hit": job_log_says_cache_hit(path.parent)})
    lines = ["| run | status | job s | setup s | train s | eval s | other s | outside train+eval s | cache hit |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['status']} | {r['time_s']:.2f} | {r['setup_s']:.2f} | {r['train_s']:.2f} | "
                     f"{r['eval_s']:.2f} | {r['other_s']:.2f} | {r['outside_s']:.2f} | {r['cache_hit']} |")
    jobs = sum(r["time_s"] for r in rows)
    busy = sum(r["train_s"] + r["eval_s"] for r in rows)
    n = max(len(rows), 1)
    lines += ["", f"process wall {wall:.2f} s for {len(rows)} runs; Σ job time {jobs:.2f} s; "
              f"process overhead outside jobs (start, imports, Hydra, validation) {wall - jobs:.2f} s; "
              f"time outside training and evaluation {wall - busy:.2f} s = {(wall - busy) / n:.2f} s per run "
              f"({(wall - busy) / wall:.0%} of the wall time)"]
    return rows, "\n".join(lines)


def profile_table(path: Path, runs: int) -> str:
    """Cumulative seconds of the functions in :data:`WHERE` (imports: the outermost ``_find_and_load`` calls)."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    lines = ["| function | calls | cumulative s | per run s |", "|---|---|---|---|"]
    for suffix, name in WHERE:
        found = [(v[1], v[3]) for (file, _line, fn), v in stats.items() if fn == name and file.endswith(suffix)]
        if found:
            calls, cum = sum(c for c, _ in found), sum(t for _, t in found)
            label = "imports (outermost)" if name == "_find_and_load" else f"{Path(suffix).stem}.{name}"
            lines.append(f"| {label} | {calls} | {cum:.2f} | {cum / max(runs, 1):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="use the default tokenisation cache instead of a fresh one (then run 1 may hit too)")
    parser.add_argument("--profile", action="store_true",
                        help="run the sweep a second time under cProfile and break the overhead down by function")
    parser.add_argument("overrides", nargs="*", default=SWEEP, help="the sweep's overrides")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cache = None if args.shared_cache else workdir / "cache"
        wall, process = run_sweep(workdir, args.overrides, cache)
        print(f"$ python -m peftbench -m {' '.join(args.overrides)}   (exit {process.returncode})")
        if process.returncode != 0:
            print(process.stderr[-3000:], file=sys.stderr)
        rows, table = overhead_table(workdir, wall)
        print(table)
        if cache is not None:
            entries = [p.name for p in cache.rglob("dataset_dict.json")]
            print(f"tokenisation cache: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} written for "
                  f"{len(rows)} runs (one tokenisation, the other runs loaded it)")
        if process.returncode != 0:
            raise SystemExit(process.returncode)
        if args.profile:
            again = workdir / "profiled"
            again.mkdir(exist_ok=True)
            stats = again / "sweep.prof"
            wall, process = run_sweep(again, args.overrides, again / "cache", profile=stats)
            print(f"\nunder cProfile (slower; a fresh cache again): wall {wall:.2f} s, exit {process.returncode}")
            print(profile_table(stats, len(rows)))


if __name__ == "__main__":
    main()
