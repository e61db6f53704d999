"""Inference cost of a trained method, as a ratio to the frozen base model, measured in the run's own process.

Adapters add depth and latency; a merged LoRA adds none. After evaluation, each run times its model and a freshly
loaded base model (the same architecture and head, no method) on the same dev batches, alternating the two in
rounds so that machine noise falls on both alike, and takes the ratio of their fastest rounds. Where the method has
modules that merge into the weight they modify (LoRA, DoRA, VeRA, IA3), it merges them and measures again.
``train.inference_batches`` sets how many dev
batches (spread over the length-sorted dev set: long and short ones; 32 rows each) each round times; 0 switches it
off, the default of an ad-hoc run (the experiment settings time 2). The cost: ~5-10 s per MiniLM run, about as
long as a 1-minute smoke run itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from peftbench.space.inject import merge_modules, mergeable_wrappers, unmerge_modules
from peftbench.space.modules import base_linear

ROUNDS = 5
ROWS = 32


def _forward_time(model: torch.nn.Module, batches: Sequence[dict], autocast) -> float:
    start = time.perf_counter()
    with torch.no_grad(), autocast():
        for batch in batches:
            model(**batch)
    return time.perf_counter() - start


def alternate(models: dict[str, torch.nn.Module], batches: Sequence[dict], autocast, rounds: int = ROUNDS) -> dict[str, float]:
    """The fastest of ``rounds`` timings of each model on ``batches`` (interference only ever adds time, so the
    minimum is the steadiest estimate, as in ``timeit``), the models taken in turn in every round (the order
    rotated), after one warm-up pass each."""
    names = list(models)
    for name in names:
        _forward_time(models[name], batches, autocast)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(_forward_time(models[name], batches, autocast))
    return {name: min(t) for name, t in times.items()}


def spread(loader, count: int, rows: int = ROWS) -> list[dict]:
    """``count`` batches spread evenly over an evaluation loader (length-sorted: long and short batches), each cut
    to its first ``rows`` rows (a training-size batch keeps the timing short), labels dropped."""
    batches = [{k: v[:rows] for k, v in b.items() if k != "labels"} for b in loader]
    if count >= len(batches):
        return batches
    step = len(batches) / count
    return [batches[int(i * step)] for i in range(count)]


def inference_cost(model: torch.nn.Module, load_base: Callable[[], torch.nn.Module], loader, count: int,
                   autocast, device) -> dict[str, Any] | None:
    """The method's forward time over the base model's on ``count`` dev batches, and merged where it can be."""
    if count <= 0:
        return None
    batches = spread(loader, count)
    base = load_base().to(device).eval()
    model.eval()
    fastest = alternate({"base": base, "method": model}, batches, autocast)
    out: dict[str, Any] = {
        "batches": len(batches), "rows": int(sum(len(b["input_ids"]) for b in batches)), "rounds": ROUNDS,
        "base_s": fastest["base"], "method_s": fastest["method"], "ratio": fastest["method"] / fastest["base"],
        "merged_s": None, "ratio_merged": None,
    }  # fmt: skip
    # the weights as they are: unmerging subtracts what merging added, which may not give back every last bit
    linears = [base_linear(w.base_layer) for w in mergeable_wrappers(model).values()]
    weights = [p for linear in linears for p in (linear.weight, linear.bias) if p is not None]  # IA3 merges biases
    kept = [w.detach().clone() for w in weights]
    if merge_modules(model):
        try:
            merged = alternate({"base": base, "merged": model}, batches, autocast)
        finally:
            unmerge_modules(model)
            with torch.no_grad():
                for weight, value in zip(weights, kept, strict=True):
                    weight.copy_(value)
        out.update(merged_s=merged["merged"], ratio_merged=merged["merged"] / merged["base"])
    del base
    return out
