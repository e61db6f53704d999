"""GLUE scores through the project's own `evaluate` module (`peftbench/run/glue_metric`), loaded offline.

`compute_glue_metrics("mrpc", preds, refs)` gives `{"accuracy": ..., "f1": ...}` as plain floats; the keys
and values are those of the official GLUE metric. `main_metric(task)` names the number a table reports.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from peftbench.run.tasks import get_task

if TYPE_CHECKING:
    import evaluate

GLUE_METRIC_DIR = Path(__file__).resolve().parent / "glue_metric"


@functools.cache
def load_glue_metric(config: str) -> evaluate.EvaluationModule:
    """The project's GLUE metric for one config (a task name, or mnli_matched/mnli_mismatched/hans).

    Loaded by path (evaluate never asks the hub for a local script) and kept in memory, so concurrent
    runs share no cache files.
    """
    import evaluate

    return evaluate.load(str(GLUE_METRIC_DIR), config, keep_in_memory=True)


def main_metric(task: str) -> str:
    """The key of the number reported for `task`: matthews_correlation (cola), pearson (stsb), else accuracy."""
    return get_task(task).main_metric


def compute_glue_metrics(task: str, predictions: Any, references: Any) -> dict[str, float]:
    """The GLUE metrics of `task` as plain floats.

    `predictions` are class ids, or scores for stsb; logits of shape (n, num_labels) are reduced by
    argmax and an (n, 1) regression output is flattened, so a Trainer's `EvalPrediction` can be passed as is.
    """
    info = get_task(task)
    preds = np.asarray(predictions)
    refs = np.asarray(references)
    if info.is_regression:
        preds = preds.reshape(-1) if preds.ndim == 2 and preds.shape[1] == 1 else preds
        preds, refs = preds.astype(np.float64), refs.astype(np.float64)
    else:
        preds = preds.argmax(axis=-1) if preds.ndim == 2 else preds
        if preds.ndim == 1 and not np.array_equal(preds, np.round(preds)):
            raise ValueError(
                f"{info.name}: predictions must be class ids (or logits), got non-integer values"
            )
        preds, refs = preds.astype(np.int64), refs.astype(np.int64)
    if preds.ndim != 1 or preds.shape != refs.shape:
        raise ValueError(
            f"{info.name}: predictions of shape {tuple(np.shape(predictions))} do not match references of shape "
            f"{tuple(refs.shape)}; expected one prediction per reference"
        )
    scores = load_glue_metric(info.name).compute(predictions=preds, references=refs)
    return {key: float(value) for key, value in scores.items()}
