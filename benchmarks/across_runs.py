"""Ours / peer step-time and memory ratios of every saved benchmark report, side by side, with their median.

One run of ``bench_step.py`` gives each implementation a handful of steps; the A/A pairs (``frozen``, ``full``:
the same computation on both sides) show how far a single ratio moves with machine noise. Reading all the runs
of the same (method, peer) together says whether a gap is consistent or noise.

    python benchmarks/across_runs.py benchmarks/results/step_*.json > benchmarks/results/across_runs.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def collect(paths: list[Path]) -> tuple[list[str], dict[tuple[str, str], dict[str, dict[str, float]]]]:
    """Column labels (one per file × block) and, per (method, peer), the ratios of each column."""
    columns: list[str] = []
    cells: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        for block in report["blocks"]:
            procs = block.get("processes", 1)
            label = (f"{path.stem} ({block['shape']}@{block['seq']}, "
                     f"{f'{procs} process sets × ' if procs > 1 else ''}{block['rounds']} rounds × {block['steps']} steps)")
            columns.append(label)
            for row in block["training"]:
                for peer, ratio in row["ratios"].items():
                    cells.setdefault((row["method"], peer), {})[label] = ratio
    return columns, cells


def table(columns: list[str], cells: dict[tuple[str, str], dict[str, dict[str, float]]], key: str) -> list[str]:
    short = [f"r{i + 1}" for i in range(len(columns))]
    lines = ["| method | peer | " + " | ".join(short) + " | median | max |", "|---|---|" + "---|" * (len(columns) + 2)]
    for (method, peer), by_run in cells.items():
        values = [by_run[c][key] for c in columns if c in by_run and by_run[c].get(key) is not None]
        row = [f"{by_run[c][key]:.3f}" if c in by_run and by_run[c].get(key) is not None else "" for c in columns]
        lines.append(f"| {method} | {peer} | " + " | ".join(row)
                     + f" | **{statistics.median(values):.3f}** | {max(values):.3f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="bench_step.py --json files")
    args = parser.parse_args(argv)
    columns, cells = collect(sorted(args.reports))
    lines = ["Runs:", ""] + [f"- r{i + 1}: {c}" for i, c in enumerate(columns)]
    lines += ["", "### ours / peer, median step time", ""] + table(columns, cells, "time")
    lines += ["", "### ours / peer, process CPU time per step", ""] + table(columns, cells, "cpu_time")
    lines += ["", "### ours / peer, peak memory of training", ""] + table(columns, cells, "memory")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
