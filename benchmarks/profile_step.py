"""Where our training step spends its time: torch.profiler over a few steps of a method, against the frozen backbone.

    python benchmarks/profile_step.py --methods lora,prefix,mam --shape minilm --seq 64

For each method the top operators by self CPU time are printed, then the difference per operator against the
frozen backbone (only the head trains) at the same shape: what the method adds to a step. ``--impl peft`` or
``--impl hf`` profiles a peer the same way (``adapters`` needs its own interpreter:
``.venv-adapters/bin/python benchmarks/profile_step.py --impl adapters ...``).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_worker import Bench  # noqa: E402


def profile_method(impl: str, method: str, shape: str, batch: int, seq: int, steps: int,
                   warmup: int) -> tuple[dict[str, tuple[float, int]], float, str]:
    """Per-operator (self CPU ms per step, calls per step), the wall ms per step, and the printed top table."""
    bench = Bench({"impl": impl, "method": method, "shape": shape, "batch": batch, "seq": seq})
    bench.run(warmup)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = sum(bench.run(steps)["times"]) / steps
    averages = prof.key_averages()
    ops = {e.key: (e.self_cpu_time_total / 1000 / steps, e.count // steps) for e in averages}
    table = averages.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40)
    return ops, 1000 * wall, table


def difference(ops: dict[str, tuple[float, int]], base: dict[str, tuple[float, int]], rows: int = 14) -> str:
    """Operators whose self time grew most against the baseline (ms per step, calls per step)."""
    delta = defaultdict(float)
    for key in set(ops) | set(base):
        delta[key] = ops.get(key, (0.0, 0))[0] - base.get(key, (0.0, 0))[0]
    lines = ["| operator | +ms/step | calls/step (method / frozen) |", "|---|---|---|"]
    for key in sorted(delta, key=lambda k: -abs(delta[k]))[:rows]:
        lines.append(f"| {key} | {delta[key]:+.1f} | {ops.get(key, (0, 0))[1]} / {base.get(key, (0, 0))[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="lora,prefix,mam")
    parser.add_argument("--impl", default="ours", choices=("ours", "peft", "hf", "adapters"))
    parser.add_argument("--shape", default="minilm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--tables", action="store_true", help="also print each method's full top-operator table")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    base, base_wall, base_table = profile_method("ours" if args.impl == "adapters" else args.impl, "frozen",
                                                 args.shape, args.batch, args.seq, args.steps, args.warmup)
    print(f"## frozen backbone ({args.shape}, batch {args.batch}, seq {args.seq}): {base_wall:.0f} ms/step")
    if args.tables:
        print(base_table)
    for method in args.methods.split(","):
        ops, wall, table = profile_method(args.impl, method, args.shape, args.batch, args.seq, args.steps,
                                          args.warmup)
        print(f"\n## {args.impl} {method}: {wall:.0f} ms/step under the profiler ({wall / base_wall:.2f}× frozen)")
        if args.tables:
            print(table)
        print(difference(ops, base))


if __name__ == "__main__":
    main()
