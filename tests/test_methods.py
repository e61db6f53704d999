"""The preset matrix on tiny random BERT and RoBERTa: forward, identity at init, what trains, what moves."""

from __future__ import annotations

import copy

import pytest
import torch

from peftbench import apply_method, load_method
from peftbench.space.inject import export_reparameterisations
from peftbench.space.presets import preset_names
from tests.conftest import tiny_batch, tiny_model

PRESETS = preset_names()
EXPECTED_PRESETS = {"full", "bitfit", "adapter", "prefix", "prefix_nogate", "prompt", "ptuning", "ptuning_v2",
                    "lora", "pa", "mh_pa", "scaled_pa", "mam", "ia3", "dora", "vera", "rslora", "loraplus", "pissa"}


def test_every_named_method_has_a_preset():
    assert EXPECTED_PRESETS <= set(PRESETS)


def _adapted(arch: str, name: str, **overrides):
    base = tiny_model(arch)
    model = copy.deepcopy(base)
    spec = load_method(name, **overrides)
    report = apply_method(model, spec)
    return base, model, spec, report


def _intended(name: str, spec) -> bool:
    """Whether a trainable parameter's name is one this method may train (structural expectation)."""
    if spec.train_all:
        return True
    if name.startswith(("classifier.", "bert.pooler.")):
        return spec.train_head
    if ".delta." in name or "peftbench_" in name or ".composition." in name or ".magnitude." in name:
        return True
    if spec.train_bias and name.endswith(".bias"):
        return True
    return spec.train_layer_norm and "LayerNorm" in name


@pytest.mark.parametrize("name", PRESETS)
def test_preset_matrix(arch, name):
    base, model, spec, report = _adapted(arch, name)
    batch = tiny_batch()
    labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        ref = base(**batch).logits
        out = model(**batch).logits
    assert out.shape == ref.shape and torch.isfinite(out).all()
    if spec.identity_at_init:
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    else:
        assert not torch.equal(out, ref), "a method that claims no identity at init should change outputs"

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(_intended(n, spec) for n in trainable), sorted(trainable)
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # two steps: a zero-initialised W_up blocks W_down's gradient in the first
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(**batch).logits, labels).backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable, sorted(changed - trainable)
    added = {n for n in trainable if ".delta." in n or "peftbench_" in n or ".composition." in n or ".magnitude." in n}
    assert added <= changed, f"added parameters that did not move: {sorted(added - changed)}"
    with torch.no_grad():
        moved = model(**batch).logits
    assert not torch.allclose(moved, ref, atol=1e-5), "training the method's parameters must change the output"


@pytest.mark.parametrize("name", ["prefix", "mam", "ptuning_v2", "prefix_nogate", "mh_pa"])
def test_attention_hook_fires_in_every_layer(arch, name):
    _, model, _, _ = _adapted(arch, name)
    heads = [m for n, m in model.named_modules() if n.endswith("peftbench_heads")]
    assert len(heads) == model.config.num_hidden_layers
    model(**tiny_batch())
    assert all(h.calls == 1 for h in heads), "the AttentionInterface hook no longer reaches the prefix modules"


@pytest.mark.parametrize("name", ["prefix", "ptuning_v2", "mam", "prompt", "ptuning"])
def test_padding_stays_invisible(arch, name):
    """Changing padded tokens must not change a padded row's logits (masks extended over prefixes/prompts)."""
    _, model, _, _ = _adapted(arch, name)
    batch = tiny_batch()
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][1, 8:] = 7
    with torch.no_grad():
        a, b = model(**batch).logits, model(**other).logits
    torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=0)


def test_layer_range_limits_the_modules():
    _, model, _, report = _adapted("bert", "ptuning_v2", **{"attn.layers": "top:1"})
    heads = [n for n, _ in model.named_modules() if n.endswith("peftbench_heads")]
    assert heads == ["bert.encoder.layer.1.attention.self.peftbench_heads"]
    assert report.paper == 2 * 20 * 32  # 2·l·d for one layer


@pytest.mark.parametrize("position", ["start", "infix"])
def test_prompt_positions(position):
    base = tiny_model("bert")
    spec = load_method("prompt", **{"prompt.position": position, "prompt.length": 4})
    model = copy.deepcopy(base)

    class Tok:
        sep_token_id = 102

    apply_method(model, spec, tokenizer=Tok())
    batch = tiny_batch()
    seen = {}
    handle = model.bert.embeddings.register_forward_hook(lambda m, a, kw, o: seen.update(kw), with_kwargs=True)
    model(**batch)
    handle.remove()
    embeds = seen["inputs_embeds"]
    assert embeds.shape[1] == batch["input_ids"].shape[1] + 4
    where = 1 if position == "start" else 6  # after [CLS], or after the first separator (index 5)
    prompt = model.peftbench_prompt.vectors()
    torch.testing.assert_close(embeds[0, where:where + 4], prompt)
    torch.testing.assert_close(embeds[0, :where], model.bert.embeddings.word_embeddings(batch["input_ids"][0, :where]))


def test_prompt_init_from_words():
    class Tok:
        def __call__(self, word, add_special_tokens=False):
            return {"input_ids": [{"good": 11, "bad": 12}[word]]}

    model = tiny_model("bert")
    spec = load_method("prompt", **{"prompt.init": "words", "prompt.init_words": ["good", "bad"], "prompt.length": 3})
    apply_method(model, spec, tokenizer=Tok())
    table = model.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(model.peftbench_prompt.prompt.detach(), table[[11, 12, 11]])


@pytest.mark.parametrize("name", ["prefix", "mam", "ptuning"])
def test_export_keeps_only_the_vectors_and_the_outputs(name):
    _, model, _, report = _adapted("bert", name)
    batch = tiny_batch()
    with torch.no_grad():
        before = model(**batch).logits
    assert export_reparameterisations(model) == 1
    with torch.no_grad():
        after = model(**batch).logits
    torch.testing.assert_close(before, after, atol=1e-6, rtol=0)
    kept = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert kept == report.stored  # what remains trainable is exactly what the report says is stored


def test_learned_scale_trains():
    _, model, _, _ = _adapted("bert", "scaled_pa", **{"adapter.learn_scale": True})
    scales = [p for n, p in model.named_parameters() if n.endswith("composition.s")]
    assert len(scales) == 2 and all(p.requires_grad and float(p.detach()) == 4.0 for p in scales)


def test_applying_twice_is_refused():
    _, model, spec, _ = _adapted("bert", "lora")
    with pytest.raises(ValueError, match="already carries"):
        apply_method(model, spec)
