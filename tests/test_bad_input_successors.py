"""Issue 29: each axis added for IA3, DoRA, VeRA, rsLoRA, LoRA+ and PiSSA rejects a bad value when the command line is
composed, with one line naming the field and what is valid (exit 2 from the CLI, before any run)."""

from __future__ import annotations

import pytest

from peftbench.run.config import compose, to_specs
from tests.test_bad_input import TINY, run_cli, spec_error

ATTN = "method.modules.attn"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        # form=diagonal, composition=multiply (IA3)
        ([f"{ATTN}.form=vector"], f"{ATTN}.form='vector' is not valid; valid values: bottleneck, low_rank, prefix, "
                                  "diagonal"),
        ([f"{ATTN}.composition=times"], "composition='times' is not valid; valid values: add, scale, gate, multiply"),
        ([f"{ATTN}.composition=multiply"], f"{ATTN}: form=diagonal goes with composition=multiply (l ⊙ h) and only "
                                           "with it (form='low_rank', composition='multiply')"),
        (["method=ia3", "method.modules.ia3.composition=add"], "form=diagonal goes with composition=multiply"),
        (["method=ia3", "method.modules.ia3.insertion=parallel"], "form=diagonal rescales the representation itself"),
        (["method=ia3", "method.modules.ia3.representation=[ffn]"], "valid representations: attn_q, attn_k, attn_v, "
                                                                    "attn_o, ffn_w1, ffn_w2, ffn_inner"),
        # representation ffn_inner
        ([f"{ATTN}.representation=[ffn_inner]"], f"{ATTN}: representation ffn_inner (the FFN's inner activation) "
                                                 "needs form=diagonal"),
        # scale_rule (rsLoRA)
        ([f"{ATTN}.scale_rule=sqrt"], f"{ATTN}.scale_rule='sqrt' is not valid; valid values: fixed, alpha_over_r, "
                                      "alpha_over_sqrt_r"),
        (["method=pa", "method.modules.adapter.scale_rule=alpha_over_sqrt_r"], "it needs composition=scale"),
        # magnitude (DoRA)
        ([f"{ATTN}.magnitude=maybe"], "magnitude"),
        (["method=pa", "method.modules.adapter.magnitude=true"], "method.modules.adapter.magnitude=true applies to "
                                                                 "LoRA-form modules: form=low_rank, insertion=parallel"),
        ([f"{ATTN}.magnitude=true", f"{ATTN}.learn_scale=true"], "magnitude=true (DoRA) rescales with a fixed s"),
        # projections, projection_key (VeRA)
        ([f"{ATTN}.projections=random"], f"{ATTN}.projections='random' is not valid; valid values: trained, "
                                         "shared_random"),
        (["method=pa", "method.modules.adapter.projections=shared_random"], "projections=shared_random applies to "
                                                                            "LoRA-form modules"),
        (["method=vera", f"{ATTN}.magnitude=true"], "combines with neither magnitude=true nor init=pissa"),
        (["method=vera", f"{ATTN}.projection_key=-1"], f"{ATTN}.projection_key=-1 must be >= 0 (a PRNG seed)"),
        # init=pissa (PiSSA)
        ([f"{ATTN}.init=svd"], f"{ATTN}.init='svd' is not valid; valid values: bert, lora, words, pissa"),
        (["method=pa", "method.modules.adapter.init=pissa"], "init=pissa applies to LoRA-form modules"),
        # method.lr_ratio (LoRA+)
        (["method.lr_ratio=0"], "method.lr_ratio=0.0 must be > 0 (the lr of W_up over the lr of W_down)"),
        (["method=ia3", "method.lr_ratio=16"], "method.lr_ratio=16.0 sets the lr of trained up-projections (LoRA+); "
                                               "the method has none"),
    ],
)
def test_successor_axes_fail_at_compose_in_one_line(overrides, needle):
    assert needle in spec_error(overrides)


@pytest.mark.parametrize("method", ["ia3", "dora", "vera", "rslora", "loraplus", "pissa"])
def test_successor_presets_compose(method):
    assert to_specs(compose([*TINY, f"method={method}"])).method.name == method


@pytest.mark.slow
def test_cli_exits_2_with_one_line_for_a_bad_successor_value(tmp_path):
    out = run_cli(tmp_path, *TINY, "method=rslora", f"{ATTN}.scale_rule=sqrt", "hydra.run.dir=run")
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "valid values: fixed, alpha_over_r" in out.stderr
    assert not list(tmp_path.rglob("result.json"))
