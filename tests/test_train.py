"""Pieces of the training loop that can be checked without training."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import get_linear_schedule_with_warmup

from peftbench import apply_method, load_method
from peftbench.run import evaluate, precision, setup, train
from peftbench.run.train import linear_warmup_decay
from peftbench.space.prefix import PrefixHeads
from tests.conftest import tiny_batch, tiny_model


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
    code = "import sys, peftbench.run.train, peftbench.__main__; print('peft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("method", ["prompt", "ptuning", "prefix", "ptuning_v2", "mh_pa", "mam", "lora", "adapter"])
def test_weight_decay_spares_vectors_prompts_and_prefixes(method):
    from conftest import tiny_model

    from peftbench.run.config import compose, to_specs
    from peftbench.run.train import _optimizer
    from peftbench.space.inject import apply_method

    cfg = to_specs(compose([f"method={method}", "train.weight_decay=0.1"]))
    model = tiny_model("bert")
    apply_method(model, cfg.method)
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in _optimizer(model, cfg, 1e-3).param_groups}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set().union(*groups.values()) == {id(p) for p in trainable.values()}  # every trainable param, once
    for name, p in trainable.items():
        spared = p.dim() < 2 or "prefix" in name or "prompt" in name
        assert (id(p) in groups.get(0.0, set())) == spared, name
        if not spared:  # LoRA / adapter projections and the head's matrices
            assert id(p) in groups[0.1], name


@pytest.mark.parametrize(
    ("setting", "cuda", "cpu_bf16", "expected"),
    [("auto", False, True, "bf16"), ("auto", False, False, "no"), ("auto", True, False, "bf16"),
     ("no", False, True, "no"), ("bf16", False, False, "bf16"), ("fp16", True, True, "fp16")],
)
def test_auto_precision_is_bf16_only_where_the_device_computes_it(monkeypatch, setting, cuda, cpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: cpu_bf16)
    assert precision.resolve_mixed_precision(setting) == expected


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [(True, False, True), (False, True, True),
                                                               (False, False, False)])
def test_cpu_bf16_support_reads_the_cpu_capabilities(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert precision.cpu_supports_bf16() is expected


def test_gate_lambda_is_the_attention_mass_on_the_prefix():
    """λ(x) (paper Eq. 8) equals the share of softmax attention over [P_k; K] that falls on the prefix columns."""
    g = torch.Generator().manual_seed(0)
    b, h, q, k, length, d = 2, 4, 6, 6, 3, 8
    query, key = torch.randn(b, h, q, d, generator=g), torch.randn(b, h, k, d, generator=g)
    p_k = torch.randn(b, h, length, d, generator=g)
    mask = torch.ones(b, 1, q, k, dtype=torch.bool)
    mask[1, ..., 4:] = False  # row 1 has two padded keys
    lam = PrefixHeads.gate_lambda(query, key, p_k, mask, d**-0.5)
    scores = torch.cat([query @ p_k.transpose(-1, -2), query @ key.transpose(-1, -2)], -1) * d**-0.5
    full_mask = torch.cat([torch.ones(b, 1, q, length, dtype=torch.bool), mask], -1)
    probs = torch.softmax(scores.masked_fill(~full_mask, -torch.inf), -1)
    torch.testing.assert_close(lam, probs[..., :length].sum(-1))


def test_gate_monitor_reports_one_lambda_per_gated_layer_only_while_tracking():
    model = tiny_model("bert")
    apply_method(model, load_method("prefix"))
    monitor = evaluate.GateMonitor(model)
    batch = tiny_batch()
    assert len(monitor.heads) == model.config.num_hidden_layers
    with torch.no_grad(), monitor.tracking() as lambdas:
        model(**batch)
        assert lambdas == []  # filled when the block ends
    assert len(lambdas) == model.config.num_hidden_layers and all(0 < x < 1 for x in lambdas)
    with torch.no_grad():
        model(**batch)  # not tracked: no state left behind
    assert all(head._gate_stats is None for head in monitor.heads)
    assert evaluate.GateMonitor(tiny_model("bert")).heads == []


def test_non_finite_logits_fail_the_evaluation():
    """An argmax over NaN logits would pass for predictions; the run must fail instead."""
    model = tiny_model("bert")
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    ds = Dataset.from_dict({"input_ids": [[5, 6, 7], [8, 9]], "attention_mask": [[1, 1, 1], [1, 1]],
                            "labels": [0, 1]})
    split = evaluate.eval_split("validation", ds, 2, lambda rows: {
        "input_ids": torch.tensor([r["input_ids"] + [0] * (3 - len(r["input_ids"])) for r in rows]),
        "attention_mask": torch.tensor([r["attention_mask"] + [0] * (3 - len(r["attention_mask"])) for r in rows]),
        "labels": torch.tensor([r["labels"] for r in rows])})
    with pytest.raises(evaluate.NonFiniteOutput, match="2 of 2 rows of validation have non-finite logits"):
        evaluate.predict(model, split, Accelerator(cpu=True), "sst2")


def test_non_finite_metric_fails():
    with pytest.raises(evaluate.NonFiniteOutput, match=r"pearson.*predicts 2 for all 5 rows: a collapsed run"):
        evaluate.score("stsb", np.full(5, 2.0), np.array([0.0, 1.0, 2.0, 3.0, 4.0]), "validation")
    # constant references (a degenerate dev set) are not blamed on the model
    with pytest.raises(evaluate.NonFiniteOutput, match="pearson") as err:
        evaluate.score("stsb", np.array([0.0, 1.0, 2.0, 3.0, 4.0]), np.full(5, 2.0), "validation")
    assert "collapsed" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [([], 2e-3), (["train.lr_scale=0.25"], 5e-4), (["train.lr=1e-4"], 1e-4),
     (["train.lr=1e-4", "train.lr_scale=3"], 3e-4), (["method=full", "train.lr_scale=2"], 1e-4)],
)
def test_lr_scale_multiplies_the_preset_or_the_given_lr(overrides, expected):
    from peftbench.run.config import compose, to_specs

    assert train.effective_lr(to_specs(compose(["method=lora", *overrides]))) == pytest.approx(expected)


def test_lr_scale_at_its_default_keeps_the_run_key_of_records_written_before_it_existed():
    from omegaconf import OmegaConf

    from peftbench.run.config import compose
    from peftbench.run.record import run_key

    plain = OmegaConf.to_container(compose(["method=lora"]), resolve=True)
    before = {**plain, "train": {k: v for k, v in plain["train"].items() if k != "lr_scale"}}
    assert run_key(plain) == run_key(before)
    assert run_key({**plain, "train": {**plain["train"], "lr_scale": 0.25}}) != run_key(before)


@pytest.mark.slow
@pytest.mark.parametrize("constant_epochs", [{1}, {1, 2}])
def test_a_constant_held_out_epoch_is_unselectable_and_fails_the_run_only_at_every_epoch(
        monkeypatch, glue_dir, tmp_path, constant_epochs):
    """A run whose held-out predictions are constant after epoch 1 (Pearson undefined) may still learn in epoch 2:
    epoch 1 is recorded as unselectable and epoch 2 is chosen; constant at every epoch, the run fails."""
    from peftbench.run.config import compose, to_specs

    cfg = to_specs(compose(["model=tiny_bert", "method=lora", "task=stsb", "data.max_train_samples=64",
                            "data.held_out=16", "train.epochs=2", "train.progress=false",
                            f"data.glue_dir={glue_dir}", f"data.cache_dir={tmp_path}"]))
    real, held_out_calls = evaluate.predict, []

    def predict(model, split, accelerator, task):
        preds, refs = real(model, split, accelerator, task)
        if split.name == "held_out":
            held_out_calls.append(len(held_out_calls) + 1)
            if held_out_calls[-1] in constant_epochs:
                preds = np.full_like(preds, 2.5)
        return preds, refs

    monkeypatch.setattr(evaluate, "predict", predict)
    prep = setup.prepare(cfg)
    if constant_epochs == {1, 2}:
        with pytest.raises(evaluate.ConstantPredictions, match=r"no epoch can be chosen: at every epoch \(1-2\).*"
                                                            r"predicts 2.5 for all 16 rows"):
            train.train_and_evaluate(cfg, prep)
        return
    result = train.train_and_evaluate(cfg, prep)
    first, second = result["history"]
    assert "select" not in first and "predicts 2.5 for all 16 rows" in first["select_error"]
    assert second["best"] and np.isfinite(second["select"]["pearson"])
    assert result["best_epoch"] == 2 and np.isfinite(result["score"]) and held_out_calls == [1, 2]


def test_a_regression_head_predicts_in_fp32_under_bf16_autocast():
    """bf16 rounds a prediction to 8 significant bits; a near-constant regression output (a weakly trained model)
    would become a few tied values. The patched head computes pooler + classifier in fp32 on the encoder's output."""
    import torch.nn.functional as F

    model = tiny_model("bert", num_labels=1).eval()
    batch = tiny_batch(batch=8)
    with torch.no_grad():
        model.classifier.weight.mul_(1e-2)  # outputs within ~1e-2 of STS-B's mean, as a weakly trained model's
        model.classifier.bias.fill_(2.5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = model(**batch).logits
        assert precision.fp32_regression_head(model, "stsb")
        out = model(**batch, output_hidden_states=True)
    pooler, classifier = model.bert.pooler.dense, model.classifier
    with torch.no_grad():
        pooled = torch.tanh(F.linear(out.hidden_states[-1][:, 0].float(), pooler.weight, pooler.bias))
        expected = F.linear(pooled, classifier.weight, classifier.bias)
    assert rounded.dtype == torch.bfloat16 and out.logits.dtype == torch.float32
    torch.testing.assert_close(out.logits, expected, rtol=0, atol=1e-6)
    assert len(torch.unique(out.logits)) == 8 > len(torch.unique(rounded))
    assert set(model.state_dict()) == set(tiny_model("bert", num_labels=1).state_dict())  # names unchanged

    classifier_model = tiny_model("bert").eval()  # a classification head keeps autocast
    assert not precision.fp32_regression_head(classifier_model, "sst2")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert classifier_model(**batch).logits.dtype == torch.bfloat16


def test_head_bias_at_zero_keeps_the_run_key_of_records_written_before_it_existed():
    from omegaconf import OmegaConf

    from peftbench.run.config import compose
    from peftbench.run.record import run_key

    stsb = OmegaConf.to_container(compose(["task=stsb"]), resolve=True)
    assert stsb["task"]["head_bias"] == "label_mean"  # conf/task/stsb.yaml
    before = {**stsb, "task": {k: v for k, v in stsb["task"].items() if k != "head_bias"}}  # a record from before
    assert run_key({**stsb, "task": {**stsb["task"], "head_bias": "zero"}}) == run_key(before)
    assert run_key(stsb) != run_key(before)  # label_mean is a different run
    sst2 = OmegaConf.to_container(compose(["task=sst2"]), resolve=True)
    assert run_key({**sst2, "task": {**sst2["task"], "head_bias": "zero"}}) == run_key(sst2)


@pytest.mark.slow
def test_label_mean_head_bias_starts_a_regression_head_at_the_mean_training_label(glue_dir, tmp_path):
    from peftbench.run.config import compose, to_specs
    from peftbench.space.spec import SpecError

    common = ["model=tiny_bert", "method=prefix", "task=stsb", "data.max_train_samples=64", "data.held_out=16",
              f"data.glue_dir={glue_dir}", f"data.cache_dir={tmp_path}"]
    prep = setup.prepare(to_specs(compose(common)))
    mean = float(np.mean(prep.train["labels"]))  # the 48 training rows, not the held-out 16 nor dev
    assert 1.0 < mean < 4.0 and mean != pytest.approx(float(np.mean(prep.select["labels"])), abs=1e-6)
    assert prep.model.classifier.bias.item() == pytest.approx(mean, abs=1e-6)
    batch = prep.collator([prep.train[i] for i in range(8)])
    with torch.no_grad():
        start = prep.model.eval()(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert start.mean().item() == pytest.approx(mean, abs=0.1)  # the first predictions sit at the mean
    zero = setup.prepare(to_specs(compose([*common, "task.head_bias=zero"])))
    assert zero.model.classifier.bias.item() == 0.0
    with pytest.raises(SpecError, match="sst2 is a classification task"):
        to_specs(compose(["task=sst2", "task.head_bias=label_mean"]))
    with pytest.raises(SpecError, match="task.head_bias='mean' is not valid; valid: zero, label_mean"):
        to_specs(compose(["task=stsb", "task.head_bias=mean"]))
    head = torch.nn.Linear(4, 1, bias=False)  # e.g. Llama's score head
    model = tiny_model("bert", num_labels=1)
    model.classifier = head
    with pytest.raises(ValueError, match="has no regression output with a bias"):
        setup.set_output_bias(model, 2.5)
