"""Head-level modules (prefix tuning, its ungated variant, multi-head parallel adapters) and the one place where
attention internals are touched: an attention function registered with transformers' ``AttentionInterface``.

A model gets ``config._attn_implementation = "peftbench"``. Our function runs transformers' SDPA attention, and
where the attention module carries a :class:`PrefixHeads` child (``module.peftbench_heads``) it lets it modify the
heads. For one head with query q, prefix keys/values P_k, P_v (l each) and the ordinary K, V:

- ``gate``: attention over [P_k; K], [P_v; V] — exactly (1 − λ(x)) Attn(q, K, V) + λ(x) softmax(q P_kᵀ) P_v with
  λ(x) = Σ_i exp(q·P_k,i) / (Σ_i exp(q·P_k,i) + Σ_j exp(q·K_j))  (paper Eq. 7–8);
- ``add`` / ``scale``: Attn(q, K, V) + s·act(q P_kᵀ) P_v, act = softmax (prefix without gating, Table 4) or
  ReLU (multi-head parallel adapter, l playing the bottleneck r per head).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_NAME = "peftbench"


def peftbench_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, **kwargs):
    """The attention function of every hooked model: SDPA, plus the head-level module if the layer has one."""
    heads = getattr(module, "peftbench_heads", None)
    if heads is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return heads(module, query, key, value, attention_mask, **kwargs)


def install_attention_hook(model: nn.Module) -> None:
    """Route ``model``'s attention through :func:`peftbench_attention` (masks as for SDPA: boolean, True = attend)."""
    AttentionInterface.register(ATTENTION_NAME, peftbench_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    model.set_attn_implementation(ATTENTION_NAME)
    if model.config._attn_implementation != ATTENTION_NAME:
        raise RuntimeError(f"{type(model).__name__} refused attention implementation {ATTENTION_NAME!r}")


def _extend_mask(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor, length: int,
                 causal: bool) -> torch.Tensor | None:
    """Prepend ``length`` always-visible columns (the prefix) to an SDPA attention mask."""
    q_len, kv_len = query.shape[2], key.shape[2]
    if mask is None:
        if not causal or q_len == 1:
            return None  # everything visible before, and the prefix is visible too
        rows = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
        mask = (rows >= torch.arange(kv_len, device=query.device)[None, :])[None, None]
    visible = torch.ones(*mask.shape[:2], mask.shape[2], length, dtype=torch.bool, device=mask.device)
    if mask.dtype != torch.bool:
        visible = torch.zeros(visible.shape, dtype=mask.dtype, device=mask.device)
    return torch.cat([visible, mask], dim=-1)


class PrefixHeads(nn.Module):
    """l prefix key and value vectors per head for one attention layer, and how they compose with the heads.

    The prefix comes from its own parameter (``prefix``: (2, l, d_kv); P-tuning v2, or after export) or is
    provided each step by a shared :class:`PrefixEncoder` (the MLP reparameterisation).
    """

    def __init__(self, length: int, num_heads: int, num_kv_heads: int, head_dim: int, composition: str,
                 activation: str, scale_module: nn.Module | None, init: str, own_prefix: bool,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.length, self.num_heads, self.num_kv_heads, self.head_dim = length, num_heads, num_kv_heads, head_dim
        self.gate = composition == "gate"
        self.activation = activation
        self.composition = scale_module
        self.provided: torch.Tensor | None = None
        self.calls = 0  # how often the attention hook reached this module (tests check it fires)
        self._gate_stats: list[torch.Tensor] | None = None  # [Σλ, count] while tracking (see gate_lambda)
        if own_prefix:
            self.prefix = nn.Parameter(torch.empty(2, length, num_kv_heads * head_dim, device=device, dtype=dtype))
            self.reset_parameters(init)
        else:
            self.prefix = None

    def reset_parameters(self, init: str) -> None:
        if init == "lora":  # P_k plays W_down, P_v plays W_up: zero P_v gives Δh = 0 at init
            nn.init.kaiming_uniform_(self.prefix.data[0], a=math.sqrt(5))
            nn.init.zeros_(self.prefix.data[1])
        else:
            nn.init.normal_(self.prefix, std=0.02)

    def paper_numel(self) -> int:
        """2·l·d per layer (keys and values)."""
        return 2 * self.length * self.num_kv_heads * self.head_dim

    def keys_values(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """P_k, P_v as (batch, kv_heads, l, head_dim)."""
        prefix = self.prefix if self.prefix is not None else self.provided
        if prefix is None:
            raise RuntimeError("PrefixHeads has no prefix: its PrefixEncoder did not run before the attention")
        kv = prefix.view(2, self.length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return kv[0].unsqueeze(0).expand(batch, -1, -1, -1), kv[1].unsqueeze(0).expand(batch, -1, -1, -1)

    def start_gate_tracking(self) -> None:
        """Accumulate the gate λ(x) of every real query token of the following forwards (evaluation only)."""
        self._gate_stats = [torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)]

    def stop_gate_tracking(self) -> float:
        """The mean λ over the heads and real query tokens seen since :meth:`start_gate_tracking`."""
        total, count = self._gate_stats or (torch.zeros(()), torch.zeros(()))
        self._gate_stats = None
        return float(total / count) if count > 0 else math.nan

    @staticmethod
    def gate_lambda(query: torch.Tensor, key: torch.Tensor, p_k: torch.Tensor, mask: torch.Tensor | None,
                    scaling: float) -> torch.Tensor:
        """λ(x) = Σ_i exp(q·P_k,i) / (Σ_i exp(q·P_k,i) + Σ_j exp(q·K_j)) per (batch, head, query), paper Eq. 8:
        the attention mass the gated prefix takes. ``mask`` covers the real keys only (boolean, True = attend,
        or additive)."""
        rep = query.shape[1] // key.shape[1]
        if rep > 1:
            key, p_k = key.repeat_interleave(rep, dim=1), p_k.repeat_interleave(rep, dim=1)
        q = query.float()
        prefix = torch.logsumexp(q @ p_k.float().transpose(-1, -2) * scaling, dim=-1)
        scores = q @ key.float().transpose(-1, -2) * scaling
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
        return torch.sigmoid(prefix - torch.logsumexp(scores, dim=-1))

    @torch.no_grad()
    def _track_gate(self, query, key, p_k, attention_mask, causal: bool, scaling: float) -> None:
        mask = _extend_mask(attention_mask, query, key, 0, causal)
        lam = self.gate_lambda(query, key, p_k, mask, scaling)
        real = torch.ones(lam.shape[0], 1, lam.shape[2], dtype=torch.bool, device=lam.device)
        if mask is not None and mask.dtype == torch.bool and query.shape[2] == key.shape[2]:
            real = mask.diagonal(dim1=-2, dim2=-1)  # a padded query row does not attend to itself
        real = real.expand_as(lam)
        self._gate_stats[0] += lam[real].double().sum().cpu()
        self._gate_stats[1] += real.sum().cpu()

    def forward(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, **kwargs):
        self.calls += 1
        p_k, p_v = self.keys_values(query.shape[0])
        if self.gate:
            causal = bool(kwargs.pop("is_causal", None) or getattr(module, "is_causal", False))
            if self._gate_stats is not None:
                self._track_gate(query, key, p_k, attention_mask, causal,
                                 kwargs.get("scaling") or self.head_dim**-0.5)
            mask = _extend_mask(attention_mask, query, key, self.length, causal)
            return sdpa_attention_forward(module, query, torch.cat([p_k, key], 2), torch.cat([p_v, value], 2),
                                          mask, is_causal=False, **kwargs)
        out, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        if self.num_kv_heads != self.num_heads:  # grouped-query attention: share each kv head's prefix
            rep = self.num_heads // self.num_kv_heads
            p_k, p_v = p_k.repeat_interleave(rep, dim=1), p_v.repeat_interleave(rep, dim=1)
        scores = query @ p_k.transpose(-1, -2)
        if self.activation == "softmax":
            probs = torch.softmax(scores * kwargs.get("scaling", self.head_dim**-0.5), dim=-1)
        else:
            probs = torch.relu(scores)
        delta = (probs @ p_v).transpose(1, 2)  # (batch, seq, heads, head_dim), like the attention output
        return self.composition(out, delta), weights


class PrefixEncoder(nn.Module):
    """Li & Liang's reparameterisation: P = MLP(E), E an (l × d) embedding, MLP = Linear(d, mid) → tanh →
    Linear(mid, 2·L·d_kv), shared by the L layers' :class:`PrefixHeads`.

    It runs once per model forward (a forward pre-hook on the model calls :meth:`refresh`) and hands each layer
    its slice. After training, :meth:`export` keeps only the resulting prefix vectors and drops the MLP.
    """

    def __init__(self, length: int, d_model: int, hidden: int, targets: list[PrefixHeads],
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.length = length
        self.targets = targets  # a plain list: the heads are registered in their layers, not here
        self.embedding = nn.Parameter(torch.empty(length, d_model, **kw))
        nn.init.normal_(self.embedding)
        out = sum(2 * t.num_kv_heads * t.head_dim for t in targets)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden, **kw), nn.Tanh(), nn.Linear(hidden, out, **kw))
        self._hook = None

    def attach(self, model: nn.Module) -> None:
        self._hook = model.register_forward_pre_hook(lambda _module, _args: self.refresh())

    def refresh(self) -> None:
        """Compute all layers' prefixes (once per forward) and hand each layer its (2, l, d_kv) slice."""
        if self.mlp is None:
            return  # exported
        flat = self.mlp(self.embedding)  # (l, Σ 2·d_kv)
        start = 0
        for target in self.targets:
            width = 2 * target.num_kv_heads * target.head_dim
            target.provided = flat[:, start:start + width].view(self.length, 2, -1).transpose(0, 1)
            start += width

    @torch.no_grad()
    def fit(self, prefixes: list[torch.Tensor]) -> None:
        """Make the MLP produce ``prefixes`` (one (2, l, d_kv) tensor per target) exactly: keep E and the first
        layer, and solve the last layer by least squares, tanh(E W1ᵀ + b1) W2ᵀ = P − b2 (exact for l <= hidden)."""
        target = torch.cat([p.transpose(0, 1).reshape(self.length, -1) for p in prefixes], dim=1)
        first, last = self.mlp[0], self.mlp[2]
        hidden = torch.tanh(first(self.embedding)).double()
        solution = torch.linalg.lstsq(hidden, (target - last.bias).double().to(hidden.device), driver="gelsd").solution
        last.weight.copy_(solution.T.to(last.weight.dtype))

    def paper_numel(self) -> int:
        return 0  # the MLP is thrown away after training; its prefixes are counted at the heads

    def stored_numel(self) -> int:
        """What is kept after training: the prefix vectors, not the MLP."""
        return sum(t.paper_numel() for t in self.targets)

    @torch.no_grad()
    def export(self) -> None:
        """Replace the MLP by the prefix vectors it produces (each layer gets its own ``prefix`` parameter)."""
        if self.mlp is None:
            return
        self.refresh()
        for target in self.targets:
            target.prefix = nn.Parameter(target.provided.detach().clone().contiguous())
            target.provided = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.mlp, self.embedding = None, None  # the reparameterisation is not stored
