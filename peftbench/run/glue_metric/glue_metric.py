"""The GLUE metric as an `evaluate` module, owned by the project so it loads without the hub.

Equivalent to the official `evaluate-metric/glue` module (same config names, keys and values):

- cola: matthews_correlation
- stsb: pearson, spearmanr (inputs are float32 scores, as in the official module)
- mrpc, qqp: accuracy, f1 (f1 of the positive class, label 1)
- sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, hans: accuracy

Load it with `evaluate.load("<path to this folder>", "<config>")`: evaluate finds `glue_metric.py`
inside the folder of the same name and never contacts the hub for a local path.
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  note={In the Proceedings of ICLR.},
  year={2019}
}
"""

_DESCRIPTION = """\
GLUE, the General Language Understanding Evaluation benchmark (https://gluebenchmark.com/): the metric
of each of its tasks, computed with scikit-learn and scipy.
"""

_KWARGS_DESCRIPTION = """
Compute the GLUE score of predictions against references.
Args:
    predictions: class ids (int), or scores (float) for stsb.
    references: gold class ids (int), or gold scores (float) for stsb.
Returns: depending on the config,
    "accuracy": the share of predictions equal to the reference,
    "f1": F1 of class 1 (mrpc, qqp),
    "pearson", "spearmanr": correlations (stsb),
    "matthews_correlation": Matthews correlation (cola).
Examples:
    >>> glue_metric = evaluate.load("peftbench/run/glue_metric", "mrpc")
    >>> glue_metric.compute(predictions=[0, 1], references=[0, 1])
    {'accuracy': 1.0, 'f1': 1.0}
"""

ACCURACY_CONFIGS = ("sst2", "mnli", "mnli_mismatched", "mnli_matched", "qnli", "rte", "wnli", "hans")
CONFIGS = ("cola", "stsb", "mrpc", "qqp", *ACCURACY_CONFIGS)


def simple_accuracy(preds, labels) -> float:
    return float((preds == labels).mean())


def acc_and_f1(preds, labels) -> dict[str, float]:
    return {"accuracy": simple_accuracy(preds, labels), "f1": float(f1_score(y_true=labels, y_pred=preds))}


def pearson_and_spearman(preds, labels) -> dict[str, float]:
    return {"pearson": float(pearsonr(preds, labels)[0]), "spearmanr": float(spearmanr(preds, labels)[0])}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GlueMetric(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"unknown GLUE metric config {self.config_name!r}; valid: {', '.join(CONFIGS)}")
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}
            ),
            codebase_urls=[],
            reference_urls=[],
            format="numpy",
        )

    def _compute(self, predictions, references):
        if self.config_name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if self.config_name == "stsb":
            return pearson_and_spearman(predictions, references)
        if self.config_name in ("mrpc", "qqp"):
            return acc_and_f1(predictions, references)
        return {"accuracy": simple_accuracy(predictions, references)}
