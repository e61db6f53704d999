"""The modules of the design space: the functional form Δh, the compositions, and the wrappers that place them.

A wrapper owns the layer it replaces as ``base_layer`` and its forward reads like the formula; it is installed
with ``setattr`` on the parent (``peftbench.space.arch.set_submodule``). Head-level modules (prefixes) live in
``peftbench.space.prefix``; input prompts in ``peftbench.space.prompts``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "identity": nn.Identity}


class Bottleneck(nn.Module):
    """Δh = up(act(down(dropout(LN(x))))), i.e. f(x W_down) W_up; with ``activation=identity`` and no bias it is
    LoRA's x W_down W_up (W_down = A, W_up = B).

    ``init="lora"``: Kaiming-uniform W_down, zero W_up (Δh = 0 at init). ``init="bert"``: N(0, 0.02) for both.
    """

    def __init__(self, d_in: int, d_out: int, r: int, activation: str = "relu", bias: bool = True,
                 layer_norm: bool = False, dropout: float = 0.0, init: str = "lora",
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.layer_norm = nn.LayerNorm(d_in, **kw) if layer_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.down = nn.Linear(d_in, r, bias=bias, **kw)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(r, d_out, bias=bias, **kw)
        self.reset_parameters(init)

    def reset_parameters(self, init: str) -> None:
        if init == "lora":
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.up.weight)
        else:
            nn.init.normal_(self.down.weight, std=0.02)
            nn.init.normal_(self.up.weight, std=0.02)
        for linear in (self.down, self.up):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(self.dropout(self.layer_norm(x)))))

    def paper_numel(self) -> int:
        """What the paper counts: W_down and W_up (2·r·d for d_in = d_out = d), biases and LayerNorm aside."""
        return self.down.weight.numel() + self.up.weight.numel()

    def delta_weight(self) -> torch.Tensor:
        """W_up W_down as a (d_out × d_in) matrix; only meaningful when Δh is linear in x."""
        return self.up.weight @ self.down.weight


class Add(nn.Module):
    """Additive composition: h ← h + Δh."""

    scale = 1.0

    def forward(self, h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return h + delta


class Scale(nn.Module):
    """Scaled composition: h ← h + s·Δh, with s fixed (LoRA's α/r, scaled PA's s) or learned."""

    def __init__(self, s: float, learnable: bool = False, device: torch.device | None = None) -> None:
        super().__init__()
        self.learnable = learnable
        self.s = nn.Parameter(torch.tensor(float(s), device=device)) if learnable else float(s)

    @property
    def scale(self) -> float | torch.Tensor:
        return self.s

    def forward(self, h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if self.learnable:
            return h + self.s * delta
        return torch.add(h, delta, alpha=self.s)  # one fused kernel for h + s·Δh

    def paper_numel(self) -> int:
        return 0  # a learned scalar per layer is negligible; the paper does not count it


class Multiply(nn.Module):
    """Multiplicative composition: h ← l ⊙ h (IA3), with l = Δh from a :class:`Diagonal`."""

    def forward(self, h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return h * delta


class Diagonal(nn.Module):
    """The diagonal functional form: Δh = l ∈ R^d, one learned value per feature of h, whatever h is (IA3's vector,
    initialised to 1 so that l ⊙ h = h)."""

    def __init__(self, d: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.l = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.l

    def paper_numel(self) -> int:
        return self.l.numel()


def make_composition(kind: str, s: float, learnable: bool, device: torch.device | None = None) -> nn.Module:
    """Add, Scale or Multiply (the gate is not a module here: it is exact by concatenation in
    ``peftbench.space.prefix``)."""
    if kind == "multiply":
        return Multiply()
    return Scale(s, learnable, device) if kind == "scale" else Add()


def base_linear(module: nn.Module) -> nn.Linear:
    """The nn.Linear at the bottom of a stack of wrappers (each wrapper keeps its layer as ``base_layer``)."""
    while not isinstance(module, nn.Linear):
        if not hasattr(module, "base_layer"):
            raise TypeError(f"{type(module).__name__} is not a linear projection and wraps none")
        module = module.base_layer
    return module


class ParallelLinear(nn.Module):
    """A module beside a projection W (parallel insertion at a weight): y = xW + compose(Δh(x)).

    LoRA is this with ``Bottleneck(activation=identity, bias=False)`` and ``Scale(α/r)``; when Δh is linear it
    can be merged into W (``merge``) for inference at the base model's cost, and unmerged.
    """

    def __init__(self, base_layer: nn.Module, delta: Bottleneck, composition: nn.Module, linear: bool) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.delta = delta
        self.composition = composition
        self.linear = linear
        self.merged = False

    @property
    def mergeable(self) -> bool:
        return self.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        return self.composition(self.base_layer(x), self.delta(x))

    @torch.no_grad()
    def _merged_delta(self) -> torch.Tensor:
        if not self.linear:
            raise ValueError("only a linear Δh (form=low_rank) can be merged into the weight it runs beside")
        return float(self.composition.scale) * self.delta.delta_weight()

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            base_linear(self.base_layer).weight += self._merged_delta()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            base_linear(self.base_layer).weight -= self._merged_delta()
            self.merged = False


class SequentialLinear(nn.Module):
    """Sequential insertion: the module reads the output h of the layer it follows, h ← compose(h, Δh(h)).

    Placed on a sub-layer's output projection it is the Houlsby adapter (before the residual and LayerNorm); with a
    :class:`Diagonal` and :class:`Multiply` it is IA3 on keys and values, h ← l ⊙ h, which merges into the weight
    and bias as diag(l)·W, l ⊙ b.
    """

    def __init__(self, base_layer: nn.Module, delta: nn.Module, composition: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.delta = delta
        self.composition = composition
        self.merged = False

    @property
    def mergeable(self) -> bool:
        return isinstance(self.delta, Diagonal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        if self.merged:
            return h
        return self.composition(h, self.delta(h))

    @torch.no_grad()
    def merge(self) -> None:
        if not self.mergeable:
            raise ValueError("only a diagonal Δh (IA3) merges into the weight it follows")
        if not self.merged:
            linear = base_linear(self.base_layer)
            self._kept = [p.detach().clone() for p in (linear.weight, linear.bias) if p is not None]
            linear.weight.mul_(self.delta.l[:, None])
            if linear.bias is not None:
                linear.bias.mul_(self.delta.l)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            linear = base_linear(self.base_layer)
            for p, kept in zip((q for q in (linear.weight, linear.bias) if q is not None), self._kept, strict=True):
                p.copy_(kept)
            self.merged = False


class InputScaledLinear(nn.Module):
    """A module on the input a of a projection W (the FFN's inner activation for W_2): y = compose(a, Δh(a)) W, i.e.
    IA3's (l ⊙ a) W_2. Merges as W·diag(l)."""

    def __init__(self, base_layer: nn.Module, delta: Diagonal, composition: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.delta = delta
        self.composition = composition
        self.merged = False

    mergeable = True

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(a)
        return self.base_layer(self.composition(a, self.delta(a)))

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            weight = base_linear(self.base_layer).weight
            self._kept = weight.detach().clone()
            weight.mul_(self.delta.l[None, :])
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            base_linear(self.base_layer).weight.copy_(self._kept)
            self.merged = False


class InputTap(nn.Module):
    """Passes its input through unchanged and keeps it for a parallel sub-layer module to read.

    Installed on a projection whose input is the sub-layer's input x (the query projection for attention,
    W_1 for the FFN); the shared ``stash`` is a plain namespace, so no module is registered twice.
    """

    def __init__(self, base_layer: nn.Module, stash: SimpleNamespace) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.stash = stash

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self.stash.x = x
        return self.base_layer(x, *args, **kwargs)


class ParallelSublayer(nn.Module):
    """Parallel insertion at a sub-layer: h ← compose(h, Δh(x)), x the sub-layer's input, h its output.

    Installed on the sub-layer's output projection (so Δh joins before the residual and LayerNorm); x comes
    from the :class:`InputTap` sharing its ``stash``.
    """

    def __init__(self, base_layer: nn.Module, delta: Bottleneck, composition: nn.Module,
                 stash: SimpleNamespace) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.delta = delta
        self.composition = composition
        self.stash = stash

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x, self.stash.x = self.stash.x, None
        if x is None:
            raise RuntimeError("parallel sub-layer module ran before its input tap: check the peftbench.space.arch entry")
        return self.composition(self.base_layer(z), self.delta(x))
