"""A run's setup, before any training: its GLUE splits tokenised (cached per task and tokenizer, so a sweep tokenises
once), the part of train held out for selection, and the model with the method applied and frozen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed

from peftbench.run.config import RunConfig
from peftbench.run.data import load_glue, pick_source, split_for_selection, subsample
from peftbench.run.models import load_model, load_tokenizer, model_config
from peftbench.run.tasks import get_task
from peftbench.run.tokenisation import make_collator, tokenize_glue
from peftbench.space.arch import arch_for
from peftbench.space.inject import MethodReport, apply_method, head_modules


@dataclass
class Prepared:
    model: torch.nn.Module
    report: MethodReport
    train: Any
    select: Any | None
    evals: dict[str, Any]
    collator: Any
    setup_s: float
    data_source: str = "local"  # where the data came from (data.source=auto resolves to local or hub)
    load_base: Any = None  # () -> the base model without the method (the inference-cost reference)


def prepare(cfg: RunConfig) -> Prepared:
    """Tokenised splits (cached per task and tokenizer, so a sweep tokenises once) and the adapted model."""
    start = time.perf_counter()
    info = get_task(cfg.task.name)
    tokenizer = load_tokenizer(cfg.model)
    template = None
    if cfg.method.head == "verbalizer":
        template = verbalizer_template(cfg, tokenizer)
    source = cfg.data.source
    if source == "auto":
        source = pick_source(info.name, cfg.data.glue_dir)[0]
    splits = load_glue(info.name, cfg.data.source, cfg.data.glue_dir)
    tokenized = tokenize_glue(splits, tokenizer, info.name, cfg.task.max_length, cfg.data.cache_dir, template)
    train = subsample(tokenized["train"], cfg.data.max_train_samples, cfg.seed)
    select = None
    if cfg.data.select_on == "held_out":
        held_out = cfg.data.held_out
        train, select = split_for_selection(train, int(held_out) if held_out >= 1 else float(held_out), cfg.seed)
    elif cfg.data.select_on != "last":
        raise ValueError(f"data.select_on={cfg.data.select_on!r} is not valid; valid values: held_out, last")
    evals = {name: subsample(tokenized[name], cfg.data.max_eval_samples, 0) for name in info.eval_splits}

    set_seed(cfg.seed)  # the same seed gives the same added-module initialisation and data order
    model = load_model(cfg.model, num_labels=info.num_labels, verbalizer=template)
    report = apply_method(model, cfg.method, tokenizer)
    if cfg.task.head_bias == "label_mean":
        set_output_bias(model, float(np.mean(train["labels"])))

    def load_base() -> torch.nn.Module:
        return load_model(cfg.model, num_labels=info.num_labels, verbalizer=template)

    return Prepared(model, report, train, select, evals, make_collator(tokenizer), time.perf_counter() - start,
                    source, load_base)


def set_output_bias(model: torch.nn.Module, value: float) -> None:
    """Start a regression head's output at `value` (``task.head_bias=label_mean``): its last Linear with one output."""
    outputs = [m for head in head_modules(model, arch_for(model)) for m in head.modules()
               if isinstance(m, torch.nn.Linear) and m.out_features == 1]
    if not outputs or outputs[-1].bias is None:
        raise ValueError(f"task.head_bias=label_mean: {type(model).__name__} has no regression output with a bias "
                         "to set; use task.head_bias=zero")
    with torch.no_grad():
        outputs[-1].bias.fill_(value)


def verbalizer_template(cfg: RunConfig, tokenizer):
    """The task's template resolved for this model's tokenizer (masked or causal LM by its architecture)."""
    from peftbench.space.verbalizer import check_template, lm_class, resolve_template

    info = get_task(cfg.task.name)
    check_template(info.name, cfg.task.template, cfg.task.label_words, info.text_fields, info.num_labels)
    arch, _ = lm_class(model_config(cfg.model, weights=False).model_type)
    return resolve_template(cfg.task.template, cfg.task.label_words, info.text_fields, tokenizer, arch.causal)
