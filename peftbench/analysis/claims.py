"""The claims FINDINGS.md tests, declared before their runs: each a statement of a paper read as expectations.

An `Expectation` says how cell A should compare with cell B (better, worse, or ≈ within a declared margin, in a
budget tier); a `Claim` groups the expectations of one statement of the paper (or of a method's own paper) with the
experiment that tests it. `peftbench.analysis.findings` checks them against the records; this module is data.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the budget below which a cell belongs to the small tier of `representation` (~0.1% vs ~3.6% in the paper)
SMALL_TIER_PCT = 1.0
#: the declared effect (points ×100) of a directional expectation, and the margin of an equivalence one
DEFAULT_EFFECT, DEFAULT_MARGIN = 1.0, 1.0
@dataclass(frozen=True)
class Expectation:
    """The paper says A compares with B as `sign` (+1 better, −1 worse, 0 no difference within ±`margin` points),
    in budget `tier` ("small" below `SMALL_TIER_PCT` % of the model, "large" above, None: any); `effect` (points)
    is the difference a directional expectation is powered for."""

    a: str
    b: str
    sign: int
    tier: str | None = None
    margin: float = DEFAULT_MARGIN
    effect: float = DEFAULT_EFFECT

    def __post_init__(self) -> None:
        if self.sign not in (-1, 0, 1) or self.tier not in (None, "small", "large"):
            raise ValueError(f"bad expectation {self}: sign in -1/0/1, tier None/small/large")
        if not (self.margin > 0 and self.effect > 0):
            raise ValueError(f"bad expectation {self}: margin and effect must be > 0 points")


@dataclass(frozen=True)
class Claim:
    key: str
    experiment: str
    statement: str
    source: str
    expectations: tuple[Expectation, ...]


E = Expectation
_ATTN_VS_FFN = (
    ("pa_ffn", "pa_attn"),
    ("lora_ffn", "lora_attn"),
    ("pa_ffn", "mh_pa_heads"),
    ("pa_ffn", "prefix_heads"),
)
CLAIMS: tuple[Claim, ...] = (
    Claim("table2", "table2", "Table 2's ordering: full fine-tuning ≥ MAM ≈ LoRA ≈ adapter > prefix > BitFit "
          "(against LoRA: full better, MAM and adapter within 0.2 points in the paper, tested here at ±1.0; prefix "
          "and BitFit worse)", "Table 2",
          (E("full", "lora", 1), E("mam", "lora", 0), E("adapter", "lora", 0), E("prefix", "lora", -1),
           E("bitfit", "lora", -1))),
    Claim("parallel", "insertion", "Parallel insertion beats sequential insertion, at the attention and at the FFN",
          "Table 3", (E("parallel_adapter_attn", "sequential_adapter_attn", 1),
                      E("parallel_adapter_ffn", "sequential_adapter_ffn", 1))),
    Claim("attention_small", "representation", "At a small budget (~0.1%), modifying the attention beats "
          "modifying the FFN", "Table 5", tuple(E(a, b, -1, "small") for a, b in _ATTN_VS_FFN)),
    Claim("ffn_large", "representation", "At a large budget (~3.6%), modifying the FFN beats modifying the "
          "attention", "Table 5", tuple(E(a, b, 1, "large") for a, b in _ATTN_VS_FFN)),
    Claim("scaling", "composition", "Scaled composition (s=4) beats plain addition and the gate", "Table 4",
          (E("scaled_pa_s4", "pa_add", 1), E("lora_s4", "lora_s1", 1), E("scaled_pa_s4", "prefix_gate", 1))),
    Claim("mam", "mam_ablation", "MAM (prefix at the attention + scaled parallel adapter at the FFN) is the best "
          "combination: it beats each variation and each ingredient alone at its budget", "§4.6, Table 6",
          tuple(E("mam", b, 1) for b in ("mam_s4", "mam_add", "mam_mh_pa", "mam_seq_ffn", "prefix_l32",
                                          "scaled_pa_r32_s2"))),
    # The method papers' own ablations (issue 11): Li & Liang 2021, Lester et al. 2021, Liu et al. 2021/2022.
    Claim("prefix_length", "prefix_ablation", "A longer prefix helps up to a threshold, then changes little "
          "(l=16 beats l=4; l=64 ≈ l=16)", "Li & Liang §7.1", (E("prefix_l16", "prefix_l4", 1),
                                                                E("prefix_l64", "prefix_l16", 0))),
    Claim("prefix_depth", "prefix_ablation", "A prefix at every layer beats trainable vectors at the input only "
          "(\"embedding-only\")", "Li & Liang §7.2", (E("prefix_l16", "prefix_embed", 1),)),
    Claim("prefix_infix", "prefix_ablation", "Prefixing beats infixing (here at the input, where the two differ for "
          "an encoder: a key/value prefix has no position)", "Li & Liang §7.2", (E("prefix_embed", "prefix_infix", 1),)),
    Claim("prefix_words", "prefix_ablation", "Initialising the prefix from real words' activations beats a random "
          "initialisation (most in low-data settings)", "Li & Liang §7.3", (E("prefix_words", "prefix_l16", 1),)),
    Claim("prompt_length", "prompt_ablation", "Longer prompts help up to ~20 tokens; beyond, little changes "
          "(l=20 beats l=1 and l=5; l=100 ≈ l=20)", "Lester et al. §3.2, Fig. 3a",
          (E("prompt_l20", "prompt_l1", 1), E("prompt_l20", "prompt_l5", 1), E("prompt_l100", "prompt_l20", 0))),
    Claim("prompt_init", "prompt_ablation", "Class-label initialisation beats sampled vocabulary, which beats random "
          "uniform (at sizes below XXL)", "Lester et al. §3.2, Fig. 3b",
          (E("prompt_labels", "prompt_l20", 1), E("prompt_l20", "prompt_uniform", 1))),
    Claim("prompt_lstm", "prompt_ablation", "P-tuning's BiLSTM+MLP prompt encoder beats free prompt vectors",
          "Liu et al. 2021 (GPT understands, too) §3", (E("prompt_lstm", "prompt_l20", 1),)),
    Claim("ptv2_reparam", "ptuning_v2_ablation", "The MLP reparameterisation of deep prompts makes no consistent "
          "difference (its effect is task-dependent)", "P-tuning v2 §4.3", (E("ptv2_mlp", "ptv2", 0),)),
    Claim("ptv2_depth", "ptuning_v2_ablation", "With prompts in the same number of layers, the deepest layers beat "
          "the shallowest", "P-tuning v2 §4.3, Fig. 4", (E("ptv2_top3", "ptv2_bottom3", 1),)),
    Claim("ptv2_head", "ptuning_v2_ablation", "A verbalizer over the LM head and a new linear head make no clear "
          "difference (here on SmolLM2)", "P-tuning v2 §4.3, Table 6",
          (E("smollm2_verbalizer", "smollm2_linear", 0),)),
    # The methods after the paper (issue 29), each claim as its own paper states it against LoRA; declared before
    # the modern experiment ran.
    Claim("dora", "modern", "DoRA beats LoRA at equal rank", "Liu et al. 2024 (DoRA)", (E("dora", "lora", 1),)),
    Claim("vera", "modern", "VeRA matches LoRA (within a point) at a small fraction of its budget (here a twelfth)",
          "Kopiczko et al. 2024 (VeRA)", (E("vera", "lora", 0),)),
    Claim("rslora", "modern", "At a high rank (r=64), rank-stabilised scaling α/√r beats LoRA's α/r",
          "Kalajdzievski 2023 (rsLoRA)", (E("rslora_r64", "lora_r64", 1),)),
    Claim("loraplus", "modern", "Training B at a larger lr than A (λ=16) beats LoRA", "Hayou et al. 2024 (LoRA+)",
          (E("loraplus", "lora", 1),)),
    Claim("pissa", "modern", "Starting A, B from W₀'s principal singular triplets beats LoRA's init",
          "Meng et al. 2024 (PiSSA)", (E("pissa", "lora", 1),)),
    Claim("ia3", "modern", "(IA)³ beats LoRA with fewer parameters (shown in few-shot settings)",
          "Liu et al. 2022 (T-Few)", (E("ia3", "lora", 1),)),
)  # fmt: skip
EXPERIMENTS = ("table2", "insertion", "representation", "composition", "mam_ablation", "bottleneck",
               "prefix_ablation", "prompt_ablation", "ptuning_v2_ablation", "modern")
#: paper Table 2 (roberta-base, median of 5 seeds): method → (share of parameters, MNLI, SST-2)
PAPER_TABLE2 = {
    "full": ("100%", 87.6, 94.6), "bitfit": ("0.1%", 84.7, 93.7), "prefix": ("0.5%", 86.3, 94.0),
    "lora": ("0.5%", 87.2, 94.2), "adapter": ("0.5%", 87.2, 94.2), "mam": ("0.5%", 87.4, 94.2),
}  # fmt: skip
