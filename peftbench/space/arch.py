"""One declarative map per architecture: where the design space's representations live in a model.

All architecture knowledge is here, as attribute paths (strings); the injection code is generic. Paths under
``layers`` are relative to one transformer layer; ``head`` paths are relative to the task model's root.
Adding an architecture is one :class:`ArchMap` entry, provided its attention goes through transformers'
``AttentionInterface`` (needed only by head-level modules: prefixes and multi-head parallel adapters).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ArchMap:
    """Attribute paths of one architecture.

    - ``layers``: the list of transformer layers, relative to ``model.base_model``.
    - ``attention``: the self-attention module that calls the attention function (holds q/k/v), per layer.
    - ``attn_q`` … ``ffn_w2``: the projections (``ffn_w1`` may be several, e.g. Llama's gate and up projections).
    - ``attn_in`` / ``ffn_in``: a projection whose *input* is the sub-layer's input x (parallel insertion reads it).
    - ``attn_out`` / ``ffn_out``: the projection whose *output* is the sub-layer's output h, before the residual
      (sequential insertion reads it; both insertions write there).
    - ``head``: the task head (trained unless ``train_head=false``; never counted in the paper's budget).
    - ``first_token_is_cls``: prompts at ``start`` go after the first token so a [CLS] classifier still reads it.
    - ``pools_last_token``: the classifier reads the last non-pad token, which transformers finds in
      ``input_ids``; with ``inputs_embeds`` (prompt methods) it reads the last position, so the prompt hook moves
      each row's content to the end (decoders use relative positions, so the shift changes nothing else).
    - ``absolute_positions``: a table of learned positions (``max_position_embeddings`` rows) bounds an input's
      length; ``positions_after_padding``: its positions start at ``pad_token_id + 1`` (RoBERTa), not 0.
    - ``lm_head``: the LM head of the architecture's LM class (``AutoModelForMaskedLM`` / ``AutoModelForCausalLM``
      when ``causal``), relative to that model's root; it maps hidden states to vocabulary logits (the verbalizer).
    """

    layers: str
    attention: str
    attn_q: str
    attn_k: str
    attn_v: str
    attn_o: str
    ffn_w1: tuple[str, ...]
    ffn_w2: str
    head: tuple[str, ...]
    first_token_is_cls: bool = True
    attention_hook: bool = True
    pools_last_token: bool = False
    absolute_positions: bool = True
    positions_after_padding: bool = False
    lm_head: str | None = None
    causal: bool = False

    @property
    def attn_in(self) -> str:
        return self.attn_q

    @property
    def ffn_in(self) -> str:
        return self.ffn_w1[0]

    @property
    def ffn_inner(self) -> str:
        """The FFN's inner activation is the input of W_2: a module there wraps W_2 and reads its input."""
        return self.ffn_w2

    @property
    def attn_out(self) -> str:
        return self.attn_o

    @property
    def ffn_out(self) -> str:
        return self.ffn_w2

    def weight_paths(self, representation: str) -> tuple[str, ...]:
        """The projections a weight-level representation (``attn_q`` … ``ffn_w2``, ``ffn_inner``) names."""
        value = getattr(self, representation)
        return value if isinstance(value, tuple) else (value,)


_BERT_LIKE = dict(
    layers="encoder.layer",
    attention="attention.self",
    attn_q="attention.self.query",
    attn_k="attention.self.key",
    attn_v="attention.self.value",
    attn_o="attention.output.dense",
    ffn_w1=("intermediate.dense",),
    ffn_w2="output.dense",
)

ARCHITECTURES: dict[str, ArchMap] = {
    # BERT's pooler (dense d×d on [CLS]) is part of its classification head, like RoBERTa's head.dense.
    "bert": ArchMap(**_BERT_LIKE, head=("classifier", "bert.pooler"), lm_head="cls"),
    "roberta": ArchMap(**_BERT_LIKE, head=("classifier",), lm_head="lm_head", positions_after_padding=True),
    "xlm-roberta": ArchMap(**_BERT_LIKE, head=("classifier",), positions_after_padding=True),
    "electra": ArchMap(**_BERT_LIKE, head=("classifier",)),
    "distilbert": ArchMap(
        layers="transformer.layer",
        attention="attention",
        attn_q="attention.q_lin",
        attn_k="attention.k_lin",
        attn_v="attention.v_lin",
        attn_o="attention.out_lin",
        ffn_w1=("ffn.lin1",),
        ffn_w2="ffn.lin2",
        head=("pre_classifier", "classifier"),
    ),
    "mpnet": ArchMap(
        layers="encoder.layer",
        attention="attention.attn",
        attn_q="attention.attn.q",
        attn_k="attention.attn.k",
        attn_v="attention.attn.v",
        attn_o="attention.attn.o",
        ffn_w1=("intermediate.dense",),
        ffn_w2="output.dense",
        head=("classifier",),
        attention_hook=False,  # MPNet computes attention inline (relative position bias), not via the interface
        positions_after_padding=True,
    ),
    "llama": ArchMap(
        layers="layers",
        attention="self_attn",
        attn_q="self_attn.q_proj",
        attn_k="self_attn.k_proj",
        attn_v="self_attn.v_proj",
        attn_o="self_attn.o_proj",
        ffn_w1=("mlp.gate_proj", "mlp.up_proj"),
        ffn_w2="mlp.down_proj",
        head=("score",),
        first_token_is_cls=False,
        pools_last_token=True,
        absolute_positions=False,  # rotary
        lm_head="lm_head",
        causal=True,
    ),
}


def arch_for(model: nn.Module) -> ArchMap:
    """The map for a transformers model, by its ``config.model_type``; a clear error for unknown ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"architecture {model_type!r} has no entry in peftbench.space.arch.ARCHITECTURES; "
            f"supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[model_type]


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule(path)`` with an error that names the architecture map entry."""
    try:
        return root.get_submodule(path)
    except AttributeError as err:
        raise ValueError(f"module path {path!r} not found in {type(root).__name__}; fix its peftbench.space.arch entry") from err


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Install ``module`` at ``path`` (``setattr`` on its parent): how wrappers replace the layer they wrap."""
    parent_path, _, name = path.rpartition(".")
    parent = get_submodule(root, parent_path) if parent_path else root
    setattr(parent, name, module)
