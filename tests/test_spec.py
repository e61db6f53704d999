"""Bad specs fail at validation with one line naming the field and the valid values."""

from __future__ import annotations

import json

import pytest

from peftbench import load_method
from peftbench.space.spec import MethodSpec, ModuleSpec, PromptSpec, SpecError, parse_layers


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"form": "conv"}, "form='conv' is not valid; valid values: bottleneck, low_rank, prefix"),
        ({"composition": "gate"}, "composition=gate needs form=prefix"),
        ({"representation": ["attn_heads"]}, "attn_heads needs form=prefix"),
        ({"form": "prefix", "representation": ["ffn"]}, "representation must be [attn_heads]"),
        ({"form": "prefix", "representation": ["attn_heads"], "insertion": "sequential"}, "insertion must be parallel"),
        ({"form": "prefix", "representation": ["attn_heads"], "composition": "gate", "activation": "relu"},
         "gate needs activation=softmax"),
        ({"representation": ["mlp"]}, "valid values: attn, ffn, attn_heads"),
        ({"r": 0}, "r=0 must be a positive"),
        ({"reparam": "mlp"}, "applies to form=prefix only"),
        ({"learn_scale": True}, "learn_scale=true needs composition=scale"),
        ({"layers": "top:x"}, "not a layer selection"),
        ({"representation": ["ffn", "ffn"]}, "names a representation twice"),
    ],
)
def test_impossible_modules(kwargs, needle):
    with pytest.raises(SpecError) as err:
        ModuleSpec(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_two_modules_cannot_claim_one_slot():
    with pytest.raises(SpecError, match="both modify 'ffn'"):
        MethodSpec(modules={"a": ModuleSpec(representation=["ffn"]), "b": ModuleSpec(representation=["ffn"])})
    # disjoint layers may share a representation
    MethodSpec(modules={"a": ModuleSpec(layers="bottom:2"), "b": ModuleSpec(layers="top:2")})


def test_prompt_and_method_rules():
    with pytest.raises(SpecError, match="init_words"):
        PromptSpec(init="words")
    with pytest.raises(SpecError, match="valid values: start, infix"):
        PromptSpec(position="middle")
    with pytest.raises(SpecError, match="full fine-tuning"):
        MethodSpec(train_all=True, modules={"a": ModuleSpec()})


def test_layer_selections():
    assert parse_layers("top:4", 12) == [8, 9, 10, 11]
    assert parse_layers("bottom:2", 12) == [0, 1]
    assert parse_layers("3-5", 12) == [3, 4, 5]
    assert parse_layers("0,-1", 6) == [0, 5]
    with pytest.raises(SpecError, match="layers 0..5"):
        parse_layers("7", 6)


def test_load_method_overrides_and_errors():
    spec = load_method("mam", **{"ffn.r": 64, "attn.r": 30, "ffn.scale": 4.0})
    assert (spec.modules["ffn"].r, spec.modules["attn"].r, spec.modules["ffn"].scale) == (64, 30, 4.0)
    assert load_method("lora", **{"modules.attn.r": 16}).modules["attn"].r == 16
    with pytest.raises(SpecError, match="unknown method 'loraa'; valid methods: .*lora"):
        load_method("loraa")
    with pytest.raises(SpecError, match="rank"):
        load_method("lora", **{"attn.rank": 4})
    with pytest.raises(SpecError, match="r="):
        load_method("lora", **{"attn.r": "big"})
    with pytest.raises(SpecError, match="composition=gate needs form=prefix"):
        load_method("pa", **{"adapter.composition": "gate"})


def test_new_combinations_are_config_only():
    seq_scaled = load_method("adapter", **{"adapter.representation": ["ffn"], "adapter.composition": "scale",
                                           "adapter.scale": 4.0})
    assert seq_scaled.modules["adapter"].insertion == "sequential"
    prefix_lora = MethodSpec(name="prefix+lora_ffn", modules={
        "attn": load_method("prefix").modules["attn"],
        "ffn": ModuleSpec(form="low_rank", representation=["ffn_w1", "ffn_w2"], composition="scale", scale=2.0,
                          r=8, activation="identity", bias=False),
    })
    assert set(prefix_lora.modules) == {"attn", "ffn"}


def test_the_successor_axes_leave_earlier_run_keys_alone():
    """Records written before issue 29 hold no magnitude, projections, scale_rule, lr_ratio: at their defaults the
    new fields are out of the run key (resume still finds those records), and set they change it."""
    from peftbench.run.config import as_plain, compose
    from peftbench.run.record import run_key
    from peftbench.space.spec import MODULE_ADDED_DEFAULTS

    config = as_plain(compose(["model=tiny_bert", "method=lora"]))
    old = json.loads(json.dumps(config))
    del old["method"]["lr_ratio"]
    for key in MODULE_ADDED_DEFAULTS:
        del old["method"]["modules"]["attn"][key]
    assert run_key(config) == run_key(old)
    for override in ("method.lr_ratio=2", "method.modules.attn.scale_rule=alpha_over_r",
                     "method.modules.attn.magnitude=true"):
        assert run_key(as_plain(compose(["model=tiny_bert", "method=lora", override]))) != run_key(config)
