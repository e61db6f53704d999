"""The project's GLUE metric module against scikit-learn and scipy, and its loading without network."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from peftbench.run.metrics import GLUE_METRIC_DIR, compute_glue_metrics, load_glue_metric, main_metric
from peftbench.run.tasks import GLUE_TASKS, DataError


def direct(task: str, preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    """The GLUE metric computed straight from scikit-learn / scipy."""
    if task == "cola":
        return {"matthews_correlation": matthews_corrcoef(refs, preds)}
    if task == "stsb":
        return {"pearson": pearsonr(preds, refs)[0], "spearmanr": spearmanr(preds, refs)[0]}
    scores = {"accuracy": accuracy_score(refs, preds)}
    if task in ("mrpc", "qqp"):
        scores["f1"] = f1_score(refs, preds)
    return scores


def random_case(task: str, seed: int, n: int = 257) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if task == "stsb":
        refs = rng.uniform(0, 5, n)
        return refs + rng.normal(0, 1.0, n), refs
    k = GLUE_TASKS[task].num_labels
    refs = rng.integers(0, k, n)
    return np.where(rng.random(n) < 0.7, refs, rng.integers(0, k, n)), refs


@pytest.mark.parametrize("task", list(GLUE_TASKS))
@pytest.mark.parametrize("seed", [0, 1])
def test_metric_equals_sklearn_and_scipy(task, seed):
    preds, refs = random_case(task, seed)
    got = compute_glue_metrics(task, preds, refs)
    assert set(got) == set(GLUE_TASKS[task].metric_keys)
    assert all(type(v) is float for v in got.values())
    if task == "stsb":
        # Like the official module, scores are float32 inside: equal to scipy on float32 inputs.
        f32 = direct(task, preds.astype(np.float32), refs.astype(np.float32))
        assert got == pytest.approx(f32, rel=1e-6)
        assert got == pytest.approx(direct(task, preds, refs), abs=1e-5)
    else:
        assert got == pytest.approx(direct(task, preds, refs), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("config", ["mnli_matched", "mnli_mismatched", "hans"])
def test_extra_accuracy_configs(config):
    preds, refs = random_case("mnli", 5)
    assert load_glue_metric(config).compute(predictions=preds, references=refs) == pytest.approx(
        {"accuracy": accuracy_score(refs, preds)}
    )


def test_main_metric():
    assert main_metric("cola") == "matthews_correlation"
    assert main_metric("stsb") == "pearson"
    assert {main_metric(t) for t in ("sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli")} == {"accuracy"}


def test_logits_and_regression_column_are_accepted():
    rng = np.random.default_rng(0)
    logits, refs = rng.normal(size=(50, 3)), rng.integers(0, 3, 50)
    assert compute_glue_metrics("mnli", logits, refs) == compute_glue_metrics("mnli", logits.argmax(-1), refs)
    scores = rng.uniform(0, 5, 50)
    assert compute_glue_metrics("stsb", scores[:, None], scores)["pearson"] == pytest.approx(1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="do not match references"):
        compute_glue_metrics("rte", [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="class ids"):
        compute_glue_metrics("rte", [0.2, 0.9], [0, 1])
    with pytest.raises(DataError, match="valid tasks"):
        compute_glue_metrics("glue", [0], [0])
    with pytest.raises(KeyError, match="valid: cola, stsb"):
        load_glue_metric("squad")


def test_metric_loads_without_network(monkeypatch, tmp_path):
    """evaluate loads the metric from its folder, copying it afresh, with every socket refused."""
    import socket

    import evaluate

    def refuse(*args, **kwargs):
        raise AssertionError("the GLUE metric tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    metric = evaluate.load(
        str(GLUE_METRIC_DIR),
        "mrpc",
        keep_in_memory=True,
        cache_dir=str(tmp_path),
        download_mode="force_redownload",
    )
    assert metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {
        "accuracy": 0.75,
        "f1": 2 / 3,
    }
