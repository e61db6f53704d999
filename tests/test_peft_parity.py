"""Issue 29: IA3, DoRA, VeRA, rsLoRA, PiSSA and LoRA+ equal Hugging Face peft's on tiny BERT, RoBERTa and Llama.

Each test builds the same base model twice, once with peft's config and once with our preset, moves peft's
parameters off their initial values (so that the comparison is not of two identities), copies them into ours, and
asks for the same logits (atol 1e-5) and the same trainable-parameter count (peft's ``modules_to_save`` set to our
task head). What is not copied is compared: VeRA's shared random projections (drawn from the same key), PiSSA's
A, B and residual weight. LoRA+: the same learning rate and weight decay for every parameter.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from peftbench import apply_method, load_method
from peftbench.run.train import _optimizer
from peftbench.space.low_rank import SharedProjections
from tests.conftest import tiny_batch, tiny_model
from tests.test_architectures import CONFIGS, _batch

peft = pytest.importorskip("peft")

ARCHS = ["bert", "roberta", "llama"]
#: peft target names per architecture: q, v, k and the FFN's W_2 (a regex: BERT's "output.dense" also names the
#: attention's output projection, which IA3 in the paper does not touch)
TARGETS = {
    "bert": {"q": "query", "v": "value", "kv_ffn": r".*\.layer\.\d+\.(attention\.self\.(key|value)|output\.dense)",
             "ffn": r".*\.layer\.\d+\.output\.dense", "head": ["classifier", "pooler"]},
    "llama": {"q": "q_proj", "v": "v_proj", "kv_ffn": r".*\.(k_proj|v_proj|down_proj)", "ffn": r".*\.down_proj",
              "head": ["score"]},
}
TARGETS["roberta"] = {**TARGETS["bert"], "head": ["classifier"]}


def _base(arch: str) -> nn.Module:
    if arch == "llama":
        torch.manual_seed(0)
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_config(copy.deepcopy(CONFIGS["llama"])).eval()
    return tiny_model(arch)


def _inputs(arch: str) -> dict:
    return _batch("llama") if arch == "llama" else tiny_batch()


def _pair(arch: str, config, preset: str, **overrides):
    """peft's model and ours from one base; returns (theirs, ours, report)."""
    base = _base(arch)
    config.modules_to_save = TARGETS[arch]["head"]
    theirs = peft.get_peft_model(copy.deepcopy(base), config).eval()
    ours = copy.deepcopy(base)
    report = apply_method(ours, load_method(preset, **overrides))
    return theirs, ours.eval(), report


def _ours(name: str) -> str:
    """peft's module name → ours (the same path in the base model)."""
    return name.split("base_model.model.", 1)[1]


def _perturb_and_copy(theirs: nn.Module, ours: nn.Module, pairs: dict[str, str]) -> int:
    """Move every peft parameter named ``<module>.<theirs>.default[.weight]`` off its init and copy it to
    ``<module>.<ours>`` in our model (reshaped); returns how many were copied."""
    torch.manual_seed(3)
    copied = 0
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            for their_key, our_key in pairs.items():
                marker = f".{their_key}.default"
                if marker in name:
                    p.add_(0.1 * torch.randn_like(p))
                    module = _ours(name.split(marker)[0])
                    ours.get_parameter(f"{module}.{our_key}").copy_(p.reshape(-1) if p.dim() == 2 and 1 in p.shape
                                                                    else p)
                    copied += 1
    return copied


def _same_logits_and_count(theirs, ours, report, arch: str) -> None:
    batch = _inputs(arch)
    with torch.no_grad():
        expected, got = theirs(**batch).logits, ours(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert report.trainable == theirs.get_nb_trainable_parameters()[0]
    assert report.trainable == sum(p.numel() for p in ours.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", ARCHS)
def test_ia3_matches_peft(arch):
    t = TARGETS[arch]
    config = peft.IA3Config(task_type="SEQ_CLS", target_modules=t["kv_ffn"], feedforward_modules=t["ffn"])
    theirs, ours, report = _pair(arch, config, "ia3")
    assert _perturb_and_copy(theirs, ours, {"ia3_l": "delta.l"}) == 3 * 2
    _same_logits_and_count(theirs, ours, report, arch)
    assert report.paper == sum(p.numel() for n, p in theirs.named_parameters() if "ia3_l" in n)


@pytest.mark.parametrize("arch", ARCHS)
def test_dora_matches_peft(arch):
    t = TARGETS[arch]
    config = peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0, use_dora=True,
                             target_modules=[t["q"], t["v"]])
    theirs, ours, report = _pair(arch, config, "dora")
    pairs = {"lora_A": "delta.down.weight", "lora_B": "delta.up.weight", "lora_magnitude_vector": "magnitude.m"}
    assert _perturb_and_copy(theirs, ours, pairs) == 3 * 2 * 2
    _same_logits_and_count(theirs, ours, report, arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_vera_matches_peft(arch):
    t = TARGETS[arch]
    config = peft.VeraConfig(task_type="SEQ_CLS", r=16, target_modules=[t["q"], t["v"]], projection_prng_key=7,
                             vera_dropout=0.0)
    theirs, ours, report = _pair(arch, config, "vera", **{"attn.r": 16, "attn.projection_key": 7})
    shared = next(m for m in ours.modules() if isinstance(m, SharedProjections))
    torch.testing.assert_close(shared.A, theirs.base_model.vera_A["default"], atol=0, rtol=0)  # the same draw
    torch.testing.assert_close(shared.B, theirs.base_model.vera_B["default"], atol=0, rtol=0)
    assert _perturb_and_copy(theirs, ours, {"vera_lambda_b": "delta.b", "vera_lambda_d": "delta.d"}) == 2 * 2 * 2
    _same_logits_and_count(theirs, ours, report, arch)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("r", [8, 64])
def test_rslora_matches_peft(arch, r):
    t = TARGETS[arch]
    config = peft.LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=16, lora_dropout=0.0, use_rslora=True,
                             target_modules=[t["q"], t["v"]])
    theirs, ours, report = _pair(arch, config, "rslora", **{"attn.r": r})
    assert _perturb_and_copy(theirs, ours, {"lora_A": "delta.down.weight", "lora_B": "delta.up.weight"}) == 8
    _same_logits_and_count(theirs, ours, report, arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_pissa_matches_peft(arch):
    t = TARGETS[arch]
    config = peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0, init_lora_weights="pissa",
                             target_modules=[t["q"], t["v"]])
    theirs, ours, report = _pair(arch, config, "pissa")
    for name, module in theirs.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:  # the same A, B and residual W_0 − s·BA
            wrapper = ours.get_submodule(_ours(name))
            torch.testing.assert_close(wrapper.delta.down.weight, module.lora_A["default"].weight, atol=1e-6, rtol=0)
            torch.testing.assert_close(wrapper.delta.up.weight, module.lora_B["default"].weight, atol=1e-6, rtol=0)
            torch.testing.assert_close(wrapper.base_layer.weight, module.base_layer.weight, atol=1e-6, rtol=0)
    _same_logits_and_count(theirs, ours, report, arch)  # at init: both equal the base model
    assert _perturb_and_copy(theirs, ours, {"lora_A": "delta.down.weight", "lora_B": "delta.up.weight"}) == 8
    _same_logits_and_count(theirs, ours, report, arch)


def _peft_name_to_ours(name: str) -> str:
    name = _ours(name)
    for theirs, ours in ((".lora_A.default.", ".delta.down."), (".lora_B.default.", ".delta.up."),
                         (".modules_to_save.default.", ".")):
        name = name.replace(theirs, ours)
    return name


@pytest.mark.parametrize("arch", ARCHS)
def test_loraplus_optimizer_matches_peft(arch):
    t = TARGETS[arch]
    config = peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=[t["q"], t["v"]])
    theirs, ours, report = _pair(arch, config, "loraplus")
    lr, decay = 2e-3, 0.1
    from peft.optimizers import create_loraplus_optimizer

    their_opt = create_loraplus_optimizer(theirs, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=16.0,
                                          loraplus_weight_decay=decay)
    cfg = SimpleNamespace(train=SimpleNamespace(weight_decay=decay, adam_betas=[0.9, 0.98], adam_eps=1e-6),
                          method=load_method("loraplus"))
    our_opt = _optimizer(ours, cfg, lr)

    def settings(model, optimizer, rename):
        names = {id(p): rename(n) for n, p in model.named_parameters()}
        return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}

    mine, peft_groups = settings(ours, our_opt, lambda n: n), settings(theirs, their_opt, _peft_name_to_ours)
    assert mine == peft_groups
    assert {v[0] for k, v in mine.items() if ".delta.up." in k} == {lr * 16}
    assert {v[0] for k, v in mine.items() if ".delta.down." in k} == {lr}
    assert report.trainable == theirs.get_nb_trainable_parameters()[0]
