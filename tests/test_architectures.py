"""One map entry per architecture: the same presets on tiny DistilBERT, ELECTRA, MPNet and a Llama decoder."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    DistilBertConfig,
    ElectraConfig,
    LlamaConfig,
    MPNetConfig,
)

from peftbench import apply_method, load_method
from peftbench.space.inject import merge_modules, unmerge_modules
from peftbench.space.spec import SpecError
from tests.conftest import tiny_batch

CONFIGS = {
    "distilbert": DistilBertConfig(vocab_size=1000, dim=32, n_layers=2, n_heads=4, hidden_dim=64, dropout=0.0,
                                   attention_dropout=0.0, seq_classif_dropout=0.0),
    "electra": ElectraConfig(vocab_size=1000, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0),
    "mpnet": MPNetConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    # grouped-query attention: 4 query heads share 2 key/value heads
    "llama": LlamaConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, pad_token_id=0),
}


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(copy.deepcopy(CONFIGS[kind])).eval()


def _batch(kind: str) -> dict:
    batch = tiny_batch()
    if kind == "llama":  # left-aligned content, padding on the right, as the tokenizer would give
        batch["input_ids"][batch["attention_mask"] == 0] = 0
    return batch


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("name", ["lora", "pa", "scaled_pa", "adapter", "prefix", "mam", "prompt", "bitfit"])
def test_presets_on_other_architectures(kind, name):
    base = _model(kind)
    model = copy.deepcopy(base)
    spec = load_method(name)
    if kind == "mpnet" and any(m.form == "prefix" for m in spec.modules.values()):
        with pytest.raises(SpecError, match="AttentionInterface"):
            apply_method(model, spec)
        return
    if kind == "llama" and name == "bitfit":
        with pytest.raises(SpecError, match="llama has no bias terms"):
            apply_method(model, spec)
        return
    report = apply_method(model, spec)
    batch = _batch(kind)
    with torch.no_grad():
        out, ref = model(**batch).logits, base(**batch).logits
    assert torch.isfinite(out).all() and out.shape == ref.shape
    if spec.identity_at_init:
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert report.paper > 0 and report.trainable > report.head
    heads = [m for n, m in model.named_modules() if n.endswith("peftbench_heads")]
    assert all(h.calls == 1 for h in heads)


def test_prefix_on_grouped_query_attention_counts_kv_heads():
    model = _model("llama")
    report = apply_method(model, load_method("ptuning_v2"))
    assert report.paper == 2 * 20 * (2 * 8) * 2  # 2·l·d_kv per layer, d_kv = 2 kv heads × head_dim 8


def test_merge_helpers_round_trip():
    model = _model("llama")
    apply_method(model, load_method("lora", **{"attn.dropout": 0.0}))
    for name, p in model.named_parameters():
        if "delta.up" in name:
            torch.nn.init.normal_(p, std=0.1)
    batch = _batch("llama")
    with torch.no_grad():
        before = model(**batch).logits
        assert merge_modules(model) == 4
        merged = model(**batch).logits
        assert unmerge_modules(model) == 4
    torch.testing.assert_close(merged, before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("name", ["prompt", "ptuning"])
def test_prompt_methods_score_a_padded_row_as_if_alone(kind, name):
    """Padding must not change a row's logits. Llama pools the last non-pad token, which it finds in input_ids;
    the prompt hook hands it inputs_embeds instead, so the hook right-aligns the content for such models."""
    model = _model(kind)
    apply_method(model, load_method(name))
    model.eval()
    batch = _batch(kind)
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # the batch has padded rows
    with torch.no_grad():
        together = model(**batch).logits
        for i, n in enumerate(lengths.tolist()):
            alone = model(**{k: v[i : i + 1, :n] for k, v in batch.items()}).logits
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-4)
