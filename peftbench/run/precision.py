"""The precision a run computes in, and what a rerun of it may promise: ``train.mixed_precision=auto`` resolved for
this machine, the accelerator at that precision, a regression head kept in fp32 under autocast, and the record's
``determinism``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from peftbench.run.tasks import get_task
from peftbench.space.arch import arch_for
from peftbench.space.inject import head_modules

#: what a record can promise about a rerun with the same seed, by device and precision (README, "Long sweeps")
DETERMINISM = {
    ("cpu", "no"): "bitwise on one CPU's SIMD extensions, fp32: the same command and seed give the same metrics "
                   "and loss history on a CPU with the same ``cpu_features``; on the other kind (AVX2 vs AVX512) "
                   "float sums are blocked differently and a few predictions may differ (an AVX2 record rerun on "
                   "AVX512: 2 of 872 SST-2 dev predictions, the score unchanged), and on one kind with other "
                   "extensions the last digits may (an AVX512 canary rerun on an AVX512 CPU with AMX: the same "
                   "predictions, a gate's value 1e-9 apart)",
    ("cpu", "bf16"): "bitwise on one kind of CPU, bf16 autocast: the same command and seed give the same metrics "
                     "on the same CPU kind; a CPU of the other kind (native AMX/AVX512-BF16 vs emulated on AVX2) "
                     "computes bf16 differently and may give different numbers",
    "gpu": "not bitwise: cuBLAS and atomic-add kernels may reorder float sums between runs; expect differences "
           "in the last digits of losses and occasionally of metrics",
}


def determinism(device_type: str, precision: str) -> str:
    """The record's ``determinism``: what a rerun with the same seed gives on this device at this precision."""
    if device_type != "cpu":
        return f"{DETERMINISM['gpu']} (precision {'fp32' if precision == 'no' else precision})"
    return DETERMINISM.get(("cpu", precision), DETERMINISM[("cpu", "bf16")].replace("bf16", precision))


def cpu_isa() -> str:
    """The instruction set torch's CPU kernels dispatch to on this machine (``AVX2``, ``AVX512``, ...): the CPU kind
    a record was computed on, since fp32 is bitwise only within one (`DETERMINISM`)."""
    return str(torch.backends.cpu.get_cpu_capability())


#: the /proc/cpuinfo flags of the SIMD extensions that torch's kernels (ATen, MKL, oneDNN) may dispatch on
SIMD_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse")


def cpu_features() -> str:
    """This CPU's kind (`cpu_isa`) and a short hash of its SIMD extensions, e.g. ``AVX512-1a2b3c4d``; the kind alone
    where /proc/cpuinfo cannot be read. Finer than the kind: two AVX512 machines of this project, one with AMX and
    AVX512-FP16, reran the AVX512 canary to the same predictions and score but a gate's value 1e-9 apart after one
    epoch (2026-12-07), so a bitwise rerun is promised only on the same features (`DETERMINISM`)."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return cpu_isa()
    simd = sorted({flag for flag in line.split(":", 1)[-1].split() if flag.startswith(SIMD_FLAG_PREFIXES)})
    return f"{cpu_isa()}-{hashlib.sha1(' '.join(simd).encode()).hexdigest()[:8]}"


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX-BF16 or AVX512-BF16); elsewhere torch emulates bf16 at a
    fraction of fp32's speed (measured 16× slower than fp32 on an AVX2-only EPYC), so autocast would not pay."""
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(probe is not None and probe() for probe in probes)


def resolve_mixed_precision(setting: str, force_cpu: bool = False) -> str:
    """``auto``: bf16 autocast where the device computes bf16 natively (a bf16 GPU, an AMX/AVX512-BF16 CPU),
    fp32 (``no``) otherwise; any other setting is kept as given."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and not force_cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_supports_bf16() else "no"


def accelerator_at(mixed_precision: str, **kwargs: Any) -> Accelerator:
    """An ``Accelerator`` computing at `mixed_precision` (``no`` / ``bf16`` / ``fp16``), also in a process where an
    earlier run or reload had another: accelerate keeps one precision per process and refuses a second, so this
    one replaces it (the process group of a data-parallel run, accelerate's ``PartialState``, is kept)."""
    AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, **kwargs)


def fp32_regression_head(model: torch.nn.Module, task: str) -> bool:
    """Run a regression task's head outside autocast, so that its predictions are fp32.

    Under bf16 autocast the head's last Linear rounds each prediction to bf16's 8 significant bits: steps of 1/64 at
    2–4 on STS-B's 0–5 scale. A well-trained model hardly notices (LoRA: ~420 distinct values over STS-B's 1,500 dev
    rows), but a weakly trained one predicts a handful of values (prefix, lr 5e-4: 5–8) whose Pearson is computed
    on ties, and a near-constant one predicts one value, whose Pearson is undefined. The head is the pooler and
    classifier (a d×d and a d×1 product per example), so fp32 costs nothing measurable. Classification heads keep
    autocast: an argmax is changed by bf16 rounding only at near-ties. Returns whether a head was changed."""
    if not get_task(task).is_regression:
        return False
    heads = head_modules(model, arch_for(model))  # an unmapped architecture was refused before training
    for head in heads:
        forward = head.forward

        def in_fp32(*args, _forward=forward, **kwargs):
            device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
            with torch.autocast(device_type=device, enabled=False):
                return _forward(*(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args),
                                **kwargs)

        head.forward = in_fp32  # an instance attribute: the parameters' names and the state dict do not change
    return bool(heads)
