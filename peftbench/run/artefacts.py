"""What a run leaves besides its record: the parameters it trained, reloadable.

``save`` (a top-level config key) chooses what goes into ``modules.safetensors`` beside ``result.json``:

- ``modules``: what the record counts as *stored*: the added modules after their reparameterisations are exported
  (prefix and prompt vectors, not the MLP or LSTM that produced them), trained biases and LayerNorms, the task head
  when it trains (a verbalizer's LM head does not, so it is not saved);
- ``full``: every parameter of the model (full fine-tuning's only useful artefact);
- ``none``: nothing; ``auto`` (default): ``none`` for full fine-tuning (it would be the whole model), else ``modules``.

The file's metadata holds the resolved method spec; :func:`load_run` rebuilds the model from the record's config
(base weights, the method, the saved tensors) exactly as the run scored it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ARTEFACT = "modules.safetensors"


class ArtefactError(ValueError):
    """A run folder without a usable artefact."""


def resolve_save(mode: str, train_all: bool) -> str:
    return ("none" if train_all else "modules") if mode == "auto" else mode


def stored_tensors(model: torch.nn.Module, mode: str) -> dict[str, torch.Tensor]:
    """The tensors to save: the parameters that trained (after export), or every parameter for ``full``."""
    params = model.named_parameters(remove_duplicate=True)
    chosen = {name: p for name, p in params if mode == "full" or p.requires_grad}
    return {name: p.detach().to("cpu").contiguous() for name, p in chosen.items()}


def save_artefact(model: torch.nn.Module, specs, run_dir: str | Path) -> dict[str, Any] | None:
    """Write ``modules.safetensors`` (unless ``save`` resolves to none); returns what the record says of it."""
    from dataclasses import asdict

    mode = resolve_save(specs.save, specs.method.train_all)
    if mode == "none":
        return {"save": "none"}
    tensors = stored_tensors(model, mode)
    path = Path(run_dir) / ARTEFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"save": mode, "method": json.dumps(asdict(specs.method), default=str), "format": "peftbench/1"}
    save_file(tensors, str(path), metadata=metadata)
    return {"save": mode, "file": ARTEFACT, "bytes": path.stat().st_size, "tensors": len(tensors),
            "numel": int(sum(t.numel() for t in tensors.values()))}


def _specs_of(record: dict):
    from omegaconf import OmegaConf

    from peftbench.run.config import RunConfig

    schema = OmegaConf.structured(RunConfig)
    config = {k: v for k, v in record["config"].items() if k in schema}
    return OmegaConf.to_object(OmegaConf.merge(schema, config))


def read_run_record(run_dir: str | Path) -> dict:
    """The record of a completed run folder (an `ArtefactError` otherwise), without loading anything else."""
    run_dir = Path(run_dir)
    record_path = run_dir / "result.json"
    if not record_path.is_file():
        raise ArtefactError(f"{run_dir}: no result.json; load_run needs a run folder")
    record = json.loads(record_path.read_text())
    if record.get("status") != "completed":
        raise ArtefactError(f"{run_dir}: the run is {record.get('status')!r}, not completed")
    return record


def run_specs(run_dir: str | Path):
    """The resolved specs (`peftbench.run.config.RunConfig`) of a completed run, from its record alone: what a
    command checks before it loads the model (an export's refusal)."""
    return _specs_of(read_run_record(run_dir))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained model of a completed run: base weights, the method, then the saved tensors (``save=modules``
    or ``full``). The model is in eval mode; ``model.peftbench_run`` holds the specs and the tokenizer."""
    from transformers import set_seed

    from peftbench.run.models import load_model, load_tokenizer
    from peftbench.run.setup import verbalizer_template
    from peftbench.run.tasks import get_task
    from peftbench.space.inject import apply_method, export_reparameterisations

    run_dir = Path(run_dir)
    record = read_run_record(run_dir)
    path = run_dir / ARTEFACT
    if not path.is_file():
        saved = (record.get("artefact") or {}).get("save", "not recorded")
        raise ArtefactError(f"{run_dir}: no {ARTEFACT} (save={saved}); rerun with save=modules or save=full")
    specs = _specs_of(record)
    tokenizer = load_tokenizer(specs.model)
    template = verbalizer_template(specs, tokenizer) if specs.method.head == "verbalizer" else None
    set_seed(specs.seed)  # as in training: a randomly initialised base model gets the same weights
    model = load_model(specs.model, num_labels=get_task(specs.task.name).num_labels, verbalizer=template)
    apply_method(model, specs.method, tokenizer)
    export_reparameterisations(model)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    params = dict(model.named_parameters(remove_duplicate=True))
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ArtefactError(f"{path}: {len(unknown)} tensor(s) the rebuilt model lacks, e.g. {unknown[0]}")
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise ArtefactError(f"{path}: {name} has shape {tuple(value.shape)}, the model {tuple(params[name].shape)}")
            params[name].copy_(value)
    model.peftbench_run = {"specs": specs, "tokenizer": tokenizer, "template": template, "record": record}
    return model.to(device).eval()


def predict_run(run_dir: str | Path, split: str | None = None):
    """The reloaded model's predictions on an evaluation split (default: the task's main one), in dataset order,
    with the references: what the run scored, recomputed, under the run's autocast (bf16 runs too), in a process
    that may already have reloaded or trained runs of another precision."""
    from peftbench.run.data import load_glue, subsample
    from peftbench.run.evaluate import eval_split, predict
    from peftbench.run.precision import accelerator_at, fp32_regression_head
    from peftbench.run.tasks import get_task
    from peftbench.run.tokenisation import make_collator, tokenize_glue

    model = load_run(run_dir)
    specs, tokenizer, template = (model.peftbench_run[k] for k in ("specs", "tokenizer", "template"))
    info = get_task(specs.task.name)
    split = split or info.eval_splits[0]
    data = load_glue(info.name, specs.data.source, specs.data.glue_dir, splits=[split])
    tokenized = tokenize_glue(data, tokenizer, info.name, specs.task.max_length, specs.data.cache_dir, template)
    dataset = subsample(tokenized[split], specs.data.max_eval_samples, 0)
    mixed = model.peftbench_run["record"].get("mixed_precision") or "no"
    if model.peftbench_run["record"].get("head_precision") == "fp32":
        fp32_regression_head(model, info.name)  # as the run computed its predictions
    accelerator = accelerator_at(mixed if mixed != "fp16" else "no", cpu=True)
    loader = eval_split(split, dataset, specs.train.eval_batch_size, make_collator(tokenizer))
    # prepared like the run's model: under bf16 its forward runs in the run's autocast
    model, loader.loader = accelerator.prepare(model, loader.loader)
    return predict(model, loader, accelerator, info.name)
