"""The design space of He et al. (ICLR 2022), Table 1, as typed specs.

A method is a :class:`MethodSpec`: a set of named :class:`ModuleSpec` (one point each on the four axes:
functional form, insertion form, modified representation, composition), an optional :class:`PromptSpec`
(prompts at the input), and rules for which base-model parameters train (biases for BitFit, everything for
full fine-tuning, the task head). Named methods are YAML presets of this one spec (``conf/method/``).

Validation happens in ``__post_init__``, so a spec built by Hydra (``OmegaConf.to_object``) or by hand fails
at once with a one-line :class:`SpecError` naming the field and the valid values.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

#: ``diagonal``: Δh = l, one learned value per feature (IA3's vector), composed by ``multiply``.
FORMS = ("bottleneck", "low_rank", "prefix", "diagonal")
INSERTIONS = ("sequential", "parallel")
#: Sub-layers (the adapter family reads/writes a whole sub-layer), heads (the prefix family) and
#: weight matrices (the LoRA family: the module runs beside one projection).
SUBLAYER_REPRESENTATIONS = ("attn", "ffn")
HEAD_REPRESENTATIONS = ("attn_heads",)
WEIGHT_REPRESENTATIONS = ("attn_q", "attn_k", "attn_v", "attn_o", "ffn_w1", "ffn_w2")
#: The FFN's inner activation (the input of W_2), where IA3 scales the FFN.
ACTIVATION_REPRESENTATIONS = ("ffn_inner",)
REPRESENTATIONS = SUBLAYER_REPRESENTATIONS + HEAD_REPRESENTATIONS + WEIGHT_REPRESENTATIONS + ACTIVATION_REPRESENTATIONS
COMPOSITIONS = ("add", "scale", "gate", "multiply")
BOTTLENECK_ACTIVATIONS = ("relu", "gelu", "tanh", "identity")
PREFIX_ACTIVATIONS = ("softmax", "relu")
INITS = ("bert", "lora", "words", "pissa")
#: ``trained``: W_down, W_up train (LoRA); ``shared_random``: frozen random A, B shared by every layer of the module,
#: drawn from ``projection_key``, with trainable diagonal scales d (r) and b (out) (VeRA).
PROJECTIONS = ("trained", "shared_random")
#: How s follows from ``scale`` (α) and ``r``: ``fixed`` s = scale; ``alpha_over_r`` s = α/r (LoRA's rule, kept as r
#: changes); ``alpha_over_sqrt_r`` s = α/√r (rsLoRA).
SCALE_RULES = ("fixed", "alpha_over_r", "alpha_over_sqrt_r")
REPARAMS = ("none", "mlp")
PROMPT_KINDS = ("soft", "lstm")
PROMPT_POSITIONS = ("start", "infix")
PROMPT_INITS = ("uniform", "vocab", "words")
#: ``linear``: a new classifier (the architecture's task head); ``verbalizer``: the pretrained LM head's logits of
#: the task's label words (peftbench.space.verbalizer), nothing trained at the head.
HEADS = ("linear", "verbalizer")


#: Module fields added after records were written, with their defaults: out of the coordinates and the run key at
#: the default, so that a record written before them still matches its run.
MODULE_ADDED_DEFAULTS = {"scale_rule": "fixed", "magnitude": False, "projections": "trained", "projection_key": 0}


class SpecError(ValueError):
    """A design-space spec that is malformed or names an impossible combination."""


def _one_of(where: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise SpecError(f"{where}={value!r} is not valid; valid values: {', '.join(valid)}")


LAYER_FORMS = "all, top:N, bottom:N, A-B, i,j,k"


def parse_layers(layers: str, num_layers: int | None) -> list[int]:
    """Resolve a layer selection against a model with ``num_layers`` layers (None: check the syntax, → []).

    ``all``; ``top:N`` (the last N layers, the prompt-depth ablation); ``bottom:N``; ``A-B`` (inclusive);
    or a comma list ``0,2,5``. Negative indices count from the top.
    """
    text = str(layers).strip().replace(" ", "")
    depth = re.fullmatch(r"(top|bottom):(\d+)", text)
    span = re.fullmatch(r"(-?\d+)-(-?\d+)", text)
    if not (text == "all" or depth or span or re.fullmatch(r"-?\d+(,-?\d+)*", text)):
        raise SpecError(f"layers={layers!r} is not a layer selection; valid forms: {LAYER_FORMS}")
    if depth and int(depth[2]) < 1:
        raise SpecError(f"layers={layers!r} selects no layers; {depth[1]}:N needs N >= 1")
    if num_layers is None:
        return []
    has = f"the model has layers 0..{num_layers - 1} ({num_layers} layers; negative indices count from top)"
    if text == "all":
        return list(range(num_layers))
    if depth:
        n = int(depth[2])
        if n > num_layers:
            raise SpecError(f"layers={layers!r} asks for {n} layers, but {has}; valid: {depth[1]}:N with "
                            f"1 <= N <= {num_layers}, or all")
        return list(range(num_layers - n, num_layers)) if depth[1] == "top" else list(range(n))
    indices = [int(g) for g in span.groups()] if span else [int(i) for i in text.split(",")]
    bad = [i for i in indices if not -num_layers <= i < num_layers]
    if span and bad and min(indices) >= 0:  # A-B names every layer between: 0-9 on 6 layers names 6, 7, 8, 9
        bad = [i for i in range(indices[0], indices[1] + 1) if i >= num_layers]
    if bad:
        named = f"{bad}" if len(bad) <= 12 else f"[{bad[0]}, ..., {bad[-1]}] ({len(bad)} layers)"
        raise SpecError(f"layers={layers!r} names layer(s) {named}, but {has}")
    indices = [i + num_layers if i < 0 else i for i in indices]
    chosen = list(range(indices[0], indices[1] + 1)) if span else sorted(set(indices))
    if not chosen:
        raise SpecError(f"layers={layers!r} selects no layers; A-B needs A <= B, and {has}")
    return chosen


@dataclass
class ModuleSpec:
    """One modification Δh: a point on the four axes of Table 1.

    - ``form``: ``bottleneck`` Δh = f(x W_down) W_up; ``low_rank`` Δh = x W_down W_up (no bias, no activation);
      ``prefix`` Δh = act(q P_kᵀ) P_v per head, with l = ``r`` prefix vectors per layer.
    - ``insertion``: ``sequential`` reads the sub-layer's output h; ``parallel`` reads its input x.
    - ``representation``: which representations are modified (a list: Houlsby adds one adapter at ``attn``
      and one at ``ffn``; LoRA one per weight, ``attn_q`` and ``attn_v``).
    - ``composition``: ``add`` h + Δh; ``scale`` h + s·Δh (``learn_scale`` makes s a trained scalar);
      ``gate`` (1 − λ(x)) h + λ(x) Δh, the prefix-tuning gate, exact by concatenating [P_k; K], [P_v; V];
      ``multiply`` l ⊙ h (``form=diagonal``, IA3: keys, values and ``ffn_inner``, the input of W_2).
    - ``r``: the bottleneck size, the rank, or for ``form=prefix`` the prefix length l (unused by ``diagonal``).
    - ``init``: ``lora`` (Δh = 0 at init: zero up-projection / P_v; l = 1), ``bert`` (N(0, 0.02)), ``words`` (prefix
      only: each layer's P_k, P_v start as the frozen model's keys/values of ``init_words``, Li & Liang), or
      ``pissa`` (low-rank only: B = U_r S_r^½, A = S_r^½ V_rᵀ over s from W_0's top singular triplets, and
      W_0 ← W_0 − s·BA: the output is unchanged at init; PiSSA).
    - ``scale_rule``: s from ``scale`` as α: fixed, α/r or α/√r (rsLoRA).
    - ``magnitude``: the modified weight is rescaled per output row, W' = m ⊙ (W_0 + sBA)/‖W_0 + sBA‖ with m
      trained and the norm a constant in backward (DoRA).
    - ``projections``: ``shared_random`` freezes A and B, shared by all layers (drawn from ``projection_key``), and
      trains Δh = b ⊙ B(d ⊙ A x) (VeRA).
    """

    form: str = "bottleneck"
    insertion: str = "parallel"
    representation: list[str] = field(default_factory=lambda: ["ffn"])
    composition: str = "add"
    r: int = 16
    scale: float = 1.0
    learn_scale: bool = False
    activation: str = "relu"
    init: str = "lora"
    bias: bool = True
    layer_norm: bool = False
    dropout: float = 0.0
    layers: str = "all"
    reparam: str = "none"
    reparam_hidden: int = 800
    init_words: list[str] = field(default_factory=list)  # init=words (form=prefix): the words whose keys/values start the prefix
    scale_rule: str = "fixed"
    magnitude: bool = False
    projections: str = "trained"
    projection_key: int = 0  # the PRNG seed of the shared random projections (projections=shared_random)

    def __post_init__(self) -> None:
        self.validate("module")

    def validate(self, where: str) -> None:
        _one_of(f"{where}.form", self.form, FORMS)
        _one_of(f"{where}.insertion", self.insertion, INSERTIONS)
        _one_of(f"{where}.composition", self.composition, COMPOSITIONS)
        _one_of(f"{where}.init", self.init, INITS)
        _one_of(f"{where}.reparam", self.reparam, REPARAMS)
        _one_of(f"{where}.scale_rule", self.scale_rule, SCALE_RULES)
        _one_of(f"{where}.projections", self.projections, PROJECTIONS)
        reps = list(self.representation)
        if not reps:
            raise SpecError(f"{where}.representation is empty; valid values: {', '.join(REPRESENTATIONS)}")
        for rep in reps:
            _one_of(f"{where}.representation", rep, REPRESENTATIONS)
        if len(set(reps)) != len(reps):
            raise SpecError(f"{where}.representation={reps} names a representation twice")
        if self.r < 1:
            raise SpecError(f"{where}.r={self.r} must be a positive bottleneck size / prefix length")
        if not self.scale > 0:
            raise SpecError(f"{where}.scale={self.scale} must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"{where}.dropout={self.dropout} must lie in [0, 1)")
        if self.learn_scale and self.composition != "scale":
            raise SpecError(f"{where}.learn_scale=true needs composition=scale, not {self.composition!r}")
        if self.init == "words" and (self.form != "prefix" or not self.init_words):
            raise SpecError(f"{where}.init=words starts a prefix from the frozen model's keys/values of "
                            f"{where}.init_words; it needs form=prefix and a non-empty init_words "
                            f"(form={self.form!r}, init_words={list(self.init_words)})")
        if self.init_words and self.init != "words":
            raise SpecError(f"{where}.init_words is read only with init=words (init={self.init!r})")
        try:
            parse_layers(self.layers, None)  # syntax only; the range is checked against the model
        except SpecError as err:
            raise SpecError(f"{where}.{err}") from None
        self._validate_successors(where, reps)

        if self.form == "prefix":
            if reps != ["attn_heads"]:
                raise SpecError(f"{where}: form=prefix modifies attention heads; representation must be [attn_heads], not {reps}")
            if self.insertion != "parallel":
                raise SpecError(f"{where}: form=prefix is a parallel insertion (it reads the attention input); insertion must be parallel")
            _one_of(f"{where}.activation (form=prefix)", self.activation, PREFIX_ACTIVATIONS)
            if self.composition == "gate" and self.activation != "softmax":
                raise SpecError(f"{where}: composition=gate needs activation=softmax (the gate λ(x) comes from the joint softmax)")
            if self.layer_norm:
                raise SpecError(f"{where}: layer_norm applies to bottleneck/low_rank modules, not form=prefix")
        elif self.form != "diagonal":
            if "attn_heads" in reps:
                raise SpecError(f"{where}: representation attn_heads needs form=prefix, not form={self.form!r}")
            if self.composition == "gate":
                raise SpecError(f"{where}: composition=gate needs form=prefix (valid compositions for {self.form}: add, scale)")
            if self.reparam != "none":
                raise SpecError(f"{where}: reparam={self.reparam!r} applies to form=prefix only")
            if self.form == "low_rank":
                if self.activation not in ("identity", "relu"):
                    raise SpecError(f"{where}: form=low_rank has no activation; set activation=identity")
            else:
                _one_of(f"{where}.activation", self.activation, BOTTLENECK_ACTIVATIONS)

    def _validate_successors(self, where: str, reps: list[str]) -> None:
        """The axes of the methods after the paper: IA3's diagonal form, DoRA, VeRA, rsLoRA and PiSSA."""
        on_weights = all(r in WEIGHT_REPRESENTATIONS for r in reps)
        if (self.form == "diagonal") != (self.composition == "multiply"):
            raise SpecError(f"{where}: form=diagonal goes with composition=multiply (l ⊙ h) and only with it "
                            f"(form={self.form!r}, composition={self.composition!r})")
        if "ffn_inner" in reps and self.form != "diagonal":
            raise SpecError(f"{where}: representation ffn_inner (the FFN's inner activation) needs form=diagonal")
        if self.form == "diagonal":
            if not all(r in WEIGHT_REPRESENTATIONS + ACTIVATION_REPRESENTATIONS for r in reps):
                raise SpecError(f"{where}: form=diagonal scales weight outputs or ffn_inner; valid representations: "
                                f"{', '.join(WEIGHT_REPRESENTATIONS + ACTIVATION_REPRESENTATIONS)}, not {reps}")
            if self.reparam != "none" or self.learn_scale or self.layer_norm:
                raise SpecError(f"{where}: form=diagonal is the vector l alone; reparam, learn_scale and layer_norm "
                                "do not apply")
            if self.insertion != "sequential":
                raise SpecError(f"{where}: form=diagonal rescales the representation itself (l ⊙ h); insertion must "
                                "be sequential")
        if self.scale_rule != "fixed" and (self.composition != "scale" or self.learn_scale):
            raise SpecError(f"{where}.scale_rule={self.scale_rule} derives a fixed s from scale (α) and r; it needs "
                            f"composition=scale without learn_scale (composition={self.composition!r})")
        lora_like = self.form == "low_rank" and self.insertion == "parallel" and on_weights
        for axis, active, value in (("magnitude", self.magnitude, "true"),
                                    ("projections", self.projections != "trained", self.projections),
                                    ("init", self.init == "pissa", "pissa")):
            if active and not lora_like:
                raise SpecError(f"{where}.{axis}={value} applies to LoRA-form modules: form=low_rank, "
                                f"insertion=parallel, representations among {', '.join(WEIGHT_REPRESENTATIONS)}")
        if self.magnitude and self.learn_scale:
            raise SpecError(f"{where}.magnitude=true (DoRA) rescales with a fixed s; it needs learn_scale=false")
        if self.projections == "shared_random" and (self.magnitude or self.init == "pissa"):
            raise SpecError(f"{where}.projections=shared_random (VeRA) freezes A and B; it combines with neither "
                            "magnitude=true nor init=pissa")
        if self.projection_key < 0:
            raise SpecError(f"{where}.projection_key={self.projection_key} must be >= 0 (a PRNG seed)")

    @property
    def s(self) -> float:
        """The scale s of ``composition=scale`` as ``scale_rule`` derives it from ``scale`` (α) and ``r``."""
        if self.scale_rule == "alpha_over_r":
            return self.scale / self.r
        if self.scale_rule == "alpha_over_sqrt_r":
            return self.scale / math.sqrt(self.r)
        return self.scale

    @property
    def is_linear(self) -> bool:
        """Δh is linear in x (LoRA-style), so the module can be merged into a weight it runs beside."""
        return self.form == "low_rank" or (self.form == "bottleneck" and self.activation == "identity" and not self.bias)

    @property
    def identity_at_init(self) -> bool:
        """Whether Δh = 0 at initialisation (zero-initialised up-projection / P_v), so outputs equal the base's."""
        if self.form == "prefix":
            return self.init == "lora" and self.composition != "gate"
        return self.init in ("lora", "pissa")  # pissa: W_0 − sBA + sBA (to float rounding)


@dataclass
class PromptSpec:
    """Trainable vectors inserted into the input sequence.

    ``soft``: l free embeddings (Lester et al.). ``lstm``: P-tuning v1, the embeddings come from an LSTM + MLP
    encoder (discarded after training, like the prefix MLP). ``position``: ``start`` (right after the first
    token, so a [CLS] classifier still reads [CLS]; at 0 for models without one) or ``infix`` (after the first
    segment's separator). ``init``: ``uniform`` U(−0.5, 0.5), ``vocab`` (embeddings of sampled vocabulary
    tokens), ``words`` (embeddings of ``init_words``, e.g. the label names, repeated to fill l).
    """

    kind: str = "soft"
    length: int = 20
    position: str = "start"
    init: str = "vocab"
    init_words: list[str] = field(default_factory=list)
    encoder_hidden: int = 0  # lstm: hidden size of the encoder (0 = the model's hidden size)

    def __post_init__(self) -> None:
        self.validate("prompt")

    def validate(self, where: str) -> None:
        _one_of(f"{where}.kind", self.kind, PROMPT_KINDS)
        _one_of(f"{where}.position", self.position, PROMPT_POSITIONS)
        _one_of(f"{where}.init", self.init, PROMPT_INITS)
        if self.length < 1:
            raise SpecError(f"{where}.length={self.length} must be >= 1")
        if self.init == "words" and not self.init_words:
            raise SpecError(f"{where}.init=words needs {where}.init_words (e.g. the label names)")
        if self.encoder_hidden < 0:
            raise SpecError(f"{where}.encoder_hidden={self.encoder_hidden} must be >= 0")


@dataclass
class MethodSpec:
    """A PEFT method: modules on named slots, an optional prompt, and what else of the base model trains."""

    name: str = "custom"
    modules: dict[str, ModuleSpec] = field(default_factory=dict)
    prompt: PromptSpec | None = None
    train_bias: bool = False
    train_layer_norm: bool = False
    train_head: bool = True
    train_all: bool = False
    head: str = "linear"
    lr: float = 1e-4
    #: LoRA+: the lr of every up-projection W_up (LoRA's B) and, as in peft's create_loraplus_optimizer, of every
    #: 1-D parameter, as a multiple of ``lr`` (the rest: W_down = A, the head's matrices).
    lr_ratio: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        # Specs built by hand may hold plain dicts; make every part typed.
        self.modules = {k: v if isinstance(v, ModuleSpec) else ModuleSpec(**v) for k, v in dict(self.modules).items()}
        if isinstance(self.prompt, dict):
            self.prompt = PromptSpec(**self.prompt)
        for slot, module in self.modules.items():
            module.validate(f"method.modules.{slot}")
        if self.prompt is not None:
            self.prompt.validate("method.prompt")
        if not self.lr > 0:
            raise SpecError(f"method.lr={self.lr} must be > 0")
        if not (math.isfinite(self.lr_ratio) and self.lr_ratio > 0):
            raise SpecError(f"method.lr_ratio={self.lr_ratio} must be > 0 (the lr of W_up over the lr of W_down)")
        if self.lr_ratio != 1.0 and not any(m.form in ("low_rank", "bottleneck") and m.projections == "trained"
                                            for m in self.modules.values()):
            raise SpecError(f"method.lr_ratio={self.lr_ratio} sets the lr of trained up-projections (LoRA+); "
                            "the method has none (valid: 1.0, or add a form=low_rank module)")
        _one_of("method.head", self.head, HEADS)
        if self.train_all and (self.modules or self.prompt):
            raise SpecError("method.train_all=true is full fine-tuning; it takes no modules or prompt")
        trains_head = self.train_head and self.head == "linear"  # a verbalizer trains no head
        if not (self.modules or self.prompt or self.train_all or self.train_bias or trains_head):
            raise SpecError("method trains nothing: give modules, a prompt, or set train_bias/train_head/train_all")
        self.check_slots()

    def check_slots(self) -> None:
        """Two modules may not claim one representation in the same layer."""
        claims: dict[str, tuple[str, str]] = {}
        for slot, module in self.modules.items():
            for rep in module.representation:
                if rep in claims:
                    other, other_layers = claims[rep]
                    overlap = set(parse_layers(other_layers, 1000)) & set(parse_layers(module.layers, 1000))
                    if overlap:
                        raise SpecError(
                            f"method.modules.{slot} and method.modules.{other} both modify {rep!r} in layers "
                            f"{sorted(overlap)[:5]}...; give them different representations or disjoint layers"
                        )
                claims[rep] = (slot, module.layers)

    @property
    def identity_at_init(self) -> bool:
        """The adapted model computes exactly the base model's function at initialisation."""
        return self.prompt is None and all(m.identity_at_init for m in self.modules.values())

    def coordinates(self) -> dict[str, Any]:
        """The design-space coordinates of this method, as plain data for run records."""
        out: dict[str, Any] = {
            slot: {k: v for k, v in asdict(m).items() if k in (
                "form", "insertion", "representation", "composition", "r", "scale", "learn_scale",
                "activation", "layers", "reparam")}
            for slot, m in self.modules.items()
        }
        for slot, m in self.modules.items():
            if m.init == "words":  # (only then: records written before word init keep their coordinates)
                out[slot].update(init=m.init, init_words=list(m.init_words))
            if m.init == "pissa":
                out[slot]["init"] = m.init
            for key, default in MODULE_ADDED_DEFAULTS.items():  # the successors' axes, where a module sets them
                if getattr(m, key) != default:
                    out[slot][key] = getattr(m, key)
        out["prompt"] = asdict(self.prompt) if self.prompt else None
        out["train_bias"] = self.train_bias
        out["train_all"] = self.train_all
        if self.head != "linear":  # (absent for the default, so records written before the field still match)
            out["head"] = self.head
        if self.lr_ratio != 1.0:
            out["lr_ratio"] = self.lr_ratio
        return out
