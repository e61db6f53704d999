"""Export a run's trained modules to the tools researchers already use (``python -m peftbench.export``).

``--to peft``: methods Hugging Face peft can express as LoRA — every module ``form=low_rank``, parallel, additive
or with a fixed scale, on the weights ``attn_q``/``k``/``v``/``o``, ``ffn_w1``/``w2``, one rank and scale, no other
base parameter trained — with the task head as ``modules_to_save``. ``PeftModel.from_pretrained(base, OUT)`` then
computes the run's logits (peft's scaling lora_alpha / r equals our s); its ``base_model_name_or_path`` is the local
folder the run's weights came from where there is one, so ``AutoPeftModelForSequenceClassification.from_pretrained(OUT)``
works offline (on another machine, set it to the record's ``config.model.hub_id``). Other methods get a one-line
refusal, from the record, before the model loads.

``--merged``: the run's model with every linear module merged into the weight it runs beside, saved with
``save_pretrained`` (plus the tokenizer): zero added inference latency, loadable by ``AutoModel*`` alone. Methods
with a non-linear module, a prompt or a prefix (which a plain checkpoint cannot hold) are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from peftbench.run.artefacts import load_run, run_specs
from peftbench.run.models import ModelSpec, resolve_source
from peftbench.space.arch import arch_for
from peftbench.space.modules import ParallelLinear
from peftbench.space.spec import WEIGHT_REPRESENTATIONS, MethodSpec

PEFT_CAN = ("LoRA-form modules: form=low_rank, insertion=parallel, composition add or a fixed scale, on "
            f"{', '.join(WEIGHT_REPRESENTATIONS)}, one rank and scale, head=linear, no other base parameter trained")


class ExportError(ValueError):
    """A run that the chosen format cannot express."""


def peft_refusal(spec: MethodSpec) -> str | None:
    """Why peft cannot express this method as LoRA (one line), or None."""
    name = f"method {spec.name}"
    if spec.train_all or spec.prompt is not None or not spec.modules:
        return f"{name} is not LoRA (full fine-tuning, a prompt, or no modules); peft export takes {PEFT_CAN}"
    for slot, m in spec.modules.items():
        bad = (m.form != "low_rank" or m.insertion != "parallel" or m.learn_scale
               or any(r not in WEIGHT_REPRESENTATIONS for r in m.representation))
        if bad:
            return (f"{name}: module {slot} is form={m.form}, insertion={m.insertion}, composition={m.composition}"
                    f"{' (learned scale)' if m.learn_scale else ''} on {m.representation}; peft export takes {PEFT_CAN}")
    if spec.train_bias or spec.train_layer_norm or spec.head != "linear":
        return f"{name} trains base biases/LayerNorms or uses a verbalizer; peft export takes {PEFT_CAN}"
    if len({(m.r, m.scale) for m in spec.modules.values()}) > 1:
        return f"{name}: its modules have different ranks or scales; peft export takes {PEFT_CAN}"
    return None


def _wrappers(model: torch.nn.Module) -> dict[str, ParallelLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ParallelLinear)}


def base_model_source(spec: ModelSpec) -> str | None:
    """What ``base_model_name_or_path`` names: the local folder the run's weights were loaded from where there is
    one (so that ``AutoPeftModel*.from_pretrained(OUT)`` works offline), else the hub id."""
    local = resolve_source(spec.pretrained)
    return str(Path(local).resolve()) if local and Path(local).is_dir() else spec.hub_id or spec.pretrained


def to_peft(run_dir: str | Path, out: str | Path) -> Path:
    """Write the run as a peft LoRA adapter in ``out``; returns ``out``. A method peft cannot express is refused
    from the record, before the model loads."""
    refusal = peft_refusal(run_specs(run_dir).method)
    if refusal:
        raise ExportError(refusal)
    model = load_run(run_dir)
    specs = model.peftbench_run["specs"]
    module = next(iter(specs.method.modules.values()))
    wrappers = _wrappers(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, wrapper in wrappers.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = wrapper.delta.down.weight.detach().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = wrapper.delta.up.weight.detach().contiguous()
    heads = list(arch_for(model).head)
    for name, p in model.named_parameters():
        if p.requires_grad and ".delta." not in name:  # the task head (modules_to_save)
            tensors[f"base_model.model.{name}"] = p.detach().contiguous()
    model_spec = specs.model
    config = {
        "peft_type": "LORA", "task_type": "SEQ_CLS", "r": module.r, "lora_alpha": module.scale * module.r,
        "lora_dropout": module.dropout, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
        "target_modules": sorted(wrappers), "modules_to_save": heads, "init_lora_weights": True,
        "base_model_name_or_path": base_model_source(model_spec), "inference_mode": True,
    }  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.cpu() for k, v in tensors.items()}, str(out / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    return out


def merged_refusal(spec: MethodSpec) -> str | None:
    if spec.prompt is not None:
        return f"method {spec.name} inserts a prompt, which a plain transformers checkpoint cannot hold"
    for slot, m in spec.modules.items():
        if not (m.is_linear and m.insertion == "parallel"
                and all(r in WEIGHT_REPRESENTATIONS for r in m.representation)):
            return (f"method {spec.name}: module {slot} (form={m.form}, insertion={m.insertion}, "
                    f"{m.representation}) is not a linear module beside a weight; only those merge")
    if spec.head != "linear":
        return f"method {spec.name} uses a verbalizer head; --merged writes sequence-classification checkpoints"
    return None


def to_merged(run_dir: str | Path, out: str | Path) -> Path:
    """Write the run's model with its linear modules merged, as a plain transformers checkpoint (refused from the
    record, before the model loads, where it cannot be)."""
    refusal = merged_refusal(run_specs(run_dir).method)
    if refusal:
        raise ExportError(refusal)
    model = load_run(run_dir)
    tokenizer = model.peftbench_run["tokenizer"]
    for name, wrapper in _wrappers(model).items():
        wrapper.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, wrapper.base_layer)
    del model.peftbench_run
    out = Path(out)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
