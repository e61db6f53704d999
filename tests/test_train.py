"""Pieces of the training loop that can be checked without training."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from peftbench.train import linear_warmup_decay


@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (3, 10), (6, 100), (10, 10)])
def test_schedule_equals_transformers(warmup, total):
    def lrs(make):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        sched = make(opt, warmup, total)
        out = []
        for _ in range(total + 2):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    ours, reference = lrs(linear_warmup_decay), lrs(get_linear_schedule_with_warmup)
    assert ours == pytest.approx(reference, abs=1e-12)
    assert ours[-1] == 0.0
    if warmup < total:  # the peak is reached at the end of warm-up
        assert ours[warmup] == pytest.approx(0.5)


def test_training_module_does_not_import_peft():
    """peft costs ~4 s of start-up per sweep process; the trainer must not pull it in."""
    code = "import sys, peftbench.train, peftbench.__main__; print('peft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("method", ["prompt", "ptuning", "prefix", "ptuning_v2", "mh_pa", "mam", "lora", "adapter"])
def test_weight_decay_spares_vectors_prompts_and_prefixes(method):
    from conftest import tiny_model

    from peftbench.config import compose, to_specs
    from peftbench.inject import apply_method
    from peftbench.train import _optimizer

    cfg = to_specs(compose([f"method={method}", "train.weight_decay=0.1"]))
    model = tiny_model("bert")
    apply_method(model, cfg.method)
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in _optimizer(model, cfg, 1e-3).param_groups}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set().union(*groups.values()) == {id(p) for p in trainable.values()}  # every trainable param, once
    for name, p in trainable.items():
        spared = p.dim() < 2 or "prefix" in name or "prompt" in name
        assert (id(p) in groups.get(0.0, set())) == spared, name
        if not spared:  # LoRA / adapter projections and the head's matrices
            assert id(p) in groups[0.1], name
