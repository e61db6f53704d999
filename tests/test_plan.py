"""What deciding a claim would take (`peftbench.analysis.plan`): seeds per cell from the power analysis within the
protocol's 5–12, comparisons past the cap named, the pilot's sizes used where a comparison has no sd, and the
runs and hours that follow."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from peftbench.analysis import plan


def rows(*comparisons: tuple[str, str, str, object]) -> pd.DataFrame:
    """Comparison rows (a, b, outcome, seeds_needed) on sst2."""
    return pd.DataFrame([{"task": "sst2", "a": a, "b": b, "outcome": outcome, "seeds_needed": needed}
                         for a, b, outcome, needed in comparisons])  # fmt: skip


def cells(**n_evaluation: int) -> pd.DataFrame:
    """Cells with an interior lr choice of a 3-lr grid and `n_evaluation` evaluation seeds each."""
    return pd.DataFrame([{"task": "sst2", "label": label, "lr": 1e-3, "lr_grid": [5e-4, 1e-3, 2e-3],
                          "n_evaluation": n} for label, n in n_evaluation.items()])  # fmt: skip


def test_each_cell_gets_the_most_seeds_its_undecided_comparisons_need_within_5_to_12() -> None:
    """a vs b needs 8 → both get 8; a vs c needs 3 → c gets 5 (the floor), a keeps 8; d vs e needs 40 → both are
    capped at 12 and the comparison is named; b already has 5 evaluation seeds; a decided comparison (a vs f)
    plans nothing unless `every` (the fixed design), where f runs to its 5 too."""
    table = rows(("a", "b", "underpowered", 8), ("a", "c", "underpowered", 3), ("d", "e", "underpowered", 40),
                 ("a", "f", "agrees", 3))  # fmt: skip
    todo = plan.plan(table, cells(a=0, b=5, c=0, d=2, e=0, f=0), grid_to_go=4, mean_time_s=100.0, every=False)
    assert todo["targets"] == {("sst2", "a"): 8, ("sst2", "b"): 8, ("sst2", "c"): 5, ("sst2", "d"): 12,
                               ("sst2", "e"): 12}  # fmt: skip
    assert todo["eval_runs"] == 8 + 3 + 5 + 10 + 12
    assert todo["beyond"] == [("sst2", "d", "e", 40)] and todo["decided"] == 1 and todo["total"] == 4
    assert todo["grid_runs"] == 4
    assert todo["hours"] == pytest.approx((4 + 38) * 100.0 / 2 / 3600)
    text = plan.markdown_plan(todo, 100.0)
    assert text.startswith("**To decide it:** 1 of 4 comparisons decided. The protocol still needs 4 tuning runs")
    assert "38 evaluation runs (5–12 evaluation seeds for each of the 5 cells of its comparisons" in text
    assert "≈ 0.6 h at 2 runs at a time, 100 s per run" in text
    assert text.endswith("Past the 12-seed cap (at 12 seeds, 80% power only if their evaluation seeds spread less "
                         "than their tuning seeds): sst2 d vs e (≈ 40).")
    fixed = plan.plan(table, cells(a=0, b=5, c=0, d=2, e=0, f=0), grid_to_go=4, mean_time_s=100.0)
    assert fixed["targets"] == {**todo["targets"], ("sst2", "f"): 5} and fixed["eval_runs"] == 38 + 5


def test_a_choice_at_an_lr_edge_costs_one_more_step_on_the_tuning_seeds() -> None:
    edge = cells(a=0, b=0)
    edge.at[0, "lr"] = 2e-3  # the top of its grid
    todo = plan.plan(rows(("a", "b", "underpowered", 6)), edge, grid_to_go=0, mean_time_s=60.0)
    assert todo["grid_runs"] == 3 and todo["eval_runs"] == 12


def test_a_comparison_without_an_sd_is_sized_by_the_pilot_else_counted_at_the_floor() -> None:
    table = rows(("a", "b", "underpowered", None), ("c", "d", "underpowered", math.nan))
    todo = plan.plan(table, cells(a=0, b=0, c=0, d=0), 0, 60.0, pilot={("sst2", "a", "b"): 9})
    assert todo["targets"][("sst2", "a")] == 9 and todo["targets"][("sst2", "c")] == 5
    assert todo["piloted"] == 1 and todo["unsized"] == 1
    text = plan.markdown_plan(todo, 60.0)
    assert "1 of them has too few seed pairs for an sd: sized from the bf16 pilot" in text
    assert "1 of them has too few seed pairs for an sd and no pilot: counted at 5 seeds." in text


def test_a_decided_claim_still_runs_its_fixed_design_and_nothing_is_planned_without_comparisons() -> None:
    decided = rows(("a", "b", "agrees", 8))
    assert plan.plan(decided, cells(a=5, b=5), 0, 60.0, every=False) is None
    fixed = plan.plan(decided, cells(a=5, b=5), 0, 60.0)
    assert fixed["targets"] == {("sst2", "a"): 8, ("sst2", "b"): 8} and fixed["eval_runs"] == 6
    assert plan.plan(pd.DataFrame(), cells(), 0, 60.0) is None


def test_a_complete_design_says_what_each_undecided_comparison_would_need_and_why_it_was_not_run() -> None:
    """Once the fixed design has run in full, "To decide it" no longer plans 0 runs in 0.0 h: each undecided
    comparison gets its pairs and the seeds needed at its evaluation seeds' sd; one already at that number was
    powered and found less than the declared effect (more seeds are not what it lacks); decided ones are counted."""
    table = rows(("a", "b", "underpowered", 15), ("a", "c", "underpowered", 9), ("a", "d", "agrees", 13),
                 ("e", "f", "underpowered", None))  # fmt: skip
    table["expected"], table["n_pairs"] = [1, 1, 1, 0], [5, 9, 12, 2]
    text = plan.markdown_complete(table)
    assert text.startswith("**To decide it:** its fixed design has run in full; 1 of 4 comparisons decided.")
    assert "sst2 a vs b: 5 seed pairs, ≈ 15 needed for its declared effect;" in text
    assert ("sst2 a vs c: 9 seed pairs, which had 80% power for its declared effect (≈ 9 needed) and did not detect "
            "it (its t CI bounds the difference);") in text
    assert "sst2 e vs f: not sized (2 seed pairs)." in text and "a vs d" not in text
    assert "(within 5–12) before any of them runs" in text and "optional stopping" in text
