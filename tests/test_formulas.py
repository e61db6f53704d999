"""Each composition changes the output exactly as its formula says (REFERENCE.md §1, §5)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from peftbench import apply_method, load_method
from peftbench.space.modules import Bottleneck, ParallelLinear, Scale
from peftbench.space.prefix import PrefixHeads
from tests.conftest import tiny_batch, tiny_model

B, H, S, D, L = 2, 3, 7, 8, 5


def _qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, S, D, generator=g) for _ in range(3))
    mask = torch.ones(B, 1, S, S, dtype=torch.bool)
    mask[1, :, :, 4:] = False  # row 1: the last 3 keys are padding
    return q, k, v, mask


def _heads(composition="gate", activation="softmax", scale=None):
    heads = PrefixHeads(L, H, H, D, composition, activation, scale, "bert", own_prefix=True)
    nn.init.normal_(heads.prefix, std=1.0)
    return heads


def _attn(q, k, v, mask, scaling):
    scores = (q @ k.transpose(-1, -2)) * scaling
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, -1) @ v


class Holder(nn.Module):
    is_causal = False


def test_prefix_concatenation_equals_gated_formula():
    q, k, v, mask = _qkv()
    heads = _heads()
    scaling = D**-0.5
    out, _ = heads(Holder(), q, k, v, mask, dropout=0.0, scaling=scaling)
    p_k, p_v = heads.keys_values(B)
    logits_k = (q @ k.transpose(-1, -2) * scaling).masked_fill(~mask, float("-inf"))
    logits_p = q @ p_k.transpose(-1, -2) * scaling
    lam = torch.exp(logits_p).sum(-1, keepdim=True) / (
        torch.exp(logits_p).sum(-1, keepdim=True) + torch.exp(logits_k).sum(-1, keepdim=True))
    expected = (1 - lam) * _attn(q, k, v, mask, scaling) + lam * torch.softmax(logits_p, -1) @ p_v
    torch.testing.assert_close(out, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)
    assert ((lam > 0) & (lam < 1)).all()


def test_prefix_without_gate_adds_its_attention():
    q, k, v, mask = _qkv(1)
    heads = _heads("add")
    heads.composition = Scale(1.0)
    scaling = D**-0.5
    out, _ = heads(Holder(), q, k, v, mask, dropout=0.0, scaling=scaling)
    p_k, p_v = heads.keys_values(B)
    expected = _attn(q, k, v, mask, scaling) + torch.softmax(q @ p_k.transpose(-1, -2) * scaling, -1) @ p_v
    torch.testing.assert_close(out, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)
    gated = copy.deepcopy(heads)
    gated.gate = True
    assert not torch.allclose(gated(Holder(), q, k, v, mask, dropout=0.0, scaling=scaling)[0], out, atol=1e-3)


def test_multi_head_parallel_adapter_is_relu_prefix():
    q, k, v, mask = _qkv(2)
    heads = _heads("scale", "relu", Scale(3.0))
    out, _ = heads(Holder(), q, k, v, mask, dropout=0.0, scaling=D**-0.5)
    p_k, p_v = heads.keys_values(B)
    expected = _attn(q, k, v, mask, D**-0.5) + 3.0 * torch.relu(q @ p_k.transpose(-1, -2)) @ p_v
    torch.testing.assert_close(out, expected.transpose(1, 2), atol=1e-4, rtol=1e-5)


def test_scaled_composition_scales_the_change():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    delta = Bottleneck(6, 5, 3, activation="relu", init="bert")
    x = torch.randn(4, 6)
    outs = {s: ParallelLinear(base, delta, Scale(s), linear=False)(x) for s in (1.0, 4.0)}
    torch.testing.assert_close(outs[4.0] - base(x), 4.0 * (outs[1.0] - base(x)), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(outs[1.0] - base(x), delta(x), atol=1e-6, rtol=1e-5)


def test_scaled_pa_in_a_model_scales_the_change():
    """In a whole model at the FFN: h + s·Δh, so the FFN output moves s/1 times as far as with s = 1."""
    outputs = {}
    for s in (1.0, 4.0):
        model = tiny_model("bert")
        apply_method(model, load_method("scaled_pa", **{"adapter.scale": s, "adapter.init": "bert"}))
        torch.manual_seed(1)  # same adapter weights for both scales
        for m in model.modules():
            if isinstance(m, Bottleneck):
                m.reset_parameters("bert")
        seen = []
        layer = model.bert.encoder.layer[0].output.dense
        handle = layer.register_forward_hook(lambda _m, _a, out, seen=seen: seen.append(out))
        with torch.no_grad():
            model(**tiny_batch())
        handle.remove()
        outputs[s] = seen[0]
    base = tiny_model("bert")
    ref = []
    h = base.bert.encoder.layer[0].output.dense.register_forward_hook(lambda _m, _a, out: ref.append(out))
    with torch.no_grad():
        base(**tiny_batch())
    h.remove()
    torch.testing.assert_close(outputs[4.0] - ref[0], 4.0 * (outputs[1.0] - ref[0]), atol=1e-5, rtol=1e-4)


def test_lora_merge_and_unmerge():
    model = tiny_model("roberta")
    apply_method(model, load_method("lora", **{"attn.dropout": 0.0}))
    for m in model.modules():
        if isinstance(m, Bottleneck):
            nn.init.normal_(m.up.weight, std=0.1)
    original = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer.weight" in n}
    batch = tiny_batch()
    with torch.no_grad():
        unmerged = model(**batch).logits
        wrappers = [m for m in model.modules() if isinstance(m, ParallelLinear)]
        for w in wrappers:
            w.merge()
        merged = model(**batch).logits
        for w in wrappers:
            w.unmerge()
        again = model(**batch).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)  # float32 re-association
    torch.testing.assert_close(again, unmerged, atol=1e-6, rtol=0)
    for n, p in model.named_parameters():
        if n in original:
            torch.testing.assert_close(p, original[n], atol=1e-6, rtol=0)


def test_nonlinear_modules_refuse_to_merge():
    model = tiny_model("bert")
    apply_method(model, load_method("lora", **{"attn.form": "bottleneck", "attn.activation": "relu"}))
    wrapper = next(m for m in model.modules() if isinstance(m, ParallelLinear))
    with pytest.raises(ValueError, match="linear"):
        wrapper.merge()


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_lora_matches_hugging_face_peft(arch):
    peft = pytest.importorskip("peft")
    base = tiny_model(arch)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"]))
    ours = copy.deepcopy(base)
    report = apply_method(ours, load_method("lora", **{"attn.dropout": 0.0}))
    torch.manual_seed(3)
    for name, module in theirs.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            nn.init.normal_(module.lora_B["default"].weight, std=0.1)
            path = name.split("base_model.model.", 1)[1]
            wrapper = ours.get_submodule(path)
            wrapper.delta.down.weight.data.copy_(module.lora_A["default"].weight)
            wrapper.delta.up.weight.data.copy_(module.lora_B["default"].weight)
    batch = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, atol=1e-6, rtol=1e-5)
    peft_trainable, _ = theirs.get_nb_trainable_parameters()
    lora_only = sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)
    assert report.paper == lora_only == 4 * 8 * 32 * 2
    if arch == "roberta":  # the same head (classifier) trains on both sides
        assert report.trainable == peft_trainable
