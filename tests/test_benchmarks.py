"""Smoke test of the step benchmark (benchmarks/bench_step.py): structure of the report, no timing assertions."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"benchmarks_{name}"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_bench_step_report_structure(tmp_path, monkeypatch):
    """Our frozen backbone against plain transformers (the cheapest pair: no peft import), plus the merged-LoRA
    inference block; 9 worker processes in all (the pair and its backprop reference twice: ``processes=2``)."""
    monkeypatch.setenv("BENCH_THREADS", "1")  # run() sets it too; monkeypatch restores it afterwards
    bench = _load("bench_step")
    cfg = bench.Settings(shapes=["tiny_bert"], seqs=[8], batch=2, methods=["frozen"], impls=["ours", "hf"],
                         rounds=2, steps=1, warmup=1, processes=2, threads=1)
    report = bench.run(cfg, log=lambda _s: None)

    assert report["environment"]["torch"] and report["environment"]["cores"] >= 1
    (block,) = report["blocks"]
    (row,) = block["training"]
    assert row["method"] == "frozen" and set(row["results"]) == {"ours", "hf"} and not row["errors"]
    for result in row["results"].values():
        assert result["n"] == 4 and _positive(result["median_s"]) and _positive(result["examples_per_s"])
        assert len(result["process_median_s"]) == 2  # two fresh process sets, 2 rounds × 1 step each
        assert result["trainable"] > 0 and math.isfinite(result["peak_delta_mib"])
    ratio = row["ratios"]["hf"]
    assert _positive(ratio["time"]) and _positive(ratio["cpu_time"]) and ratio["trainable"] == 1.0
    assert row["overhead"]["ours"] == 1.0 and _positive(row["overhead"]["hf"])
    assert set(row["overhead_backprop"]) == {"ours", "hf"} and _positive(row["backprop_ref_s"])

    infer = block["inference"]
    assert set(infer["results"]) == {"base", "lora_merged", "lora_unmerged"} and not infer["errors"]
    assert infer["results"]["lora_merged"]["merged"] == 4  # q and v in each of the 2 layers
    assert all(_positive(v) for v in infer["ratios"].values()) and set(infer["ratios"]) == {"lora_merged",
                                                                                             "lora_unmerged"}
    tables = bench.markdown(report)
    assert "| frozen | hf |" in tables and "lora_merged" in tables
    assert "ours × frozen" in tables and "ours × floor" in tables


def test_a_missing_adapters_environment_skips_that_peer_and_says_why(tmp_path):
    bench = _load("bench_step")
    row = bench.bench_training("pa", ["ours", "adapters"], "tiny_bert", batch=2, seq=8, rounds=1, steps=1, warmup=0,
                               device="cpu", adapters_python=tmp_path / "no-venv" / "python", frozen_ref=False)
    assert set(row["results"]) == {"ours"} and not row["ratios"]
    assert "requirements-adapters" in row["errors"]["adapters"]


def test_backprop_floor_runs_the_backward_through_the_frozen_encoder():
    """``backprop`` trains what ``frozen`` trains, but its loss backpropagates to the bottom layer's output."""
    worker = _load("step_worker")
    for impl in ("ours", "hf"):
        for method in ("frozen", "backprop"):
            model, _ = worker.BUILDERS[impl](worker.build_base(worker.SHAPES["tiny_bert"], None), method)
            outputs = []
            def keep(_module, _inputs, out, seen=outputs):
                seen.append(out if isinstance(out, torch.Tensor) else out[0])

            model.bert.encoder.layer[0].register_forward_hook(keep)
            loss = model(**worker.make_batch(model.config.vocab_size, 2, 8, 0, "cpu")).loss
            (bottom,) = outputs
            if bottom.requires_grad:
                bottom.retain_grad()
            loss.backward()
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            assert trainable and not any("encoder" in n or "embeddings" in n for n in trainable), (impl, method)
            assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
            if method == "frozen":  # nothing below the head is differentiated
                assert not bottom.requires_grad, impl
            else:
                assert bottom.grad is not None and bottom.grad.abs().sum() > 0, impl


def test_e2e_report_states_the_ratio_of_medians_and_the_paired_rounds():
    e2e = _load("bench_e2e")

    def run(rate: float, score: float) -> dict:
        return {"examples_per_s": rate, "train_time_s": 1.0, "padding_ratio": 1.5, "score": score,
                "mixed_precision": "no"}

    old, new = list(e2e.VARIANTS)
    report = {"args": {"method": "lora", "task": "sst2", "model": "minilm", "samples": 100, "epochs": 1,
                       "rounds": 3, "seed": 0}, "argv": "", "machine": "cpu", "padding": None, "bf16": None,
              "runs": {old: [run(10, 0.7), run(20, 0.8), run(30, 0.9)],
                       new: [run(25, 0.7), run(50, 0.8), run(90, 0.9)]}}
    text = e2e.markdown(report)
    assert "Speed-up new / old: 2.50×" in text  # median 50 / median 20
    assert "per round 2.50, 2.50, 3.00" in text
    assert "80.00 ± 10.00" in text
