"""Training-step and inference benchmark: our methods against Hugging Face ``peft``, AdapterHub ``adapters`` and
plain transformers, on the same model shape, batch and sequence length.

    python benchmarks/bench_step.py                       # CPU default: MiniLM @ 64, 128; roberta_base @ 64
    python benchmarks/bench_step.py --full --device cuda  # every shape × sequence length (on a GPU)

Each (method, implementation) runs in its own worker process (``step_worker.py``), kept alive for the whole
method and asked for ``--steps`` steps per round; rounds alternate between implementations (A B A B …) after
``--warmup`` discarded steps, so slow drift of the machine hits both sides alike. A step is forward + backward +
AdamW step with gradients zeroed. Reported: the median step time, examples/s, the ratio ours/peer, and the peak
memory of the steps (see ``step_worker`` for how it is measured). The ``adapters`` workers run in the
``.venv-adapters`` interpreter (``benchmarks/requirements-adapters.txt``); without it that column is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "step_worker.py"
ADAPTERS_PYTHON = ROOT / ".venv-adapters" / "bin" / "python"

#: Which peers implement each of our presets. References: ``frozen`` (only the classification head trains: no
#: backward through the encoder), ``backprop`` (the same trainable parameters, but the embeddings' output requires
#: grad, so the backward computes input gradients through every frozen layer and no weight gradient: the floor of
#: any method with a module in the bottom layer) and ``layernorm`` (LayerNorms + head: that backward plus the
#: LayerNorms' weight gradients).
PEERS: dict[str, tuple[str, ...]] = {
    "frozen": ("hf",),
    "backprop": ("hf",),
    "layernorm": ("hf",),
    "full": ("hf",),
    "bitfit": ("hf",),
    "adapter": ("adapters",),
    "pa": ("adapters",),
    "scaled_pa": ("adapters",),
    "prefix": ("peft", "adapters"),
    "prompt": ("peft",),
    "ptuning": ("peft",),
    "ptuning_v2": ("peft",),
    "lora": ("peft", "adapters"),
    "mam": ("adapters",),
}
DEFAULT_METHODS = ("frozen", "full", "adapter", "pa", "scaled_pa", "prefix", "prompt", "ptuning", "lora", "mam")


class WorkerError(RuntimeError):
    """A worker failed to build its model or to run its steps."""


class Worker:
    """One implementation of one method in a child process, answering JSON-line requests."""

    def __init__(self, python: str, request: dict[str, Any]) -> None:
        """Start the process and send the build request; :meth:`ready` waits for the answer (so several
        workers import and build at once)."""
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env)
        self.name = f"{request['impl']}/{request['method']}"
        self.info: dict[str, Any] = {}
        self.send({"op": "build", **request})

    def ready(self) -> dict[str, Any]:
        self.info = self.receive()
        return self.info

    def send(self, request: dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-2000:]
            raise WorkerError(f"{self.name}: worker exited (rc={self.proc.wait()}): {tail.strip()}")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise WorkerError(f"{self.name}: {answer['error']}")
        return answer

    def run(self, steps: int) -> dict[str, Any]:
        self.send({"op": "run", "steps": steps})
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.log.close()


@dataclass
class Timing:
    """The timed steps and the memory of one implementation of one method at one shape (over all its processes)."""

    impl: str
    info: dict[str, Any]
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    process_medians: list[float] = field(default_factory=list)
    peaks_delta_mib: list[float] = field(default_factory=list)
    peaks_mib: list[float] = field(default_factory=list)

    def summary(self, batch: int) -> dict[str, Any]:
        median = statistics.median(self.times)
        q = statistics.quantiles(self.times, n=4) if len(self.times) >= 2 else [median] * 3
        return {"impl": self.impl, "median_s": median, "q1_s": q[0], "q3_s": q[2], "n": len(self.times),
                "median_cpu_s": statistics.median(self.cpu_times), "process_median_s": self.process_medians,
                "examples_per_s": batch / median, "peak_delta_mib": statistics.median(self.peaks_delta_mib),
                "peak_mib": statistics.median(self.peaks_mib), **self.info}


def python_for(impl: str, adapters_python: Path) -> str | None:
    if impl == "adapters":
        return str(adapters_python) if adapters_python.exists() else None
    return sys.executable


def alternate(requests: dict[str, dict[str, Any]], pythons: dict[str, str], rounds: int, steps: int,
              warmup: int, batch: int, processes: int = 1) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Build one worker per implementation, discard ``warmup`` steps each, then ``rounds`` × (A B …) of
    ``steps`` steps, the order rotated each round (A B C, B C A, C A B, …) so no implementation always runs right
    after the same neighbour. With ``processes`` > 1 all of that is repeated with fresh workers, because a
    process keeps its own memory layout for its whole life (A/A pairs of full fine-tuning differ by up to 15 %
    between two processes). Returns the summaries by implementation (steps pooled over processes, memory the
    median of the processes' peaks), and the errors of those that failed."""
    errors: dict[str, str] = {}
    timings: dict[str, Timing] = {}
    for _ in range(processes):
        _one_process_set({k: r for k, r in requests.items() if k not in errors}, pythons, rounds, steps, warmup,
                         timings, errors)
    return {key: t.summary(batch) for key, t in timings.items() if key not in errors}, errors


def _one_process_set(requests: dict[str, dict[str, Any]], pythons: dict[str, str], rounds: int, steps: int,
                     warmup: int, timings: dict[str, Timing], errors: dict[str, str]) -> None:
    workers = {key: Worker(pythons[key], request) for key, request in requests.items()}
    first = {key: len(timings[key].times) if key in timings else 0 for key in workers}

    def attempt(key: str, call) -> dict[str, Any] | None:
        try:
            return call()
        except WorkerError as err:
            errors[key] = str(err)
            workers.pop(key).close()
            return None

    try:
        for key in list(workers):
            info = attempt(key, workers[key].ready)
            if info is not None:
                timings.setdefault(key, Timing(requests[key]["impl"], info))
        for key in list(workers):
            attempt(key, lambda w=workers[key]: w.run(warmup))
        peaks: dict[str, dict[str, Any]] = {}
        for i in range(rounds):
            keys = list(workers)
            if not keys:
                break
            for key in keys[i % len(keys):] + keys[: i % len(keys)]:  # rotate who goes first: no order bias
                answer = attempt(key, lambda w=workers[key]: w.run(steps))
                if answer is not None:
                    timings[key].times += answer["times"]
                    timings[key].cpu_times += answer["cpu_times"]
                    peaks[key] = answer
        for key in workers:
            timing = timings[key]
            if key in peaks:
                timing.process_medians.append(statistics.median(timing.times[first[key]:]))
                timing.peaks_delta_mib.append(peaks[key]["peak_delta_mib"])
                timing.peaks_mib.append(peaks[key]["peak_mib"])
    finally:
        for worker in workers.values():
            worker.close()


def bench_training(method: str, impls: list[str], shape: str | dict, batch: int, seq: int, rounds: int, steps: int,
                   warmup: int, device: str, adapters_python: Path, frozen_ref: bool = True,
                   processes: int = 1) -> dict[str, Any]:
    """Ours against each requested peer for one method: medians, ratios ours/peer, parameter counts, memory.

    With ``frozen_ref`` two more workers join the alternation: our frozen backbone (only the head trains) and our
    backprop floor (the frozen backbone with the backward through it; see ``PEERS``), so the overhead of the method
    over each (``overhead``, ``overhead_backprop``: step time ÷ the reference's step) is measured side by side.
    """
    wanted = ["ours", *[p for p in PEERS[method] if p in impls]]
    pythons = {impl: python_for(impl, adapters_python) for impl in wanted}
    skipped = {impl: f"no interpreter at {adapters_python} (see benchmarks/requirements-adapters.txt)"
               for impl, py in pythons.items() if py is None}
    requests = {impl: {"impl": impl, "method": method, "shape": shape, "batch": batch, "seq": seq,
                       "device": device, "seed": 0} for impl in wanted if impl not in skipped}
    references = ("frozen", "backprop") if frozen_ref else ()
    for ref in references:
        if method != ref:
            requests[f"{ref}_ref"] = {**requests["ours"], "method": ref}
            pythons[f"{ref}_ref"] = sys.executable
    results, errors = alternate(requests, pythons, rounds, steps, warmup, batch, processes)
    row: dict[str, Any] = {"method": method, "batch": batch, "seq": seq, "results": results,
                           "errors": {**skipped, **errors}, "ratios": {}, "overhead": {}, "overhead_backprop": {}}
    found = {ref: results.pop(f"{ref}_ref", None) or (results.get("ours") if method == ref else None)
             for ref in references}
    for ref, key in (("frozen", "overhead"), ("backprop", "overhead_backprop")):
        if found.get(ref) is not None:
            row[f"{ref}_ref_s"] = found[ref]["median_s"]
            row[key] = {impl: r["median_s"] / found[ref]["median_s"] for impl, r in results.items()}
    if "ours" in results:
        ours = results["ours"]
        for impl, peer in results.items():
            if impl != "ours":
                row["ratios"][impl] = {
                    "time": ours["median_s"] / peer["median_s"],
                    "cpu_time": ours["median_cpu_s"] / peer["median_cpu_s"],
                    "memory": ours["peak_delta_mib"] / peer["peak_delta_mib"] if peer["peak_delta_mib"] > 0 else None,
                    "trainable": ours["trainable"] / peer["trainable"],
                }
    return row


def bench_inference(shape: str | dict, batch: int, seq: int, rounds: int, steps: int, warmup: int,
                    device: str, methods: tuple[str, ...] = ()) -> dict[str, Any]:
    """Forward-only latency (eval, no_grad): base model, our LoRA merged into the weights, and unmerged, and any
    other of our `methods` (e.g. adapter, pa, mam: what adapters' extra depth costs)."""
    common = {"shape": shape, "batch": batch, "seq": seq, "device": device, "seed": 0, "mode": "infer"}
    requests = {"base": {"impl": "hf", "method": "frozen", **common},
                "lora_merged": {"impl": "ours", "method": "lora", "merge": True, **common},
                "lora_unmerged": {"impl": "ours", "method": "lora", **common},
                **{m: {"impl": "ours", "method": m, **common} for m in methods}}
    results, errors = alternate(requests, dict.fromkeys(requests, sys.executable), rounds, steps, warmup, batch)
    base = results.get("base", {}).get("median_s")
    ratios = {k: r["median_s"] / base for k, r in results.items() if base and k != "base"}
    return {"batch": batch, "seq": seq, "results": results, "errors": errors, "ratios": ratios}


def environment(adapters_python: Path) -> dict[str, Any]:
    from importlib import metadata

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    out: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
    for name in ("torch", "transformers", "peft"):
        out[name] = metadata.version(name)
    if adapters_python.exists():
        code = "from importlib import metadata as m; print(m.version('adapters'), m.version('transformers'))"
        found = subprocess.run([str(adapters_python), "-c", code], capture_output=True, text=True)
        if found.returncode == 0:
            out["adapters"], out["adapters_transformers"] = found.stdout.split()
    return out


@dataclass
class Settings:
    """What to run (the command-line options of :func:`main`)."""

    shapes: list[str] = field(default_factory=lambda: ["minilm", "roberta_base"])
    seqs: list[int] = field(default_factory=lambda: [64, 128])
    batch: int = 32
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    impls: list[str] = field(default_factory=lambda: ["ours", "peft", "adapters", "hf"])
    rounds: int = 5
    large_rounds: int = 2
    steps: int = 2
    warmup: int = 2
    device: str = "cpu"
    full: bool = False
    infer: bool = True
    frozen_ref: bool = True
    processes: int = 1
    threads: int | None = None
    adapters_python: Path = ADAPTERS_PYTHON


def run(cfg: Settings, log=print, save=None) -> dict[str, Any]:
    """The whole benchmark: every shape × sequence length (roberta_base @ >64 on CPU only with ``full``).
    ``save(report)`` is called after each method, so an interrupted run keeps what it measured."""
    if cfg.threads:
        os.environ["BENCH_THREADS"] = str(cfg.threads)  # read by every worker
    report: dict[str, Any] = {"environment": environment(cfg.adapters_python), "device": cfg.device,
                              "threads": cfg.threads, "blocks": []}
    for shape in cfg.shapes:
        for seq in cfg.seqs:
            if shape == "roberta_base" and seq > 64 and cfg.device == "cpu" and not cfg.full:
                continue
            n = cfg.large_rounds if shape == "roberta_base" else cfg.rounds
            block: dict[str, Any] = {"shape": shape, "seq": seq, "rounds": n, "steps": cfg.steps,
                                     "processes": cfg.processes, "training": []}
            report["blocks"].append(block)
            for method in cfg.methods:
                row = bench_training(method, cfg.impls, shape, cfg.batch, seq, n, cfg.steps, cfg.warmup, cfg.device,
                                     cfg.adapters_python, cfg.frozen_ref, cfg.processes)
                block["training"].append(row)
                log(format_row(shape, row))
                if save is not None:
                    save(report)
            if cfg.infer:
                block["inference"] = bench_inference(shape, cfg.batch, seq, 3 * n, cfg.steps, cfg.warmup, cfg.device)
                log(f"{shape}@{seq} inference: {block['inference']['ratios']}")
                if save is not None:
                    save(report)
    return report


def format_row(shape: str, row: dict[str, Any]) -> str:
    parts = [f"{shape}@{row['seq']} {row['method']}:"]
    for impl, r in row["results"].items():
        parts.append(f"{impl} {1000 * r['median_s']:.0f} ms ({r['trainable']:,} params, +{r['peak_delta_mib']:.0f} MiB)")
    parts += [f"ours/{impl} {v['time']:.3f}" for impl, v in row["ratios"].items()]
    parts += [f"{impl} FAILED: {e}" for impl, e in row["errors"].items()]
    return " ".join(parts)


def _ms(seconds: float | None) -> str:
    return f"{1000 * seconds:.0f}" if seconds is not None else "–"


def _overheads(overhead: dict[str, float]) -> str:
    """``ours × ref | peers × ref`` cells."""
    ours = f"{overhead['ours']:.3f}" if "ours" in overhead else "–"
    return f"{ours} | " + (", ".join(f"{k} {v:.3f}" for k, v in overhead.items() if k != "ours") or "–")


def markdown(report: dict[str, Any]) -> str:
    """The result tables: ours against each peer, our overhead over the frozen backbone, merged-LoRA inference."""
    env = report["environment"]
    lines = [f"Machine: {env['cpu']}, {env['cores']} cores, device {report['device']}; torch {env['torch']}, "
             f"transformers {env['transformers']}, peft {env['peft']}, adapters {env.get('adapters', 'n/a')} "
             f"(with transformers {env.get('adapters_transformers', 'n/a')})", ""]
    for block in report["blocks"]:
        lines += [f"### {block['shape']}, batch {block['training'][0]['batch'] if block['training'] else '?'}, "
                  f"seq {block['seq']} ({block.get('processes', 1)} process sets × {block['rounds']} rounds × "
                  f"{block['steps']} steps)", "",
                  "| method | peer | ours params | peer params | ours ms | peer ms | ours/peer time | ours/peer CPU "
                  "| ours ex/s | peer ex/s | ours MiB | peer MiB | ours/peer mem |", "|" + "---|" * 13]
        for row in block["training"]:
            ours = row["results"].get("ours")
            for impl, ratio in row["ratios"].items():
                peer = row["results"][impl]
                mem = f"{ratio['memory']:.2f}" if ratio["memory"] is not None else "n/a"
                lines.append(f"| {row['method']} | {impl} | {ours['trainable']:,} | {peer['trainable']:,} | "
                             f"{1000 * ours['median_s']:.0f} | {1000 * peer['median_s']:.0f} | {ratio['time']:.3f} | "
                             f"{ratio['cpu_time']:.3f} | {ours['examples_per_s']:.1f} | {peer['examples_per_s']:.1f} | "
                             f"{ours['peak_delta_mib']:.0f} | "
                             f"{peer['peak_delta_mib']:.0f} | {mem} |")
            lines += [f"| {row['method']} | {impl} | failed: {err[:120]} |" for impl, err in row["errors"].items()]
        rows = [r for r in block["training"] if r["overhead"] or r.get("overhead_backprop")]
        if rows:
            lines += ["", "| method | frozen ms | backprop floor ms | ours × frozen | peers × frozen | ours × floor "
                      "| peers × floor |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {r['method']} | {_ms(r.get('frozen_ref_s'))} | {_ms(r.get('backprop_ref_s'))} | "
                      f"{_overheads(r['overhead'])} | {_overheads(r.get('overhead_backprop', {}))} |" for r in rows]
        infer = block.get("inference")
        if infer:
            lines += ["", "| inference (eval, no_grad) | ms | × base |", "|---|---|---|"]
            lines += [f"| {k} | {1000 * r['median_s']:.1f} | {infer['ratios'].get(k, 1.0):.3f} |"
                      for k, r in infer["results"].items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="minilm,roberta_base", help="comma list of step_worker.SHAPES")
    parser.add_argument("--seqs", default="64,128", help="comma list of sequence lengths")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"any of {', '.join(PEERS)}")
    parser.add_argument("--impls", default="ours,peft,adapters,hf", help="which peers to run (ours always runs)")
    parser.add_argument("--rounds", type=int, default=5, help="A B rounds per method (MiniLM and custom shapes)")
    parser.add_argument("--large-rounds", type=int, default=2, help="rounds for roberta_base")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per implementation per round")
    parser.add_argument("--warmup", type=int, default=2, help="discarded steps per implementation")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--full", action="store_true", help="also roberta_base at seq > 64 on CPU (slow)")
    parser.add_argument("--no-infer", action="store_true", help="skip the merged-LoRA inference latency")
    parser.add_argument("--no-frozen-ref", action="store_true",
                        help="do not run our frozen backbone and backprop floor beside each method (no overhead columns)")
    parser.add_argument("--processes", type=int, default=1,
                        help="repeat each method with fresh worker processes this many times (per-process noise)")
    parser.add_argument("--threads", type=int, help="torch threads in every worker (default: torch's own)")
    parser.add_argument("--adapters-python", type=Path, default=ADAPTERS_PYTHON)
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in PEERS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; valid: {', '.join(PEERS)}")
    cfg = Settings(shapes=args.shapes.split(","), seqs=[int(s) for s in args.seqs.split(",")], batch=args.batch,
                   methods=methods, impls=args.impls.split(","), rounds=args.rounds, large_rounds=args.large_rounds,
                   steps=args.steps, warmup=args.warmup, device=args.device, full=args.full, infer=not args.no_infer,
                   frozen_ref=not args.no_frozen_ref, processes=args.processes, threads=args.threads,
                   adapters_python=args.adapters_python)
    command = " ".join(["python", "benchmarks/bench_step.py", *(argv if argv is not None else sys.argv[1:])])

    def save(report: dict[str, Any]) -> None:
        report["command"] = command
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        if args.markdown:
            args.markdown.write_text(f"`{command}`\n\n{markdown(report)}\n")

    report = run(cfg, log=lambda s: print(s, flush=True), save=save)
    save(report)
    print(markdown(report))


if __name__ == "__main__":
    main()
