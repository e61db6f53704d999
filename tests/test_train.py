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
