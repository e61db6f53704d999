"""Budgets before training reproduce REFERENCE.md §2 on roberta-base's exact shape (meta device, no weights)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from peftbench.describe import describe

D, L = 768, 12  # roberta-base
ROBERTA_BASE = 124_055_040  # without the pooler, which RobertaForSequenceClassification does not build
HEAD = D * D + D + D * 2 + 2  # head.dense + head.out_proj (2 labels)
LAYER_NORMS = (2 * L + 1) * 2 * D  # two per layer and the embeddings', weight and bias
BIASES = L * (4 * D + 2 * D + 4 * D + D) + D  # q,k,v,o; two LayerNorms; W1 (4d), W2; embeddings' LayerNorm


def _budget(*overrides: str) -> dict:
    return describe(["model=roberta_base", *overrides])


@pytest.mark.parametrize(
    ("overrides", "paper"),
    [
        (["method=lora"], 294_912),  # the LoRA paper's 0.3M: 4·r·d·L, r=8
        (["method=lora", "method.modules.attn.r=16"], 589_824),
        (["method=prefix"], 294_912),  # 2·l·d·L, l=16
        (["method=mam"], 589_824),  # prefix l=16 + FFN scaled PA r=16: the paper's 0.5%
        (["method=prompt"], 20 * D),  # l·d
        (["method=ptuning"], 20 * D),
        (["method=ptuning_v2"], 2 * 20 * D * L),
        (["method=mh_pa"], 2 * 16 * D * L),
        (["method=pa"], 2 * 16 * D * L),  # 2·r·d per layer, biases aside
        (["method=adapter"], 2 * (2 * 16 * D) * L + LAYER_NORMS),  # Houlsby: two adapters per layer + LNs
        (["method=lora", "method.modules.attn.representation=[ffn_w1,ffn_w2]"], 10 * 8 * D * L),  # FFN LoRA
        (["method=bitfit"], BIASES),
        (["method=full"], ROBERTA_BASE),
        # issue 29 (REFERENCE.md §6): IA3 l on keys, values and the FFN's inner activation: (d + d + 4d)·L
        (["method=ia3"], (D + D + 4 * D) * L),
        (["method=dora"], 4 * 8 * D * L + 2 * D * L),  # LoRA's 4·r·d·L + the magnitude m (out) per matrix
        (["method=vera"], 2 * (256 + D) * L),  # r + out per matrix: d and b; A, B are frozen and shared
        (["method=vera", "method.modules.attn.r=1024"], 2 * (1024 + D) * L),
        (["method=rslora"], 294_912),  # the scale rule changes s, not the budget
        (["method=rslora", "method.modules.attn.r=64"], 4 * 64 * D * L),
        (["method=loraplus"], 294_912),  # an optimizer choice
        (["method=pissa"], 294_912),  # an init
    ],
)
def test_paper_counts_on_roberta_base(overrides, paper):
    budget = _budget(*overrides)
    assert budget["base"] == ROBERTA_BASE
    assert budget["paper"] == paper
    assert budget["paper_share"] == pytest.approx(paper / ROBERTA_BASE)
    assert budget["head"] == HEAD


@pytest.mark.parametrize("method", ["ia3", "dora", "vera", "rslora", "loraplus", "pissa"])
def test_describe_places_each_successor_in_the_space(method):
    design = _budget(f"method={method}")["design"]
    slot = design["ia3" if method == "ia3" else "attn"]
    expected = {"ia3": {"form": "diagonal", "composition": "multiply", "insertion": "sequential"},
                "dora": {"magnitude": True, "scale_rule": "alpha_over_r"},
                "vera": {"projections": "shared_random", "composition": "add"},
                "rslora": {"scale_rule": "alpha_over_sqrt_r"}, "loraplus": {}, "pissa": {"init": "pissa"}}[method]
    assert expected.items() <= slot.items()
    assert design.get("lr_ratio") == (16.0 if method == "loraplus" else None)


def test_trainable_and_stored_for_prefix():
    budget = _budget("method=prefix")
    mlp = 16 * D + (D * 800 + 800) + (800 * 2 * L * D + 2 * L * D)
    assert budget["trainable"] == mlp + HEAD  # the MLP trains, the prefixes are its output
    assert budget["stored"] == 294_912 + HEAD  # after training only the prefix vectors are kept
    assert budget["paper_share_percent"] == pytest.approx(0.2377, abs=1e-4)


def test_lora_breakdown_and_modules():
    budget = _budget("method=lora")
    assert len(budget["modules"]) == 2 * L
    assert all(v["paper"] == 2 * 8 * D for v in budget["breakdown"].values())
    assert budget["design"]["attn"]["representation"] == ["attn_q", "attn_v"]


def test_describe_on_the_offline_default_model():
    budget = describe(["method=lora"])  # MiniLM: d=384, L=6, its config read from the installed package
    assert budget["model"] == "minilm" and budget["paper"] == 4 * 8 * 384 * 6


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftbench.describe", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_prints_json():
    out = _cli("method=mam", "model=roberta_base", "method.modules.ffn.r=64")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["paper"] == 294_912 + 2 * 64 * D * L


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["method=loraa"], "Could not find 'method/loraa'; valid: adapter, bitfit"),
        (["model=gpt5"], "Could not find 'model/gpt5'; valid: bert_base, minilm"),
        (["method=lora", "method.modules.attn.rank=4"], "did you mean method.modules.attn.r?"),
        (["method=pa", "method.modules.adapter.composition=gate"], "method.modules.adapter: composition=gate"),
    ],
)
def test_cli_bad_input_is_one_line(args, needle):
    out = _cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr


def test_the_readme_methods_table_is_describes_budgets():
    """Each row of the README's methods table quotes `describe`'s paper count and share on roberta-base."""
    import re
    from pathlib import Path

    from peftbench.space.presets import preset_names

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \|.*\| ([\d,]+) \(([\d.]+)%\) \|$", readme, flags=re.M)
    assert {name for name, _, _ in rows} == set(preset_names())
    for name, count, share in rows:
        budget = _budget(f"method={name}")
        assert int(count.replace(",", "")) == budget["paper"], name
        assert float(share) == pytest.approx(100 * budget["paper_share"], abs=0.0005 + 1e-12), name
