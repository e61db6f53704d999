"""Export a run's trained modules to the tools researchers already use (``python -m peftbench.export``).

``--to peft``: methods Hugging Face peft can express as LoRA (with DoRA, rsLoRA, PiSSA), IA3 or VeRA — every module
of one of those kinds (`peftbench.run.peft_format`), one rank and scale, no other base parameter trained — with the
task head as ``modules_to_save``. ``PeftModel.from_pretrained(base, OUT)`` then computes the run's logits (peft's
scaling lora_alpha / r equals our s); its ``base_model_name_or_path`` is the local folder the run's weights came from
where there is one, so ``AutoPeftModelForSequenceClassification.from_pretrained(OUT)`` works offline (on another
machine, set it to the record's ``config.model.hub_id``). Other methods get a one-line refusal, from the record,
before the model loads.

``--merged``: the run's model with every module that is linear in the weight it modifies (LoRA, DoRA, VeRA, PiSSA,
IA3) merged into that weight, saved with ``save_pretrained`` (plus the tokenizer): zero added inference latency,
loadable by ``AutoModel*`` alone. Methods with a non-linear module, a prompt or a prefix (which a plain checkpoint
cannot hold) are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from peftbench.run.artefacts import load_run, run_specs
from peftbench.run.models import ModelSpec, resolve_source
from peftbench.run.peft_format import peft_adapter, peft_kind
from peftbench.space.arch import arch_for
from peftbench.space.inject import mergeable_wrappers
from peftbench.space.spec import WEIGHT_REPRESENTATIONS, MethodSpec

PEFT_CAN = ("LoRA-form modules (form=low_rank, insertion=parallel, composition add or a fixed scale, on "
            f"{', '.join(WEIGHT_REPRESENTATIONS)}; DoRA, rsLoRA, PiSSA, VeRA included) or IA3's form=diagonal, one "
            "kind, rank and scale, head=linear, no other base parameter trained")


class ExportError(ValueError):
    """A run that the chosen format cannot express."""


def peft_refusal(spec: MethodSpec) -> str | None:
    """Why peft cannot express this method as LoRA (one line), or None."""
    name = f"method {spec.name}"
    if spec.train_all or spec.prompt is not None or not spec.modules:
        return f"{name} is not LoRA (full fine-tuning, a prompt, or no modules); peft export takes {PEFT_CAN}"
    for slot, m in spec.modules.items():
        if peft_kind(m) is None:
            return (f"{name}: module {slot} is form={m.form}, insertion={m.insertion}, composition={m.composition}"
                    f"{' (learned scale)' if m.learn_scale else ''} on {m.representation}; peft export takes {PEFT_CAN}")
    if spec.train_bias or spec.train_layer_norm or spec.head != "linear":
        return f"{name} trains base biases/LayerNorms or uses a verbalizer; peft export takes {PEFT_CAN}"
    shapes = {(peft_kind(m), m.r if m.form != "diagonal" else 0, m.s, m.scale_rule, m.magnitude, m.init,
               m.projection_key) for m in spec.modules.values()}
    if len(shapes) > 1:
        return f"{name}: its modules differ in kind, rank, scale or init; peft export takes {PEFT_CAN}"
    return None


def base_model_source(spec: ModelSpec) -> str | None:
    """What ``base_model_name_or_path`` names: the local folder the run's weights were loaded from where there is
    one (so that ``AutoPeftModel*.from_pretrained(OUT)`` works offline), else the hub id."""
    local = resolve_source(spec.pretrained)
    return str(Path(local).resolve()) if local and Path(local).is_dir() else spec.hub_id or spec.pretrained


def to_peft(run_dir: str | Path, out: str | Path) -> Path:
    """Write the run as a peft adapter (LoRA, IA3 or VeRA) in ``out``; returns ``out``. A method peft cannot
    express is refused from the record, before the model loads."""
    refusal = peft_refusal(run_specs(run_dir).method)
    if refusal:
        raise ExportError(refusal)
    model = load_run(run_dir)
    specs = model.peftbench_run["specs"]
    config, tensors = peft_adapter(model, specs.method, list(arch_for(model).head))
    config["base_model_name_or_path"] = base_model_source(specs.model)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
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
        if not (m.form == "diagonal" or (m.is_linear and m.insertion == "parallel"
                                         and all(r in WEIGHT_REPRESENTATIONS for r in m.representation))):
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
    for name, wrapper in mergeable_wrappers(model).items():
        wrapper.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, wrapper.base_layer)
    del model.peftbench_run
    out = Path(out)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
