"""End-to-end training speed: the old default (random batches, fp32 on every CPU) against the new one
(length-grouped batches, ``mixed_precision: auto``), on real GLUE data with the real training loop.

    python benchmarks/bench_e2e.py --markdown benchmarks/results/e2e_sst2_lora.md --json e2e.json

Each round runs one full short run per variant (same seed within a round, a new seed per round), the variant
order rotated every round so that machine drift hits both alike; reported per variant: training examples/s
(training loop only: the record's ``throughput.train_examples_per_s``), the padding ratio it actually processed
(tokens incl. padding / real tokens), and the dev score, with the ratio new/old. A second table gives, for every
local GLUE task, the padding ratio of one epoch's batches in random and in grouped order (no training). A third
times a LoRA step in fp32 and in bf16 autocast on this CPU, which is what ``auto`` decides on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from peftbench.run.batching import padding_ratio, row_lengths, train_sampler
from peftbench.run.config import compose, to_specs
from peftbench.run.data import load_glue
from peftbench.run.models import load_tokenizer
from peftbench.run.precision import cpu_supports_bf16, resolve_mixed_precision
from peftbench.run.setup import prepare
from peftbench.run.tokenisation import tokenize_glue
from peftbench.run.train import train_and_evaluate

VARIANTS = {
    "old default (random batches, fp32)": ["train.group_by_length=false", "train.mixed_precision=no"],
    "new default (grouped, auto precision)": ["train.group_by_length=true", "train.mixed_precision=auto"],
}
PADDING_TASKS = ("sst2", "mrpc", "rte", "cola", "stsb", "wnli")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def one_run(overrides: list[str]) -> dict:
    specs = to_specs(compose(overrides))
    record = train_and_evaluate(specs, prepare(specs))
    return {"examples_per_s": record["throughput"]["train_examples_per_s"],
            "train_time_s": record["throughput"]["train_time_s"],
            "padding_ratio": record["throughput"]["padding_ratio"], "score": record["score"],
            "mixed_precision": record["mixed_precision"]}


def end_to_end(args) -> dict[str, list[dict]]:
    base = [f"method={args.method}", f"task={args.task}", f"model={args.model}",
            f"data.max_train_samples={args.samples}", f"train.epochs={args.epochs}", "train.progress=false"]
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            result = one_run([*base, *VARIANTS[name], f"seed={args.seed + round_}"])
            result["seed"] = args.seed + round_
            runs[name].append(result)
            print(f"round {round_} {name}: {result['examples_per_s']:.1f} ex/s, padding "
                  f"{result['padding_ratio']:.2f}x, score {result['score']:.4f}", flush=True)
    return runs


def padding_table(model: str, batch_size: int, seed: int) -> list[dict]:
    tokenizer = load_tokenizer(to_specs(compose([f"model={model}"])).model)
    rows = []
    for task in PADDING_TASKS:
        max_length = to_specs(compose([f"task={task}"])).task.max_length
        train = tokenize_glue(load_glue(task, "local", None, ["train"]), tokenizer, task, max_length)["train"]
        lengths = row_lengths(train)
        ratios = {grouped: padding_ratio(lengths, list(train_sampler(lengths, batch_size, seed, grouped)), batch_size)
                  for grouped in (False, True)}
        rows.append({"task": task, "rows": len(lengths), "random": ratios[False], "grouped": ratios[True]})
        print(f"padding {task}: random {ratios[False]:.2f}x, grouped {ratios[True]:.3f}x", flush=True)
    return rows


def bf16_probe(steps: int = 3) -> dict:
    """Median LoRA step (MiniLM shape, batch 32, length 64) in fp32 and in bf16 autocast, alternating."""
    from peftbench import apply_method, load_method
    from peftbench.run.models import load_model

    model = load_model(to_specs(compose(["model=minilm"])).model, num_labels=2)
    apply_method(model, load_method("lora"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)
    ids = torch.randint(1000, 20000, (32, 64), generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(32, dtype=torch.long)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(False), step(True)  # warm-up
    times = {False: [], True: []}
    for _ in range(steps):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
    return {"fp32_s": fp32, "bf16_s": bf16, "bf16_over_fp32": bf16 / fp32, "cpu_supports_bf16": cpu_supports_bf16(),
            "auto_resolves_to": resolve_mixed_precision("auto", force_cpu=True)}


def markdown(report: dict) -> str:
    a = report["args"]
    lines = [f"# End-to-end training speed: {a['method']} on {a['task']}, {a['model']}", "",
             f"Command: `python benchmarks/bench_e2e.py {report['argv']}`", "",
             f"Machine: {report['machine']}, torch {torch.__version__}, {torch.get_num_threads()} threads. "
             f"{a['samples']} train examples (10% held out), {a['epochs']} epoch(s), batch 32, {a['rounds']} rounds "
             f"(seeds {a['seed']}–{a['seed'] + a['rounds'] - 1}), variant order rotated per round.", "",
             "| variant | precision | train ex/s (median) | per round | padding ratio | dev score (mean ± std) |",
             "|:---|:---|---:|:---|---:|---:|"]
    medians = {}
    for name, runs in report["runs"].items():
        rates = [r["examples_per_s"] for r in runs]
        scores = [r["score"] * 100 for r in runs]
        medians[name] = statistics.median(rates)
        spread = f"{statistics.mean(scores):.2f} ± {statistics.stdev(scores):.2f}" if len(scores) > 1 else \
            f"{scores[0]:.2f}"
        lines.append(f"| {name} | {runs[0]['mixed_precision']} | {medians[name]:.1f} | "
                     f"{', '.join(f'{x:.1f}' for x in rates)} | {statistics.median(r['padding_ratio'] for r in runs):.2f} "
                     f"| {spread} |")
    old, new = list(medians.values())
    paired = [n["examples_per_s"] / o["examples_per_s"] for o, n in zip(*report["runs"].values(), strict=True)]
    lines += ["", f"**Speed-up new / old: {new / old:.2f}×** (ratio of medians; per round "
              f"{', '.join(f'{x:.2f}' for x in paired)}).", ""]
    if report.get("padding"):
        lines += ["## Padding ratio per task (one epoch of train, batch 32, tokens processed / real tokens)", "",
                  "| task | train rows | random batches | grouped batches |", "|:---|---:|---:|---:|"]
        lines += [f"| {r['task']} | {r['rows']} | {r['random']:.2f}× | {r['grouped']:.3f}× |" for r in report["padding"]]
        lines.append("")
    if report.get("bf16"):
        b = report["bf16"]
        lines += ["## bf16 autocast on this CPU (LoRA step, MiniLM, batch 32, length 64)", "",
                  f"fp32 {b['fp32_s']:.3f} s, bf16 autocast {b['bf16_s']:.3f} s: bf16/fp32 = "
                  f"**{b['bf16_over_fp32']:.2f}×**. Native bf16 (AMX or AVX512-BF16): {b['cpu_supports_bf16']}; "
                  f"`mixed_precision: auto` resolves to `{b['auto_resolves_to']}` here.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-padding-table", action="store_true")
    parser.add_argument("--no-bf16-probe", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report = {"args": vars(args) | {"json": None, "markdown": None},
              "argv": " ".join(sys.argv[1:]), "machine": f"{cpu_name()}, {os.cpu_count()} cores"}
    report["padding"] = None if args.no_padding_table else padding_table(args.model, 32, args.seed)
    report["bf16"] = None if args.no_bf16_probe else bf16_probe()
    report["runs"] = end_to_end(args)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
