"""Which of our methods Hugging Face peft can hold, and how: one entry per peft adapter type (issue 29).

A method is peft-representable when every module is of one kind:

- ``lora``: form=low_rank, parallel, trained projections, on weights: peft's LoRA, with ``use_dora`` for
  ``magnitude=true`` (DoRA), ``use_rslora`` for ``scale_rule=alpha_over_sqrt_r``, and PiSSA written as peft's own
  conversion of a PiSSA adapter to a LoRA of the original weights (rank 2r: [A; A₀], [B, −B₀], since
  W₀ − sB₀A₀ + sBA = W₀ + s[B, −B₀][A; A₀]), so that it loads onto the untouched base model;
- ``ia3``: form=diagonal (peft's IA3; ``ffn_inner`` modules are its ``feedforward_modules``);
- ``vera``: projections=shared_random (peft's VeRA, the frozen projections saved with it).

:func:`peft_adapter` gives the adapter config and the tensors of a reloaded run under peft's state-dict names; the
task head goes in ``modules_to_save``.
"""

from __future__ import annotations

import math

import torch

from peftbench.space.low_rank import DoraLinear, SharedProjections, VeraDelta
from peftbench.space.modules import Bottleneck, Diagonal, InputScaledLinear
from peftbench.space.spec import WEIGHT_REPRESENTATIONS, MethodSpec, ModuleSpec

KINDS = ("lora", "ia3", "vera")


def peft_kind(module: ModuleSpec) -> str | None:
    """The peft adapter type that holds this module, or None."""
    on_weights = all(r in WEIGHT_REPRESENTATIONS for r in module.representation)
    if module.form == "diagonal":
        return "ia3"
    if module.form != "low_rank" or module.insertion != "parallel" or module.learn_scale or not on_weights:
        return None
    return "vera" if module.projections == "shared_random" else "lora"


def peft_adapter(model: torch.nn.Module, spec: MethodSpec, heads: list[str]) -> tuple[dict, dict[str, torch.Tensor]]:
    """The adapter config and the tensors (peft's names) of ``model``, which carries ``spec`` (one peft kind)."""
    module = next(iter(spec.modules.values()))
    kind = peft_kind(module)
    tensors: dict[str, torch.Tensor] = {}
    targets: list[str] = []
    feedforward: list[str] = []
    for name, wrapper in model.named_modules():
        delta = getattr(wrapper, "delta", None)
        key = f"base_model.model.{name}"
        if isinstance(delta, Diagonal):
            ff = isinstance(wrapper, InputScaledLinear)
            tensors[f"{key}.ia3_l"] = delta.l.detach()[None, :] if ff else delta.l.detach()[:, None]
            feedforward += [name] if ff else []
        elif isinstance(delta, VeraDelta):
            tensors[f"{key}.vera_lambda_b"] = delta.b.detach()
            tensors[f"{key}.vera_lambda_d"] = delta.d.detach()
        elif isinstance(delta, Bottleneck):
            down, up = delta.down.weight.detach(), delta.up.weight.detach()
            if module.init == "pissa":  # the trained factors with the initial ones removed again, as peft converts
                down, up = torch.cat([down, delta.initial_down]), torch.cat([up, -delta.initial_up], dim=1)
            tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = down, up
            if isinstance(wrapper, DoraLinear):
                tensors[f"{key}.lora_magnitude_vector"] = wrapper.magnitude.m.detach()
        else:
            continue
        targets.append(name)
    for name, p in model.named_parameters():
        if p.requires_grad and not any(name.startswith(f"{t}.") for t in targets):  # the task head
            tensors[f"base_model.model.{name}"] = p.detach()
    common = {"task_type": "SEQ_CLS", "target_modules": sorted(targets), "modules_to_save": heads,
              "inference_mode": True}
    if kind == "ia3":
        return {"peft_type": "IA3", **common, "feedforward_modules": sorted(feedforward), "fan_in_fan_out": False,
                "init_ia3_weights": True}, tensors
    if kind == "vera":
        shared = next(m for m in model.modules() if isinstance(m, SharedProjections))
        tensors["base_model.vera_A"], tensors["base_model.vera_B"] = shared.A, shared.B
        return {"peft_type": "VERA", **common, "r": module.r, "projection_prng_key": module.projection_key,
                "save_projection": True, "vera_dropout": module.dropout, "d_initial": 0.1, "bias": "none",
                "fan_in_fan_out": False, "init_weights": True}, tensors
    r = 2 * module.r if module.init == "pissa" else module.r
    rank_stabilised = module.scale_rule == "alpha_over_sqrt_r"
    s = module.s if module.composition == "scale" else 1.0
    alpha = s * (math.sqrt(r) if rank_stabilised else r)  # peft's s: α/√r (use_rslora) or α/r
    return {"peft_type": "LORA", **common, "r": r, "lora_alpha": alpha, "lora_dropout": module.dropout,
            "bias": "none", "fan_in_fan_out": False, "use_rslora": rank_stabilised, "use_dora": module.magnitude,
            "init_lora_weights": True}, tensors
