"""Evaluation: an evaluation split batched by length, its predictions in the dataset's row order, the GLUE scores of
the held-out split (model selection) and of the dev splits (what a run reports), and the prefix gate λ per layer.

A non-finite logit or metric fails the run (`NonFiniteOutput`); constant predictions, whose correlation is undefined,
make a held-out epoch unselectable and fail the run on dev (`ConstantPredictions`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from peftbench.run.batching import length_sorted_order, row_lengths
from peftbench.run.metrics import compute_glue_metrics
from peftbench.run.tasks import get_task
from peftbench.space.prefix import PrefixHeads


class NonFiniteOutput(RuntimeError):
    """The model's logits or a metric on an evaluation split are NaN or infinite: the run did not finish."""


class ConstantPredictions(NonFiniteOutput):
    """The model gave every row the same prediction, so a correlation metric (Pearson, MCC) is undefined.

    On the held-out split at the end of an epoch this makes that epoch unselectable (a later one may learn); on
    the reported split, or at every epoch, the run fails: it collapsed.
    """


@dataclass
class EvalSplit:
    """An evaluation split batched from its longest to its shortest row; ``order`` maps batch rows to dataset rows."""

    name: str
    loader: Any
    order: np.ndarray


def eval_split(name: str, dataset, batch_size: int, collator) -> EvalSplit:
    order = length_sorted_order(row_lengths(dataset))
    loader = DataLoader(dataset.select(order), batch_size=batch_size, collate_fn=collator)
    return EvalSplit(name, loader, order)


@torch.no_grad()
def predict(model, split: EvalSplit, accelerator: Accelerator, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (class ids, or scores for a regression task) and references, in the dataset's row order.

    Non-finite logits raise :class:`NonFiniteOutput`: an argmax over NaN would pass for a prediction.
    """
    model.eval()
    preds, refs = [], []
    for batch in split.loader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        logits, labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        preds.append(logits.float().cpu())
        refs.append(labels.cpu())
    logits = torch.cat(preds)
    bad = int((~torch.isfinite(logits)).any(-1).sum())
    if bad:
        raise NonFiniteOutput(f"{bad} of {len(logits)} rows of {split.name} have non-finite logits; "
                              f"the model diverged (try a smaller train.lr, or train.mixed_precision=no)")
    predictions = logits.squeeze(-1) if get_task(task).is_regression else logits.argmax(-1)
    in_order = np.empty(len(split.order), dtype=predictions.numpy().dtype)
    references = np.empty(len(split.order), dtype=torch.cat(refs).numpy().dtype)
    in_order[split.order], references[split.order] = predictions.numpy(), torch.cat(refs).numpy()
    return in_order, references


def score(task: str, predictions: np.ndarray, references: np.ndarray, split: str) -> dict[str, float]:
    """The GLUE metrics; a non-finite one (e.g. Pearson of constant predictions) raises NonFiniteOutput."""
    metrics = compute_glue_metrics(task, predictions, references)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        message = f"metric(s) {', '.join(bad)} on {split} are not finite: {metrics}"
        if len(predictions) and np.ptp(predictions) == 0:  # what a collapsed run does: Pearson/MCC are undefined for one constant
            raise ConstantPredictions(f"{message} (the model predicts {predictions.flat[0]:g} for all "
                                      f"{len(predictions)} rows: a collapsed run; try a smaller train.lr)")
        raise NonFiniteOutput(message)
    return metrics


def evaluate_split(model, split: EvalSplit, accelerator: Accelerator, task: str) -> dict[str, float]:
    return score(task, *predict(model, split, accelerator, task), split.name)


def score_dev(model, evals: list[EvalSplit], accelerator: Accelerator, task: str,
              gates: GateMonitor) -> tuple[dict[str, float], dict[str, dict[str, list]], dict[str, list[float]]]:
    """The dev splits' metrics (MNLI's mismatched ones suffixed ``_mm``), per-example predictions and references
    (the record's ``predictions``), and the mean gate λ per layer of each split where the method has gated
    prefixes."""
    metrics: dict[str, float] = {}
    predictions: dict[str, dict[str, list]] = {}
    gate_lambda: dict[str, list[float]] = {}
    for split in evals:
        suffix = "_mm" if split.name.endswith("mismatched") else ""
        with gates.tracking() as lambdas:
            preds, refs = predict(model, split, accelerator, task)
        metrics.update({f"{k}{suffix}": v for k, v in score(task, preds, refs, split.name).items()})
        predictions[split.name] = {"predictions": _plain(preds), "references": _plain(refs)}
        if lambdas:
            gate_lambda[split.name] = lambdas
    return metrics, predictions, gate_lambda


def _plain(values: np.ndarray) -> list:
    """Per-example predictions as JSON numbers: class ids as ints, regression scores to 7 significant digits
    (fixed decimals would flatten a near-constant output and change its Pearson correlation)."""
    if np.issubdtype(values.dtype, np.floating):
        return [float(f"{v:.7g}") for v in values]
    return [int(v) for v in values]


class GateMonitor:
    """The mean prefix gate λ(x) per layer over an evaluation split, for every gated prefix of a model.

    λ near 1 means the layer attends almost only to its prefix — the signature of a collapsed prefix run.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.heads = [m for m in model.modules() if isinstance(m, PrefixHeads) and m.gate]

    @contextlib.contextmanager
    def tracking(self) -> Iterator[list[float]]:
        """Yields a list that holds each gated layer's mean λ (bottom layer first) once the block ends."""
        out: list[float] = []
        for head in self.heads:
            head.start_gate_tracking()
        try:
            yield out
        finally:
            out.extend(head.stop_gate_tracking() for head in self.heads)
