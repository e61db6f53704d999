"""The low-rank form's successors, as modules of the one design space (REFERENCE.md §6).

- DoRA (``magnitude=true``): :class:`DoraLinear` rescales each output row of the modified weight to a learned
  magnitude, W' = m ⊙ (W_0 + sBA) / ‖W_0 + sBA‖, the norm (over each row of the (out, in) weight) a constant in
  backward.
- VeRA (``projections=shared_random``): :class:`VeraDelta`, Δh = b ⊙ B(d ⊙ A x) with A, B frozen, random and shared
  by every layer of the module (:class:`SharedProjections`, drawn from ``projection_key``), d and b trained.
- PiSSA (``init=pissa``): :func:`pissa_init` starts A, B from W_0's top-r singular triplets and removes s·BA from W_0.

rsLoRA is a scale rule (``ModuleSpec.s``) and LoRA+ an optimizer choice (``MethodSpec.lr_ratio``): no module here.
The formulas and initialisations follow peft 0.21 (``tuners/lora/dora.py``, ``tuners/vera``, ``pissa_init``), which
``tests/test_peft_parity.py`` checks to 1e-5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from peftbench.space.modules import Bottleneck, base_linear


class Magnitude(nn.Module):
    """DoRA's magnitude m ∈ R^out, initialised to the row norms ‖W_0 + sBA‖ of the weight it rescales."""

    def __init__(self, norms: torch.Tensor) -> None:
        super().__init__()
        self.m = nn.Parameter(norms.detach().clone())

    def paper_numel(self) -> int:
        return self.m.numel()


def row_norm(weight: torch.Tensor, delta: Bottleneck, s: float) -> torch.Tensor:
    """‖W_0 + s·BA‖ over each output row (dim 1 of the (out, in) weight)."""
    return torch.linalg.norm(weight + s * delta.delta_weight(), dim=1)


class DoraLinear(nn.Module):
    """DoRA beside a projection W_0: y = x W'ᵀ + b with W' = m ⊙ (W_0 + sBA) / ‖W_0 + sBA‖, computed as
    base(x) + (m/‖·‖ − 1) ⊙ x W_0ᵀ + m/‖·‖ ⊙ s·B(A x), the norm detached (DoRA §4.3, as peft)."""

    def __init__(self, base_layer: nn.Module, delta: Bottleneck, composition: nn.Module, magnitude: Magnitude) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.delta = delta
        self.composition = composition
        self.magnitude = magnitude
        self.merged = False

    mergeable = True

    def scale(self) -> torch.Tensor:
        """m / ‖W_0 + sBA‖, the norm a constant."""
        weight = base_linear(self.base_layer).weight
        norm = row_norm(weight, self.delta, float(self.composition.scale)).detach()
        return self.magnitude.m / norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        if self.merged:
            return h
        x = self.delta.dropout(x)
        direction = F.linear(x, base_linear(self.base_layer).weight)  # x W_0ᵀ, without the bias
        rescale, s = self.scale(), float(self.composition.scale)
        return h + (rescale - 1) * direction + rescale * s * self.delta.up(self.delta.down(x))

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            linear = base_linear(self.base_layer)
            self._kept = linear.weight.detach().clone()
            rescale = self.scale()
            linear.weight.copy_(rescale[:, None] * (linear.weight + float(self.composition.scale) * self.delta.delta_weight()))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            base_linear(self.base_layer).weight.copy_(self._kept)
            self.merged = False


def kaiming_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """U(−b, b) with b = √3 · √2 / √fan_in, drawn from ``generator`` (peft's VeRA ``_kaiming_init``)."""
    bound = math.sqrt(3.0) * math.sqrt(2) / math.sqrt(shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


class SharedProjections(nn.Module):
    """VeRA's frozen random A (r × in_max) and B (out_max × r), shared by every layer of one module slot and sliced to
    each weight's shape. Drawn from ``key`` (A first, then B, as peft), so a run rebuilds them exactly and stores
    none of them; buffers, never trained."""

    def __init__(self, r: int, d_in: int, d_out: int, key: int, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if device is not None and torch.device(device).type == "meta":
            a, b = torch.empty(r, d_in, device="meta"), torch.empty(d_out, r, device="meta")
        else:
            generator = torch.Generator(device="cpu").manual_seed(key)
            a = kaiming_uniform((r, d_in), generator)
            b = kaiming_uniform((d_out, r), generator)
        self.register_buffer("A", a.to(device=device, dtype=dtype), persistent=False)
        self.register_buffer("B", b.to(device=device, dtype=dtype), persistent=False)


class VeraDelta(nn.Module):
    """Δh = b ⊙ B(d ⊙ A x), A and B the shared frozen projections sliced to (r × d_in) and (d_out × r); d ∈ R^r starts
    at 0.1 and b ∈ R^out at 0 (Δh = 0 at init)."""

    def __init__(self, shared: SharedProjections, d_in: int, d_out: int, r: int, dropout: float = 0.0,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self._shared = (shared,)  # a tuple: the shared module is registered once, on the model, not per layer
        self.d_in, self.d_out = d_in, d_out
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.d = nn.Parameter(torch.full((r,), 0.1, device=device, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(d_out, device=device, dtype=dtype))

    def projections(self) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self._shared[0]
        return shared.A[:, : self.d_in], shared.B[: self.d_out, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.projections()
        return self.b * F.linear(self.d * F.linear(self.dropout(x), a), b)

    def paper_numel(self) -> int:
        """r + out per modified matrix (Kopiczko et al.)."""
        return self.d.numel() + self.b.numel()

    def delta_weight(self) -> torch.Tensor:
        a, b = self.projections()
        return self.b[:, None] * (b @ (self.d[:, None] * a))


@torch.no_grad()
def pissa_init(base_layer: nn.Module, delta: Bottleneck, s: float) -> None:
    """PiSSA: W_0 = U S Vᵀ; A = (S_r/s)^½ V_rᵀ, B = U_r (S_r/s)^½, and W_0 ← W_0 − s·BA (the principal part now trains;
    the output is unchanged). Full SVD in float32, as peft's ``init_lora_weights="pissa"``."""
    linear = base_linear(base_layer)
    if linear.weight.device.type == "meta":
        return
    r = delta.down.weight.shape[0]
    u, sigma, vh = torch.linalg.svd(linear.weight.float(), full_matrices=False)
    root = torch.sqrt(sigma[:r] / s)
    delta.down.weight.copy_((root[:, None] * vh[:r]).to(delta.down.weight.dtype))
    delta.up.weight.copy_((u[:, :r] * root[None, :]).to(delta.up.weight.dtype))
    # the initial factors, kept (not stored: a rebuild recomputes them) for the export as a LoRA of the original W_0
    delta.register_buffer("initial_down", delta.down.weight.detach().clone(), persistent=False)
    delta.register_buffer("initial_up", delta.up.weight.detach().clone(), persistent=False)
    linear.weight.copy_((linear.weight.float() - s * delta.up.weight.float() @ delta.down.weight.float()).to(linear.weight.dtype))
