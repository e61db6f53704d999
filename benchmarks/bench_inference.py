"""Inference cost per method: forward time (eval, no_grad) over the frozen base model's, for merged LoRA, unmerged
LoRA, Houlsby adapters, parallel adapters and MAM, alternating all of them in rounds in separate worker processes
(`bench_step.alternate`), so that machine noise falls on all alike.

    python benchmarks/bench_inference.py [--shapes minilm,roberta_base] [--seqs 64,128] [--rounds 6]

Writes benchmarks/results/inference-<time>.json and .md (the command first). Run it on a quiet machine: a sweep or
tests running beside it distort every figure. Each run of `python -m peftbench` also measures its own ratio
(`peftbench.run.latency`; the report's "Cost per cell"), with fewer batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import ADAPTERS_PYTHON, bench_inference, environment  # noqa: E402

METHODS = ("adapter", "pa", "mam")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="minilm,roberta_base")
    parser.add_argument("--seqs", default="64,128")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="timed forward passes per model per round")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    report = {"command": " ".join(["python", "benchmarks/bench_inference.py", *(argv or sys.argv[1:])]),
              "environment": environment(ADAPTERS_PYTHON), "blocks": []}
    lines = [f"`{report['command']}`", "", "| shape | seq | " + " | ".join(["lora_merged", "lora_unmerged", *METHODS])
             + " | base ms |", "|---|---|" + "---|" * (3 + len(METHODS))]
    out = Path(__file__).resolve().parent / "results" / f"inference-{time.strftime('%Y%m%d-%H%M%S')}"
    for shape in args.shapes.split(","):
        for seq in (int(s) for s in args.seqs.split(",")):
            block = bench_inference(shape, args.batch, seq, args.rounds, args.steps, args.warmup, "cpu", METHODS)
            report["blocks"].append({"shape": shape, "seq": seq, **block})
            ratios = block["ratios"]
            base_ms = 1000 * block["results"]["base"]["median_s"]
            row = " | ".join(f"{ratios.get(k, float('nan')):.3f}" for k in ["lora_merged", "lora_unmerged", *METHODS])
            lines.append(f"| {shape} | {seq} | {row} | {base_ms:.1f} |")
            print(lines[-1], flush=True)
            out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))  # after every block
            out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json/.md")


if __name__ == "__main__":
    main()
