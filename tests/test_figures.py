"""The report's figures (peftbench.analysis.plots): one panel per task, the Pareto front drawn, no two labels or
tick labels overlapping, and the words under the figure (error bars, the dev subset, the cells left out)."""

from __future__ import annotations

import math
from pathlib import Path

from peftbench.analysis import costs
from peftbench.analysis.cells import summarize
from peftbench.analysis.plots import (
    log_ticks,
    overlapping_labels,
    pareto_front,
    plot_budget_vs_score,
    plot_pareto,
)
from peftbench.analysis.records import load_records
from tests.test_report import make_record, write


def crowded(tmp_path: Path, eval_samples: int | None = None) -> Path:
    """Two tasks, two methods at nearly one budget (0.65% and 0.7%), three seeds, close scores; lora timed its
    inference, adapter did not."""
    root = tmp_path / "runs"
    for task in ("sst2", "stsb"):
        for method, share in (("lora", 0.0065), ("adapter", 0.007)):
            for seed in range(3):
                record = make_record(method, seed, 0.80 + 0.001 * seed + (0.002 if method == "lora" else 0), task=task)
                record["params"]["paper_share"] = share
                record["throughput"]["train_time_s"] = 50.0 + seed + (3 if method == "lora" else 0)
                if method == "lora":
                    record["inference"] = {"ratio": 1.05, "ratio_merged": 1.0}
                if eval_samples:
                    record["config"]["data"] = {"max_eval_samples": eval_samples}
                write(root / f"{task}_{method}_{seed}", record)
    return root


def footnote(fig) -> str:
    return " ".join(t.get_text() for t in fig.texts).replace("\n", " ")


def test_budget_figure_one_panel_per_task_readable_ticks_and_words(tmp_path: Path) -> None:
    df, _ = load_records([crowded(tmp_path, eval_samples=64)])
    fig = plot_budget_vs_score(df, tmp_path / "budget.png")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(ax.get_title() for ax in panels) == ["sst2", "stsb"]
    ticks = [t.get_text() for t in panels[0].get_xticklabels() if t.get_text()]
    assert ticks == ["0.65%"]  # 0.7% lies too close to print beside it: one of the two, never "00.6?%"
    assert overlapping_labels(fig) == []
    words = footnote(fig)
    assert "± one sample standard deviation" in words
    assert "64-example subset of the dev set" in words and "full dev set" not in words


def test_pareto_figure_panel_per_task_and_cost_front_and_left_out_cells(tmp_path: Path) -> None:
    df, _ = load_records([crowded(tmp_path)])
    cells = summarize(df)
    fig = plot_pareto(costs.cost_frame(df, cells), tmp_path / "pareto.png", cells)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 6 and [ax.get_title() for ax in panels] == ["sst2"] * 3 + ["stsb"] * 3
    assert all(any(line.get_label() == "Pareto front" for line in ax.lines) for ax in panels)
    assert overlapping_labels(fig) == []
    words = footnote(fig)
    assert "Left out: sst2 inference time × the frozen base model: adapter (0.7%)" in words
    assert "Scores on the full dev set" in words


def test_pareto_front_and_log_ticks() -> None:
    assert pareto_front([1, 2, 3, 4], [80, 79, 82, 82]) == [0, 2]
    assert log_ticks([0.11, 0.65, 0.7, 100], 0.11 / 1.5, 100 * 2) == [0.11, 0.65, 100]
    ticks = log_ticks([20, 30, 50, 100, 200], 25, 110)
    assert ticks == [30, 50, 100] and all(math.log10(b / a) > 0.09 * math.log10(110 / 25)
                                          for a, b in zip(ticks, ticks[1:], strict=False))
