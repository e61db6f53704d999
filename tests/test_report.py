"""peftbench.report: records → per-run table, Table 2 markdown, Figure 1 PNG, CLI, and the results notebook."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from peftbench.analysis.cells import grid_edge, summarize
from peftbench.analysis.compare import compare
from peftbench.analysis.plots import plot_budget_vs_score
from peftbench.analysis.records import (
    Problem,
    design_key,
    load_records,
    record_design,
    record_lr,
    setting_labels,
)
from peftbench.analysis.tables import markdown_lr_table, markdown_table
from peftbench.report import main
from peftbench.run.record import selection_score

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "results.ipynb"

DESIGNS = {
    "lora": {
        "attn": {
            "form": "low_rank", "insertion": "parallel", "representation": ["attn_q", "attn_v"],
            "composition": "scale", "r": 8, "scale": 2.0,
        },
        "prompt": None, "train_bias": False, "train_all": False,
    },
    "adapter": {
        "ffn": {
            "form": "bottleneck", "insertion": "sequential", "representation": ["ffn_out"],
            "composition": "add", "r": 16, "scale": 1.0,
        },
        "prompt": None, "train_bias": False, "train_all": False,
    },
}  # fmt: skip
SHARES = {"lora": 0.0024, "adapter": 0.0047}


def make_record(
    method: str,
    seed: int,
    score: float | None,
    *,
    task: str = "sst2",
    status: str = "completed",
    run_key: str | None = None,
    finished_at: str = "2026-11-23T12:00:00",
    lr: float | None = None,
    select: float = 0.9,
    sweep: str = "table2",
    predictions: list[int] | None = None,
    references: list[int] | None = None,
) -> dict:
    """A synthetic record following the fixed schema; with `lr`, the record's `lr` (the config's when failed),
    the held-out selection score `select` on the kept (second) epoch, and optional per-example dev predictions."""
    metrics = {} if status == "failed" else {"accuracy": score, "f1": score - 0.01}
    lr_key = "" if lr is None else f"-lr{lr:g}"
    history = [{"epoch": 1, "train_loss": 0.5, "select": {"accuracy": 0.9}, "lr": 1e-4}]
    if lr is not None:
        history = [
            {"epoch": 1, "train_loss": 0.6, "select": {"accuracy": select - 0.05}, "lr": lr, "best": True},
            {"epoch": 2, "train_loss": 0.5, "select": {"accuracy": select}, "lr": 0.0, "best": True},
        ]
    record = {
        "status": status,
        "error": "RuntimeError: CUDA out of memory" if status == "failed" else None,
        "method": method, "task": task, "model": "minilm", "seed": seed,
        "run_key": run_key or f"{method}-{task}-{seed}{lr_key}",
        "sweep": sweep,
        "design": DESIGNS[method],
        "params": {"trainable": 1000 + 10 * len(method), "stored": 900, "paper": 800, "base": 22_000_000,
                   "paper_share": SHARES[method]},
        "metric": "accuracy", "metrics": metrics,
        "score": None if status == "failed" else score,
        "history": [] if status == "failed" else history,
        "time_s": 12.3, "peak_mem_mb": 900.0, "throughput": {"train_examples_per_s": 40.0},
        "versions": {"torch": "x", "transformers": "y", "peftbench": "0.1.0"}, "git_commit": None,
        "config": {"seed": seed, "train": {"lr": lr}, "method": {"lr": None}}, "finished_at": finished_at,
    }  # fmt: skip
    if lr is not None and status == "completed":
        record["lr"] = lr
    if predictions is not None:
        record["predictions"] = {"validation": {"predictions": predictions, "references": references}}
    return record


def write(path: Path, record: dict | str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = record if isinstance(record, str) else json.dumps(record)
    (path / "result.json").write_text(text)
    return path / "result.json"


SCORES = {("lora", 0): 0.912, ("lora", 1): 0.905, ("adapter", 0): 0.921, ("adapter", 1): 0.934}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """2 methods × 2 seeds on sst2, one failed run, one corrupt file, one duplicate (a resumed sweep)."""
    root = tmp_path / "multirun"
    sweep = root / "2026-11-23" / "12-00-00"
    for job, ((method, seed), score) in enumerate(SCORES.items()):
        write(sweep / str(job), make_record(method, seed, score))
    write(sweep / "4", make_record("lora", 2, None, status="failed"))
    write(sweep / "5", '{"status": "completed", "method": "lora", "tas')
    # The resumed sweep re-ran lora seed 0 earlier in the day with another score: the later record wins.
    write(
        root / "2026-11-23" / "09-00-00" / "0", make_record("lora", 0, 0.5, finished_at="2026-11-23T09:30:00")
    )
    return root


def test_load_records_rows_duplicates_and_problems(results: Path) -> None:
    df, problems = load_records([results])
    assert len(df) == 5
    assert (df["status"] == "completed").sum() == 4 and (df["status"] == "failed").sum() == 1
    assert df.attrs["duplicates_dropped"] == 1 and df["n_dropped"].sum() == 1
    lora0 = df[(df["method"] == "lora") & (df["seed"] == 0)]
    assert len(lora0) == 1 and lora0["score"].item() == pytest.approx(0.912)
    assert {"metric.accuracy", "metric.f1", "params.paper_share", "train_examples_per_s", "path"} <= set(df)
    assert len(problems) == 1 and isinstance(problems[0], Problem)
    assert problems[0].path.endswith("5/result.json") and "invalid JSON" in problems[0].reason


def test_same_dir_twice_missing_dir_and_missing_keys(results: Path, tmp_path: Path) -> None:
    bad = dict(make_record("lora", 3, 0.9))
    del bad["run_key"]
    write(tmp_path / "other", bad)
    df, problems = load_records([results, str(results), tmp_path / "other", tmp_path / "nowhere"])
    assert len(df) == 5 and df.attrs["duplicates_dropped"] == 1 + 6
    reasons = {
        Path(p.path).name if p.path.endswith("nowhere") else Path(p.path).parent.name: p.reason
        for p in problems
    }
    assert reasons["nowhere"] == "directory does not exist"
    assert "run_key" in reasons["other"]
    assert len(problems) == 3 and sum("invalid JSON" in p.reason for p in problems) == 1  # reported once


def test_completed_record_preferred_over_later_failure(tmp_path: Path) -> None:
    write(tmp_path / "a", make_record("lora", 0, 0.9, finished_at="2026-11-23T10:00:00"))
    write(
        tmp_path / "b",
        make_record(
            "lora", 0, None, status="failed", run_key="lora-sst2-0", finished_at="2026-11-23T11:00:00"
        ),
    )
    df, _ = load_records([tmp_path])
    assert len(df) == 1 and df["status"].item() == "completed" and df["n_dropped"].item() == 1


def test_summary_matches_hand_computed_statistics(results: Path) -> None:
    df, _ = load_records([results])
    summary = summarize(df).set_index("method")
    for method in ("lora", "adapter"):
        scores = [100 * SCORES[(method, s)] for s in (0, 1)]
        cell = summary.loc[method]
        assert cell["n"] == 2 and cell["task"] == "sst2" and cell["model"] == "minilm"
        assert cell["median"] == pytest.approx(statistics.median(scores))
        assert cell["std"] == pytest.approx(statistics.stdev(scores))
        assert cell["share_pct"] == pytest.approx(100 * SHARES[method])
        assert cell["params_trainable"] == 1000 + 10 * len(method)
    assert summary.loc["lora", "n_failed"] == 1 and summary.loc["adapter", "n_failed"] == 0
    assert summary.loc["lora", "label"] == "lora (0.24%)"


def test_summary_median_is_not_the_mean_and_single_seed_has_no_std(tmp_path: Path) -> None:
    scores = [0.90, 0.91, 0.95]
    for seed, score in enumerate(scores):
        write(tmp_path / str(seed), make_record("lora", seed, score))
    write(tmp_path / "single", make_record("adapter", 0, 0.93))
    summary = summarize(load_records([tmp_path])[0]).set_index("method")
    assert summary.loc["lora", "median"] == pytest.approx(91.0)
    assert summary.loc["lora", "std"] == pytest.approx(float(np.std([90, 91, 95], ddof=1)))
    assert summary.loc["adapter", "n"] == 1 and math.isnan(summary.loc["adapter", "std"])
    table = markdown_table(summarize(load_records([tmp_path])[0]))
    assert "| adapter (0.47%) | 93.0 |" in table


def test_markdown_table_cells(results: Path) -> None:
    for method, seed in (("adapter", 0), ("adapter", 1)):
        write(results / "mnli" / str(seed), make_record(method, seed, 0.8 + seed / 100, task="mnli"))
    table = markdown_table(summarize(load_records([results])[0]))
    lines = table.splitlines()
    assert lines[0] == "| method (share) | mnli | sst2 |"
    lora = statistics.median([91.2, 90.5]), statistics.stdev([91.2, 90.5])
    adapter = statistics.median([92.1, 93.4]), statistics.stdev([92.1, 93.4])
    assert f"| lora (0.24%) | — | {lora[0]:.1f} ± {lora[1]:.1f} |" in lines
    assert f"| adapter (0.47%) | 80.5 ± 0.7 | {adapter[0]:.1f} ± {adapter[1]:.1f} |" in lines
    assert lines.index(f"| lora (0.24%) | — | {lora[0]:.1f} ± {lora[1]:.1f} |") < lines.index(
        f"| adapter (0.47%) | 80.5 ± 0.7 | {adapter[0]:.1f} ± {adapter[1]:.1f} |"
    )


def assert_nontrivial_png(path: Path) -> None:
    import matplotlib.image

    assert path.exists() and path.stat().st_size > 5_000
    image = matplotlib.image.imread(path)
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10


def test_plot_budget_vs_score(results: Path, tmp_path: Path) -> None:
    df, _ = load_records([results])
    fig = plot_budget_vs_score(df, tmp_path / "plot.png")
    assert_nontrivial_png(tmp_path / "plot.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"lora", "adapter"}


def test_cli_writes_outputs_despite_corrupt_records(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main([str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| lora (0.24%) |" in printed and str(out / "summary.md") in printed
    csv = (out / "summary.csv").read_text().splitlines()
    assert len(csv) == 1 + 5 and "status" in csv[0]
    paths = pd.read_csv(out / "summary.csv")["path"]  # relative to the report: no checkout's absolute path
    assert not any(Path(p).is_absolute() for p in paths) and all((out / p).resolve().is_file() for p in paths)
    md = (out / "summary.md").read_text()
    assert "4 completed, 1 failed, 1 duplicates dropped, 1 problems" in md
    assert "5/result.json" in md and "invalid JSON" in md
    assert_nontrivial_png(out / "budget_vs_score.png")

    assert main([str(results), "--task", "sst2"]) == 0  # default OUTDIR is the first DIR
    assert (results / "summary.md").exists()


def test_cli_exit_code_2_without_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no usable result.json records") and "\n" not in err
    assert main([str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "empty" / "summary.md").exists()


def test_results_notebook_executes(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    kernelspec = pytest.importorskip("jupyter_client.kernelspec")
    # Without registration, jupyter_client offers ipykernel's own `python3` spec for this interpreter.
    if "python3" not in kernelspec.find_kernel_specs():
        pytest.skip("no python3 Jupyter kernel: install ipykernel in this environment")

    monkeypatch.setenv("PEFTBENCH_RESULTS", str(results))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(
        not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code"
    )
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    data = [o.get("data", {}) for o in outputs]
    assert any("lora (0.24%)" in d.get("text/markdown", "") for d in data)
    assert any("image/png" in d for d in data)


def test_budgets_of_one_method_are_separate_rows(tmp_path: Path) -> None:
    for seed in (0, 1):
        write(tmp_path / f"r8-{seed}", make_record("lora", seed, 0.90 + seed / 100))
        big = make_record("lora", seed, 0.92, run_key=f"r16-{seed}")
        big["design"] = {**big["design"], "attn": {**big["design"]["attn"], "r": 16}}
        big["params"]["paper_share"] = 0.0047
        write(tmp_path / f"r16-{seed}", big)
    summary = summarize(load_records([tmp_path])[0])
    assert list(summary["label"]) == ["lora (0.24%)", "lora (0.47%)"] and list(summary["n"]) == [2, 2]
    assert "| lora (0.47%) | 92.0 ± 0.0 |" in markdown_table(summary)



def test_data_sizes_and_epochs_are_separate_cells_and_paths_are_not(tmp_path: Path) -> None:
    """Runs of one design at two data sizes (a learning curve) are two cells, labelled by the keys that differ;
    keys that do not change the result (results_root, progress) and the lr do not split a cell."""
    for seed in (0, 1):
        for n, score in ((1000, 0.75), (4000, 0.83)):
            record = make_record("lora", seed, score + seed / 100, run_key=f"n{n}-{seed}", lr=1e-3)
            record["config"].update(
                data={"max_train_samples": n, "glue_dir": f"/data{seed}"},
                train={"lr": 1e-3, "epochs": 2, "progress": bool(seed)},
                results_root=f"out{seed}",
            )
            write(tmp_path / f"n{n}-{seed}", record)
    df = load_records([tmp_path])[0]
    assert sorted(set(df["setting"])) == ["max_train_samples=1000", "max_train_samples=4000"]
    summary = summarize(df)
    assert list(summary["label"]) == [
        "lora (0.24%) · max_train_samples=1000", "lora (0.24%) · max_train_samples=4000"
    ]
    assert list(summary["n"]) == [2, 2]
    assert list(summary["median"]) == pytest.approx([75.5, 83.5])
    table = markdown_table(summary)
    assert "| lora (0.24%) · max_train_samples=1000 | 75.5 ± 0.7 (lr 1e-3) |" in table
    # a key that differs between tasks only (each task's max_length) is not a setting
    other = make_record("lora", 0, 0.6, task="mrpc", run_key="mrpc", lr=1e-3)
    other["config"].update(data={"max_train_samples": 1000}, task={"name": "mrpc", "max_length": 256})
    write(tmp_path / "mrpc", other)
    assert set(load_records([tmp_path])[0].query("task == 'mrpc'")["setting"]) == {""}
    # one data size only: no setting, the labels of before
    only = load_records([tmp_path / "n1000-0", tmp_path / "n1000-1"])[0]
    assert set(only["setting"]) == {""} and list(summarize(only)["label"]) == ["lora (0.24%)"]


def test_a_key_added_later_at_its_default_joins_the_records_written_before_it(tmp_path: Path) -> None:
    """task.head_bias joined the config after the SST-2 records were written: a new SST-2 run at its default
    ("zero") is the same cell (one lr grid) as the old ones; a run at another value is a cell of its own."""
    for i, (lr, bias) in enumerate(((1e-4, None), (1e-3, None), (1e-2, "zero"), (1e-2, "label_mean"))):
        record = make_record("lora", 0, 0.8, run_key=f"r{i}", lr=lr, select=0.8 + lr)
        record["config"]["task"] = {"name": "sst2", "max_length": 64} | ({"head_bias": bias} if bias else {})
        write(tmp_path / f"r{i}", record)
    df = load_records([tmp_path])[0]
    assert list(df.sort_values("run_key")["setting"]) == ["head_bias=unset"] * 3 + ['head_bias="label_mean"']
    summary = summarize(df).set_index("setting")
    assert summary.loc["head_bias=unset", "lr_grid"] == [1e-4, 1e-3, 1e-2]
    assert summary.loc["head_bias=unset", "lr"] == 1e-2 and summary.loc['head_bias="label_mean"', "n"] == 1
    # without the other value, nothing varies: one cell, no setting in its label
    assert set(load_records([tmp_path / f"r{i}" for i in range(3)])[0]["setting"]) == {""}


def head_record(head: str, seed: int, score: float, template: str = "{sentence} It was {mask}.") -> dict:
    """A SmolLM2 record with a linear or verbalizer head: the verbalizer's template and label words are in the
    task config of both (the task config carries them whatever the head)."""
    record = make_record("lora", seed, score, run_key=f"{head}-{template}-{seed}", lr=5e-3, select=score)
    record["method"], record["model"] = f"smollm2_{head}", "smollm2"
    record["design"] = {**DESIGNS["lora"], "head": head}
    record["config"]["method"] = {"lr": None, "head": head}
    task = {"name": "sst2", "max_length": 128, "head_bias": "zero"}
    record["config"]["task"] = task | {"template": template, "label_words": ["terrible", "great"]}
    return record


def test_a_verbalizer_and_a_linear_head_share_the_setting_and_two_templates_are_two_cells(tmp_path: Path) -> None:
    """The template and label words define a verbalizer run's design, not the setting: the two heads of one task
    are compared (they were "not compared" while the verbalizer keys counted as a setting)."""
    for seed in range(3):
        write(tmp_path / f"lin-{seed}", head_record("linear", seed, 0.66 + 0.01 * seed))
        write(tmp_path / f"verb-{seed}", head_record("verbalizer", seed, 0.70 + 0.02 * seed))
    df = load_records([tmp_path])[0]
    assert set(df["setting"]) == {""}
    one = head_record("verbalizer", 0, 0.7)
    assert record_design(one)["verbalizer"] == {"template": "{sentence} It was {mask}.", "label_words": ["terrible", "great"]}
    assert set(df[df["method"] == "smollm2_verbalizer"]["design_key"]) == {design_key(record_design(one))}
    linear = head_record("linear", 0, 0.7)
    assert record_design(linear) == linear["design"]  # the linear head reads no template: its design as recorded
    table, notes = compare(df, ["smollm2_verbalizer:smollm2_linear"], experiments=False, n_resamples=200)
    assert notes == [] and len(table) == 1
    row = table.iloc[0]
    assert row["n_pairs"] == 3 and row["mean_diff"] == pytest.approx(100 * (0.04 + 0.01))  # mean of 4, 5, 6
    # a second template is a second verbalizer cell of the same setting, labelled by its design
    for seed in range(3):
        write(tmp_path / f"verb2-{seed}", head_record("verbalizer", seed, 0.60, template="{sentence} So: {mask}"))
    summary = summarize(load_records([tmp_path])[0])
    assert set(summary["setting"]) == {""} and len(summary) == 3
    verbalizers = summary[summary["method"] == "smollm2_verbalizer"]
    assert verbalizers["design_key"].nunique() == 2 and verbalizers["label"].nunique() == 2
    assert sorted(verbalizers["median"]) == pytest.approx([60.0, 72.0])


def test_setting_labels_name_only_the_keys_that_differ() -> None:
    rows = [
        {"data.max_train_samples": "1000", "train.epochs": "2", "data.held_out": "0.1"},
        {"data.max_train_samples": "4000", "train.epochs": "3", "data.held_out": "0.1"},
        {"data.max_train_samples": "4000", "train.epochs": "3", "data.held_out": "0.1", "data.x": "1"},
    ]
    assert setting_labels(rows) == [
        "max_train_samples=1000, epochs=2, x=unset",
        "max_train_samples=4000, epochs=3, x=unset",
        "max_train_samples=4000, epochs=3, x=1",
    ]
    assert setting_labels([{"data.n": "1"}, {"train.n": "1"}]) == ["data.n=1, train.n=unset", "data.n=unset, train.n=1"]


# ---- the learning rate chosen on the held-out split, never on dev -----------------------------------------

#: lr → (held-out selection score, dev scores of seeds 0-2): 1e-3 is best on dev, 1e-4 on the held-out split.
LR_GRID = {
    1e-4: (0.95, [0.80, 0.82, 0.81]),
    1e-3: (0.90, [0.88, 0.90, 0.89]),
    3e-3: (0.70, [0.60, 0.62, 0.61]),
}


@pytest.fixture
def lr_sweep(tmp_path: Path) -> Path:
    """lora at three lrs × three seeds (3e-3 diverged once), adapter at one lr; held-out and dev disagree."""
    root = tmp_path / "lr_sweep"
    for lr, (select, dev) in LR_GRID.items():
        for seed, score in enumerate(dev):
            write(root / f"lora-{lr:g}-{seed}", make_record("lora", seed, score, lr=lr, select=select))
    write(root / "lora-3e-3-fail", make_record("lora", 3, None, status="failed", lr=3e-3))
    for seed in range(3):
        write(root / f"adapter-{seed}", make_record("adapter", seed, 0.85, lr=1e-4, select=0.9))
    return root


def test_lr_is_chosen_on_held_out_not_dev(lr_sweep: Path) -> None:
    df, _ = load_records([lr_sweep])
    assert set(df["lr"].dropna()) == set(LR_GRID) and df["select_score"].max() == pytest.approx(0.95)
    summary = summarize(df).set_index("method")
    lora = summary.loc["lora"]
    assert lora["lr"] == 1e-4 and lora["lr_choice"] == "held-out"  # not 1e-3, the best on dev
    assert lora["median"] == pytest.approx(81.0) and lora["select_score"] == pytest.approx(95.0)
    assert lora["lr_grid"] == sorted(LR_GRID) and lora["n"] == 3
    assert lora["n_failed"] == 0 and lora["n_failed_grid"] == 1
    assert summary.loc["adapter", "lr"] == 1e-4 and summary.loc["adapter", "lr_choice"] == "only"

    per_lr = summarize(df, choose_lr=False)
    lora_rows = per_lr[per_lr["method"] == "lora"].set_index("lr")
    assert list(lora_rows.index) == sorted(LR_GRID) and list(lora_rows["chosen"]) == [True, False, False]
    assert lora_rows.loc[1e-3, "median"] == pytest.approx(89.0) and lora_rows.loc[3e-3, "n_failed"] == 1

    table = markdown_table(summarize(df))
    assert "| lora (0.24%) | 81.0 ± 1.0 (lr 1e-4) |" in table and "(lr 1e-3)" not in table
    lr_table = markdown_lr_table(per_lr)
    assert "| sst2 | lora (0.24%) | 1e-4 | 3 | 0 | 95.0 | 81.0 ± 1.0 |" in lr_table
    assert "| sst2 | lora (0.24%) | 3e-3 | 3 | 1 | 70.0 |" in lr_table
    assert lr_table.split("\n\n")[1].count("✓") == 1  # the rows, not the caption
    assert "| ✓ (lowest) |" in lr_table  # 1e-4 is the grid's lowest lr: a better one may lie below it
    assert "adapter" not in lr_table  # a single lr: nothing to choose
    # The per-lr view renders one row per lr in Table 2 form too.
    assert "| lora (0.24%) | 89.0 ± 1.0 (lr 1e-3) |" in markdown_table(per_lr)


def test_lr_ties_fewer_failures_then_smaller_lr_and_all_failed_lr_never_chosen(tmp_path: Path) -> None:
    for lr in (1e-4, 3e-4, 1e-3):
        for seed in range(2):
            write(tmp_path / f"{lr:g}-{seed}", make_record("lora", seed, 0.8 + lr * 10, lr=lr, select=0.9))
    write(tmp_path / "fail", make_record("lora", 2, None, status="failed", lr=1e-4))
    for seed in range(2):  # an lr whose runs all failed
        write(tmp_path / f"fail-{seed}", make_record("lora", seed, None, status="failed", lr=1e-2))
    summary = summarize(load_records([tmp_path])[0])
    assert summary["lr"].item() == 3e-4 and summary["n_failed_grid"].item() == 3  # tie: 1e-4 has a failure
    assert summary["lr_grid"].item() == [1e-4, 3e-4, 1e-3, 1e-2]


@pytest.mark.parametrize(
    ("lr", "grid", "edge"),
    [(1e-4, [1e-4, 1e-3, 1e-2], "lowest"), (1e-2, [1e-4, 1e-3, 1e-2], "highest"), (1e-3, [1e-4, 1e-3, 1e-2], ""),
     (1e-4, [1e-4, 1e-3], ""), (1e-4, [1e-4], ""), (math.nan, [1e-4, 1e-3, 1e-2], "")],
)
def test_grid_edge_flags_a_choice_at_the_end_of_three_or_more_lrs(lr: float, grid: list[float], edge: str) -> None:
    assert grid_edge(pd.Series({"lr": lr, "lr_grid": grid})) == edge


def test_an_extended_grid_moves_the_edge_mark(tmp_path: Path) -> None:
    """The best held-out lr at the top of ×{1,2,4} is flagged; once ×8 runs and scores lower, ×4 is interior."""
    for lr, select in ((1e-4, 0.80), (2e-4, 0.85), (4e-4, 0.90)):
        write(tmp_path / f"{lr:g}", make_record("lora", 0, 0.8, lr=lr, select=select))
    assert "| ✓ (highest) |" in markdown_lr_table(summarize(load_records([tmp_path])[0], choose_lr=False))
    write(tmp_path / "8e-4", make_record("lora", 0, 0.8, lr=8e-4, select=0.70))
    table = markdown_lr_table(summarize(load_records([tmp_path])[0], choose_lr=False))
    assert "| 4e-4 | 1 | 0 | 90.0 |" in table and "| ✓ |" in table and "(highest)" not in table.split("\n\n")[1]


def scaled_record(method: str, seed: int, scale: float, select: float, overrides: bool = True) -> dict:
    """A run of a ×{scale} lr grid around 5e-4 (the preset's lr when the records ran: table2_cpu's arms compose
    to another today), with the overrides its sweep job had; without them, a method config no arm matches."""
    record = make_record(method, seed, 0.8, lr=5e-4 * scale, select=select, sweep="table2_cpu")
    record["config"]["train"].update(lr=None, lr_scale=scale)
    if overrides:
        record["overrides"] = ["+experiment=table2_cpu", "task=sst2", f"experiment/arm/table2={method}",
                               f"seed={seed}", f"train.lr_scale={scale:g}", "results_root=/elsewhere/table2_cpu"]
    return record


def table2_base(method: str) -> float:
    """The lr before scaling that table2_cpu's arm `method` composes to today."""
    from peftbench.run.config import compose

    return float(compose(["+experiment=table2_cpu", f"experiment/arm/table2={method}"]).method.lr)


def test_next_lrs_prints_the_command_that_extends_an_edge_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """lora chose the top of ×{0.5,1,2} → the next lr is 2e-3, at the seeds it ran, with its recorded overrides and
    the lr scale that reaches 2e-3 from the lr the arm composes to today (not the records' 5e-4); adapter chose the
    bottom, and its records predate `overrides` with a method no arm matches: the command says what to add."""
    from peftbench.run.sweep import planned_jobs

    for scale, select in ((0.5, 0.80), (1.0, 0.85), (2.0, 0.90)):
        for seed in (0, 1):
            write(tmp_path / f"lora-{scale}-{seed}", scaled_record("lora", seed, scale, select))
            write(tmp_path / f"adapter-{scale}-{seed}", scaled_record("adapter", seed, scale, 1 - select, False))
    assert main([str(tmp_path), "--next-lrs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# sst2 lora (0.24%): chosen lr 1e-3 is the highest of 2.5e-4, 5e-4, 1e-3; next: 2e-3"
    scale = f"{2e-3 / table2_base('lora'):g}"
    command = (f"python -m peftbench -m +experiment=table2_cpu task=sst2 experiment/arm/table2=lora seed=0,1 "
               f"train.lr_scale={scale} results_root={tmp_path}")
    assert command in lines and not list(tmp_path.glob("summary*"))  # nothing written
    assert "# sst2 adapter (0.47%): chosen lr 2.5e-4 is the lowest of 2.5e-4, 5e-4, 1e-3; next: 1.25e-4" in lines
    assert (f"python -m peftbench -m +experiment=table2_cpu task=sst2 seed=0,1 train.lr_scale=0.25 "
            f"results_root={tmp_path}  # and the override that selects adapter (these records predate "
            "`overrides`)") in lines
    jobs = planned_jobs(command.split()[3:])  # the command is one Hydra accepts: the cell's two seeds at ×4
    assert sorted(j for job in jobs for j in job if j.startswith("seed=")) == ["seed=0", "seed=1"]
    assert all(f"train.lr_scale={scale}" in job and "experiment/arm/table2=lora" in job for job in jobs)
    # once ×4 ran and scored lower on held-out, no edge is left for lora
    for seed in (0, 1):
        write(tmp_path / f"lora-4-{seed}", scaled_record("lora", seed, 4.0, 0.70))
    assert main([str(tmp_path), "--next-lrs"]) == 0
    assert "lora" not in capsys.readouterr().out


def test_cell_without_held_out_scores_is_not_chosen(tmp_path: Path) -> None:
    for lr in (1e-4, 1e-3):
        record = make_record("lora", 0, 0.8, lr=lr)
        record["history"] = [{"epoch": 1, "train_loss": 0.5, "lr": lr}]  # data.select_on=last
        write(tmp_path / f"{lr:g}", record)
    summary = summarize(load_records([tmp_path])[0])
    assert summary["lr_choice"].item() == "no held-out score" and summary["n"].item() == 0
    assert math.isnan(summary["median"].item())


def test_selection_score_and_lr_of_a_record() -> None:
    record = make_record("lora", 0, 0.8, lr=5e-4, select=0.9)
    assert selection_score(record) == pytest.approx(0.9)  # the last epoch marked best
    record["history"][1]["best"] = False
    assert selection_score(record) == pytest.approx(0.85)
    for h in record["history"]:
        h.pop("best", None)
    assert selection_score(record) == pytest.approx(0.9)  # no mark: the max over epochs
    assert record_lr(record) == 5e-4
    failed = make_record("lora", 0, None, status="failed")
    failed["config"] = {"train": {"lr": None}, "method": {"lr": 2.0e-3}}
    assert "lr" not in failed and record_lr(failed) == 2e-3  # a failed run: the preset's lr from its config


def test_cli_writes_cells_lr_table_and_comparisons(
    lr_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main([str(lr_sweep), "--out", str(out), "--compare", "lora:adapter"]) == 0
    cells = pd.read_csv(out / "cells.csv")
    assert {"lr", "lr_grid", "select_score", "mean", "ci_low", "ci_high", "median", "std"} <= set(cells)
    lora = cells.set_index("method").loc["lora"]
    assert lora["lr"] == 1e-4 and lora["mean"] == pytest.approx(81.0)
    assert lora["ci_low"] == pytest.approx(81.0 - stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    assert len(pd.read_csv(out / "cells_by_lr.csv")) == 4
    comparisons = pd.read_csv(out / "comparisons.csv")
    # table2 declares adapter vs lora; --compare adds lora vs adapter over all records.
    assert set(zip(comparisons["a_method"], comparisons["source"], strict=True)) == {
        ("adapter", "table2"), ("lora", "command line")
    }  # fmt: skip
    asked = comparisons.set_index("source").loc["command line"]
    assert asked["n_pairs"] == 3 and asked["mean_diff"] == pytest.approx(81.0 - 85.0)
    md = (out / "summary.md").read_text()
    assert "## Learning rate per cell" in md and "## Comparisons" in md
    assert "| lora (0.24%) vs adapter (0.47%) | 3 | -4.0 [" in md
    assert "no dev predictions in 6 of 6 runs" in md
    assert md.index("| method (share) |") < md.index("## Learning rate per cell") < md.index("## Comparisons")


def test_cli_rejects_a_malformed_compare(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(results), "--compare", "lora"])
    assert exit_info.value.code == 2 and "expected A:B" in capsys.readouterr().err


def test_cli_lists_each_problem_when_no_record_is_usable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "runs" / "0", '{"status": "completed", "method": "lora", "tas')
    write(tmp_path / "runs" / "1", json.dumps({"status": "completed", "method": "lora"}))
    assert main([str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: no usable result.json records") and "(2 problems)" in err[0]
    assert len(err) == 3
    assert (
        err[1].strip().startswith(str(tmp_path / "runs" / "0" / "result.json")) and "invalid JSON" in err[1]
    )
    assert "1/result.json: missing required keys: task, model, seed, run_key" in err[2]


def precision_record(seed: int, score: float, resolved: str, requested: str = "auto") -> dict:
    """A LoRA record of one configuration, computed at the `resolved` precision (`auto` follows the CPU)."""
    record = make_record("lora", seed, score, lr=1e-3, select=score, run_key=f"stored-{seed}")
    record["config"]["train"] = {"lr": 1e-3, "mixed_precision": requested}
    record["config"]["task"] = {"name": "sst2", "max_length": 64}
    record["mixed_precision"] = resolved
    return record


def test_a_bf16_and_an_fp32_run_of_one_configuration_are_two_cells_never_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`auto` resolved to bf16 on one CPU kind and to fp32 on the other: the same stored run key (written before
    the precision entered it), but two runs, two settings, and no comparison pairs them; an explicit fp32 request
    and `auto` resolved to fp32 are one setting."""
    for seed in range(3):
        write(tmp_path / f"bf16-{seed}", precision_record(seed, 0.80 + 0.01 * seed, "bf16"))
        write(tmp_path / f"fp32-{seed}", precision_record(seed, 0.70 + 0.01 * seed, "no"))
        write(tmp_path / f"pinned-{seed}", precision_record(seed, 0.70 + 0.01 * seed, "no", requested="no"))
    df, problems = load_records([tmp_path])
    assert problems == [] and len(df) == 6  # fp32 under auto and pinned fp32: one run key per seed
    assert df.attrs["duplicates_dropped"] == 3
    assert sorted(df["precision"]) == ["bf16"] * 3 + ["fp32"] * 3
    assert sorted(set(df["setting"])) == ['mixed_precision="bf16"', 'mixed_precision="fp32"']
    summary = summarize(df).set_index("setting")
    assert summary.loc['mixed_precision="bf16"', "median"] == pytest.approx(81.0)
    assert summary.loc['mixed_precision="fp32"', "median"] == pytest.approx(71.0)
    table, _ = compare(df, ["lora:lora"], experiments=False, n_resamples=50)
    assert set(zip(table["a"], table["b"], strict=True)) <= {(a, a) for a in table["a"]}  # never bf16 vs fp32
    assert main([str(tmp_path), "--bootstrap", "50"]) == 0
    assert "runs of several precisions (bf16 3, fp32 3)" in capsys.readouterr().out
    assert "never pooled or compared" in (tmp_path / "summary.md").read_text()


def test_the_lr_is_chosen_on_tuning_seeds_and_dev_reported_on_evaluation_seeds_only(tmp_path: Path) -> None:
    """Seeds 0-2 tune (their held-out mean picks 1e-3 over 1e-4); an evaluation seed's held-out score never votes
    (seed 100 at 1e-4 holds out 0.99, which would flip the choice); the cell's dev statistics and its comparison
    use the evaluation seeds at the chosen lr only, and the caption says so."""
    for seed in range(3):
        for lr, select, score in ((1e-4, 0.80, 0.70), (1e-3, 0.85, 0.90)):
            write(tmp_path / f"t{seed}-{lr}", make_record("lora", seed, score, lr=lr, select=select,
                                                          run_key=f"lora-{seed}-{lr}"))
            write(tmp_path / f"a{seed}-{lr}", make_record("adapter", seed, score - 0.01, lr=lr, select=select,
                                                          run_key=f"adapter-{seed}-{lr}"))
    write(tmp_path / "e100-lo", make_record("lora", 100, 0.5, lr=1e-4, select=0.99, run_key="lora-100-lo"))
    for seed, score in ((100, 0.80), (101, 0.82), (102, 0.84)):
        write(tmp_path / f"e{seed}", make_record("lora", seed, score, lr=1e-3, select=0.5, run_key=f"lora-{seed}"))
        write(tmp_path / f"ea{seed}", make_record("adapter", seed, score - 0.03, lr=1e-3, select=0.5,
                                                  run_key=f"adapter-{seed}"))
    df = load_records([tmp_path])[0]
    assert sorted(set(df.loc[df["seed"] >= 100, "role"])) == ["evaluation"]
    lora = summarize(df).set_index("method").loc["lora"]
    assert lora["lr"] == 1e-3 and lora["select_score"] == pytest.approx(85.0)  # tuning seeds only
    assert lora["dev_on"] == "evaluation" and lora["seeds"] == [100, 101, 102]
    assert lora["n_tuning"] == 3 and lora["n_evaluation"] == 3 and lora["median"] == pytest.approx(82.0)
    table, _ = compare(df, ["lora:adapter"], experiments=False, n_resamples=50)
    assert table.iloc[0]["seeds"] == [100, 101, 102] and table.iloc[0]["mean_diff"] == pytest.approx(3.0)
    assert "dev on evaluation seeds only" in markdown_table(summarize(df))
    # without evaluation seeds the dev score is the tuning seeds', and the caption says it is biased
    tuning_only = summarize(df[df["seed"] < 100])
    assert set(tuning_only["dev_on"]) == {"tuning"}
    assert "biased upward" in markdown_table(tuning_only)


def test_next_evals_prints_the_evaluation_seeds_a_cell_lacks_at_its_chosen_lr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """lora chose 5e-4 (interior) on seeds 0-1 and has evaluation seed 100 at that lr: the missing 101-104 are
    printed at 5e-4, with its overrides; adapter chose an edge: extend its grid first, no evaluation command."""
    from peftbench.run.sweep import planned_jobs

    for scale, select in ((0.5, 0.80), (1.0, 0.90), (2.0, 0.85)):
        for seed in (0, 1):
            write(tmp_path / f"lora-{scale}-{seed}", scaled_record("lora", seed, scale, select))
            write(tmp_path / f"adapter-{scale}-{seed}", scaled_record("adapter", seed, scale, 1 - select))
    write(tmp_path / "lora-1-100", scaled_record("lora", 100, 1.0, 0.5))
    assert main([str(tmp_path), "--next-evals", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "# sst2 lora (0.24%): 1 of 5 evaluation seeds at its chosen lr 5e-4" in lines
    command = (f"python -m peftbench -m +experiment=table2_cpu task=sst2 experiment/arm/table2=lora "
               f"seed=101,102,103,104 train.lr_scale={5e-4 / table2_base('lora'):g} results_root={tmp_path}")
    assert command in lines
    assert any(line.startswith("# sst2 adapter (0.47%): chosen lr 2.5e-4 is the lowest") for line in lines)
    jobs = planned_jobs(command.split()[3:])
    assert sorted(j for job in jobs for j in job if j.startswith("seed=")) == [f"seed={s}" for s in (101, 102, 103, 104)]


def test_records_that_predate_overrides_are_rerun_through_the_one_arm_whose_method_is_theirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records without `overrides` whose method config is table2_cpu's adapter arm (as composed today, but without a
    field added since and at another lr): the next-lr command selects that arm, runnable as printed (no note)."""
    from omegaconf import OmegaConf

    from peftbench.run.config import compose

    method = OmegaConf.to_container(compose(["+experiment=table2_cpu", "experiment/arm/table2=adapter"]).method)
    slot = next(iter(method["modules"]))
    method["modules"][slot].pop("scale_rule")  # a field the records predate
    for scale, select in ((0.5, 0.90), (1.0, 0.85), (2.0, 0.80)):
        for seed in (0, 1):
            record = scaled_record("adapter", seed, scale, select, overrides=False)
            record["config"]["method"] = {**method, "lr": 5e-4}
            write(tmp_path / f"adapter-{scale}-{seed}", record)
    assert main([str(tmp_path), "--next-lrs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("chosen lr 2.5e-4 is the lowest of 2.5e-4, 5e-4, 1e-3; next: 1.25e-4")
    assert lines[1] == (f"python -m peftbench -m +experiment=table2_cpu task=sst2 experiment/arm/table2=adapter "
                        f"seed=0,1 train.lr_scale={1.25e-4 / table2_base('adapter'):g} results_root={tmp_path}")
    # a method config that is no arm's (another r) keeps the note: nothing would select it
    for path in tmp_path.glob("adapter-*/result.json"):
        record = json.loads(path.read_text())
        record["config"]["method"]["modules"][slot]["r"] = 7
        path.write_text(json.dumps(record))
    assert main([str(tmp_path), "--next-lrs"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(
        "# and the override that selects adapter (these records predate `overrides`)")


def test_next_evals_waits_for_a_tuning_grid_of_three_lrs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cell tuned at one lr (or two) has no choice worth evaluation seeds yet: a note, no command; at three lrs
    with an interior choice, the command."""
    for seed in (0, 1, 2):
        write(tmp_path / f"lora-1-{seed}", scaled_record("lora", seed, 1.0, 0.9))
    assert main([str(tmp_path), "--next-evals", "5"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "# sst2 lora (0.24%): 1 lr on the tuning seeds (5e-4), the protocol chooses among at least 3: run the "
        "tuning grid first"]
    for scale, select in ((0.5, 0.8), (2.0, 0.8)):
        for seed in (0, 1, 2):
            write(tmp_path / f"lora-{scale}-{seed}", scaled_record("lora", seed, scale, select))
    assert main([str(tmp_path), "--next-evals", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# sst2 lora (0.24%): 0 of 5 evaluation seeds at its chosen lr 5e-4"
    assert out[1].startswith("python -m peftbench -m +experiment=table2_cpu task=sst2 experiment/arm/table2=lora "
                             "seed=100,101,102,103,104 ")


def test_next_evals_auto_asks_each_cell_of_an_undecided_comparison_for_what_its_power_analysis_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Table 2's "adapter ≈ lora" on three tuning seeds whose paired differences spread (sd 1.53 points): TOST at
    ±1.0 needs n seeds, so `--next-evals auto` asks both cells for min(12, max(5, n)), and evaluation seeds do not
    change that; a bad N is refused."""
    adapter_scores = (0.80, 0.83, 0.81)
    for scale, select in ((0.5, 0.80), (1.0, 0.90), (2.0, 0.85)):
        for seed in (0, 1, 2):
            for method, score in (("lora", 0.82), ("adapter", adapter_scores[seed])):
                record = scaled_record(method, seed, scale, select)
                record["score"] = record["metrics"]["accuracy"] = score
                write(tmp_path / f"{method}-{scale}-{seed}", record)
    diffs = [100 * (s - 0.82) for s in adapter_scores]
    from peftbench.analysis.stats import seeds_needed_equivalence

    needed = seeds_needed_equivalence(1.0, statistics.stdev(diffs))
    assert needed is not None and needed > 5
    want = min(12, needed)
    assert main([str(tmp_path), "--next-evals", "auto"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"# sst2 adapter (0.47%): 0 of {want} evaluation seeds at its chosen lr 5e-4" in lines
    assert f"# sst2 lora (0.24%): 0 of {want} evaluation seeds at its chosen lr 5e-4" in lines
    assert any(line.startswith("python -m peftbench -m +experiment=table2_cpu task=sst2 experiment/arm/table2=lora "
                               f"seed={','.join(str(s) for s in range(100, 100 + want))} ") for line in lines)
    # evaluation seeds whose differences spread far more (sd ≈ 6 points) do not move the target: it is sized from
    # the tuning seeds alone, before any evaluation seed (no optional stopping)
    for seed, adapter in zip(range(100, 105), (0.70, 0.85, 0.74, 0.88, 0.79), strict=True):
        for method, score in (("lora", 0.82), ("adapter", adapter)):
            record = scaled_record(method, seed, 1.0, 0.5)
            record["score"] = record["metrics"]["accuracy"] = score
            write(tmp_path / f"{method}-eval-{seed}", record)
    assert main([str(tmp_path), "--next-evals", "auto"]) == 0
    assert f"# sst2 adapter (0.47%): 5 of {want} evaluation seeds at its chosen lr 5e-4" in capsys.readouterr().out
    for bad in ("0", "five"):
        with pytest.raises(SystemExit) as exit_info:
            main([str(tmp_path), "--next-evals", bad])
        assert exit_info.value.code == 2
    assert "expected a number of seeds or 'auto', got 'five'" in capsys.readouterr().err


def test_the_report_counts_the_cpu_kinds_its_runs_computed_on(tmp_path: Path) -> None:
    """Records name their CPU kind since 2026-12-07 (`cpu_isa`); older ones are counted as unrecorded, and the
    line says that kinds are pooled although fp32 is bitwise only within one."""
    from peftbench.analysis.tables import cpu_kind_line

    for seed, kind in ((0, "AVX2"), (1, "AVX512"), (2, "AVX512"), (3, None)):
        record = make_record("lora", seed, 0.8, lr=1e-3)
        if kind:
            record["cpu_isa"] = kind
        write(tmp_path / f"r{seed}", record)
    df = load_records([tmp_path])[0]
    assert list(df.sort_values("seed")["cpu_isa"].fillna("-")) == ["AVX2", "AVX512", "AVX512", "-"]
    line = cpu_kind_line(df)
    assert line.startswith("CPU kinds: AVX2 1, AVX512 2, unrecorded 1. fp32 is bitwise only within one kind")
    assert main([str(tmp_path)]) == 0 and line in (tmp_path / "summary.md").read_text()
    assert cpu_kind_line(df.iloc[0:0]) == ""
