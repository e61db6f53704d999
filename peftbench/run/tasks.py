"""The GLUE tasks as data: one table of task facts (`GLUE_TASKS`) in the hub's (`nyu-mll/glue`) vocabulary: text
fields, label names, the local TSV layout, the metrics and the main one, the evaluation splits.

Everything else of the data layer reads these facts: the loader (`peftbench.run.data`), tokenisation
(`peftbench.run.tokenisation`), the metrics and the config schema. Nothing here imports torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets import ClassLabel, Features, Value


class DataError(ValueError):
    """A data problem, in one line that names what was wrong and what would be valid."""


@dataclass(frozen=True)
class TsvLayout:
    """Where a GLUE TSV keeps its text and label.

    Columns are header names, or 0-based positions for a headerless file (CoLA). `label_format`:
    "index" (the file holds the hub's label id, "0"/"1"), "name" (the file holds the label name),
    or "float" (a regression score).
    """

    text_columns: tuple[str | int, ...]
    label_column: str | int
    label_format: str = "index"
    header: bool = True
    num_columns: int | None = None  # required for a headerless file


@dataclass(frozen=True)
class TaskInfo:
    """Facts about one GLUE task, in the hub's (`nyu-mll/glue`) vocabulary.

    `main_metric` follows the LoRA paper's GLUE table (the numbers our reference reproduces):
    Matthews correlation for CoLA, Pearson for STS-B, accuracy for every other task, MRPC and QQP
    included (their F1 is computed and recorded too); for MNLI the main split is `validation_matched`.
    """

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]  # empty for a regression task
    local_dir: str
    layout: TsvLayout
    metric_keys: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    eval_splits: tuple[str, ...] = ("validation",)

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.eval_splits)

    def local_file(self, split: str) -> str:
        """The file a split lives in: train.tsv, dev.tsv, dev_matched.tsv, dev_mismatched.tsv."""
        return "train.tsv" if split == "train" else "dev" + split.removeprefix("validation") + ".tsv"

    def features(self) -> Features:
        label = Value("float32") if self.is_regression else ClassLabel(names=list(self.label_names))
        return Features(
            {**{f: Value("string") for f in self.text_fields}, "label": label, "idx": Value("int32")}
        )


GLUE_TASKS: dict[str, TaskInfo] = {
    "cola": TaskInfo(
        "cola", text_fields=("sentence",), label_names=("unacceptable", "acceptable"), local_dir="CoLA",
        layout=TsvLayout((3,), 1, header=False, num_columns=4),  # no header: source, label, star, sentence
        metric_keys=("matthews_correlation",), main_metric="matthews_correlation",
    ),
    "sst2": TaskInfo(
        "sst2", text_fields=("sentence",), label_names=("negative", "positive"), local_dir="SST-2",
        layout=TsvLayout(("sentence",), "label"),
    ),
    "mrpc": TaskInfo(
        "mrpc", text_fields=("sentence1", "sentence2"), label_names=("not_equivalent", "equivalent"),
        local_dir="MRPC", layout=TsvLayout(("#1 String", "#2 String"), "Quality"),
        metric_keys=("accuracy", "f1"),
    ),
    "qqp": TaskInfo(
        "qqp", text_fields=("question1", "question2"), label_names=("not_duplicate", "duplicate"),
        local_dir="QQP", layout=TsvLayout(("question1", "question2"), "is_duplicate"),
        metric_keys=("accuracy", "f1"),
    ),
    "stsb": TaskInfo(
        "stsb", text_fields=("sentence1", "sentence2"), label_names=(), local_dir="STS-B",
        layout=TsvLayout(("sentence1", "sentence2"), "score", label_format="float"),
        metric_keys=("pearson", "spearmanr"), main_metric="pearson",
    ),
    "mnli": TaskInfo(
        "mnli", text_fields=("premise", "hypothesis"), label_names=("entailment", "neutral", "contradiction"),
        local_dir="MNLI", layout=TsvLayout(("sentence1", "sentence2"), "gold_label", label_format="name"),
        eval_splits=("validation_matched", "validation_mismatched"),
    ),
    "qnli": TaskInfo(
        "qnli", text_fields=("question", "sentence"), label_names=("entailment", "not_entailment"),
        local_dir="QNLI", layout=TsvLayout(("question", "sentence"), "label", label_format="name"),
    ),
    "rte": TaskInfo(
        "rte", text_fields=("sentence1", "sentence2"), label_names=("entailment", "not_entailment"),
        local_dir="RTE", layout=TsvLayout(("sentence1", "sentence2"), "label", label_format="name"),
    ),
    "wnli": TaskInfo(
        "wnli", text_fields=("sentence1", "sentence2"), label_names=("not_entailment", "entailment"),
        local_dir="WNLI", layout=TsvLayout(("sentence1", "sentence2"), "label"),
    ),
}  # fmt: skip


def get_task(task: str) -> TaskInfo:
    """The `TaskInfo` of a GLUE task name (case-insensitive), or a `DataError` listing the valid names."""
    info = GLUE_TASKS.get(str(task).lower())
    if info is None:
        raise DataError(f"unknown GLUE task {task!r}; valid tasks: {', '.join(GLUE_TASKS)}")
    return info
