"""The pilot's learning curves (issue 9, point 4): dev score against training examples, per task and method.

    python experiments/pilot/curve.py [RECORDS_DIR] [--out DIR]

Reads every ``result.json`` under RECORDS_DIR (default: ``experiments/pilot/records``) and writes, into DIR
(default: ``experiments/pilot``), ``curve.csv`` (one row per run: task, method, examples trained on, epochs,
score ×100, the majority-class baseline of its dev set ×100, training examples/s) and ``curve.png`` (one panel per
task; x = examples trained on, log axis; a line per method × epochs; the dashed line is the constant predictor:
the majority class for accuracy, 0 for correlations and MCC).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from peftbench.analysis.findings import majority_baseline

HERE = Path(__file__).resolve().parent


def load(records_dir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(records_dir.rglob("result.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("status") != "completed":
            continue
        rows.append({
            "task": record["task"], "method": record["method"], "metric": record["metric"],
            "examples": record["train_examples"], "epochs": record["config"]["train"]["epochs"],
            "max_train_samples": record["config"]["data"]["max_train_samples"], "lr": record["lr"],
            "seed": record["seed"], "score": record["score"] * 100,
            "majority": majority_baseline(record["metric"], record["predictions"]["validation"]["references"]),
            "train_examples_per_s": record["throughput"]["train_examples_per_s"], "time_s": record["time_s"],
        })  # fmt: skip
    return pd.DataFrame(rows).sort_values(["task", "method", "epochs", "examples"], ignore_index=True)


def plot(curve: pd.DataFrame, path: Path) -> None:
    tasks = sorted(curve["task"].unique())
    fig = Figure(figsize=(4.2 * len(tasks), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, task in zip(fig.subplots(1, len(tasks), squeeze=False).ravel(), tasks, strict=True):
        sub = curve[curve["task"] == task]
        for (method, epochs), line in sub.groupby(["method", "epochs"]):
            line = line.groupby("examples", as_index=False)["score"].mean()
            ax.plot(line["examples"], line["score"], "o-", label=f"{method}, {epochs} ep")
        ax.axhline(sub["majority"].iloc[0], ls="--", c="grey", label="constant predictor")
        ax.set_xscale("log")
        ax.set_xlabel("training examples (after 10% held out)")
        ax.set_ylabel(f"dev {sub['metric'].iloc[0]} ×100")
        ax.set_title(task)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=130)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="?", type=Path, default=HERE / "records")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    curve = load(args.records)
    args.out.mkdir(parents=True, exist_ok=True)
    curve.to_csv(args.out / "curve.csv", index=False, float_format="%.4g")
    plot(curve, args.out / "curve.png")
    print(curve.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


if __name__ == "__main__":
    main()
