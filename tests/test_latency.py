"""Issue 12, point 8: each run's inference cost against the frozen base model (peftbench.run.latency). Timings are
not asserted (a benchmark prints them); what could be wrong is: which batches are timed, that merging is undone
bit for bit, and that the measurement leaves the model computing what it computed."""

from __future__ import annotations

import copy

import pytest
import torch

from peftbench import apply_method, load_method
from peftbench.run.latency import alternate, inference_cost, spread
from peftbench.space.inject import merge_modules
from tests.conftest import tiny_batch, tiny_model


def _loader(n_batches: int = 5, rows: int = 40):
    return [{**tiny_batch(seed=i, batch=rows), "labels": torch.zeros(rows, dtype=torch.long)} for i in range(n_batches)]


def test_spread_takes_evenly_spaced_batches_cut_to_training_size():
    loader = _loader(5)
    picked = spread(loader, 2)
    assert len(picked) == 2 and all(len(b["input_ids"]) == 32 and "labels" not in b for b in picked)
    assert torch.equal(picked[1]["input_ids"], loader[2]["input_ids"][:32])  # batches 0 and 2 of 5
    assert len(spread(loader, 9)) == 5


def test_alternate_times_every_model_every_round():
    calls: list[str] = []

    class Counting(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, **_):
            calls.append(self.name)

    medians = alternate({"a": Counting("a"), "b": Counting("b")}, [{}], _no_autocast, 3)
    assert set(medians) == {"a", "b"} and calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, rotated


class _no_autocast:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_lora_is_measured_merged_and_restored_exactly():
    model = tiny_model("bert")
    apply_method(model, load_method("lora"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # a trained-looking LoRA: merging changes the weights
    before = copy.deepcopy(model.state_dict())
    batch = tiny_batch()
    expected = model.eval()(**batch).logits
    cost = inference_cost(model, lambda: tiny_model("bert"), _loader(), 2, _no_autocast, "cpu")
    assert cost["batches"] == 2 and cost["rows"] == 64 and cost["ratio"] > 0 and cost["ratio_merged"] > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit, merged weights included
    torch.testing.assert_close(model(**batch).logits, expected, atol=0, rtol=0)


@pytest.mark.parametrize("method", ["ia3", "dora", "vera", "pissa"])
def test_the_successors_are_measured_merged_and_restored_exactly(method):
    """Issue 29: IA3 (diag(l)·W, l ⊙ b; W·diag(l)), DoRA (m/‖·‖ ⊙ (W + sBA)), VeRA and PiSSA merge: the cost table
    gets their merged cost, and the model computes exactly what it did before."""
    model = tiny_model("roberta")
    apply_method(model, load_method(method, **({"attn.r": 16} if method == "vera" else {})))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    before = copy.deepcopy(model.state_dict())
    batch = tiny_batch()
    expected = model.eval()(**batch).logits
    merged = copy.deepcopy(model)
    assert merge_modules(merged) == (6 if method == "ia3" else 4)
    torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=1e-5)  # merging keeps the function
    cost = inference_cost(model, lambda: tiny_model("roberta"), _loader(), 1, _no_autocast, "cpu")
    assert cost["ratio_merged"] > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(model(**batch).logits, expected, atol=0, rtol=0)


def test_an_adapter_has_no_merged_measurement_and_zero_batches_switch_it_off():
    model = tiny_model("bert")
    apply_method(model, load_method("adapter"))
    cost = inference_cost(model, lambda: tiny_model("bert"), _loader(), 1, _no_autocast, "cpu")
    assert cost["ratio_merged"] is None and cost["merged_s"] is None
    assert inference_cost(model, lambda: tiny_model("bert"), _loader(), 0, _no_autocast, "cpu") is None


def test_the_report_shows_cost_per_cell_and_a_pareto_plot(tmp_path):
    from test_report import make_record, write

    from peftbench import report

    for seed in range(2):
        lora = make_record("lora", seed, 0.90)
        lora["inference"] = {"ratio": 1.3 + 0.1 * seed, "ratio_merged": 1.0}
        lora["throughput"] = {"train_time_s": 50.0 + seed}
        adapter = make_record("adapter", seed, 0.91)
        adapter["inference"] = {"ratio": 1.15, "ratio_merged": None}
        adapter["throughput"] = {"train_time_s": 60.0}
        write(tmp_path / "runs" / f"lora{seed}", lora)
        write(tmp_path / "runs" / f"adapter{seed}", adapter)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "| sst2 | lora (" in text and "| 90.0 | 50 | 1.35 | 1.00 | 2 |" in text  # medians over the 2 runs
    assert "| 91.0 | 60 | 1.15 | — | 2 |" in text
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000
    # records without a measurement: no cost section; the Pareto figure has no inference panel (issue 28: score
    # against parameters is drawn for every report)
    for seed in range(2):
        write(tmp_path / "old" / f"lora{seed}", make_record("lora", seed, 0.9))
    assert report.main([str(tmp_path / "old"), "--out", str(tmp_path / "old_out")]) == 0
    assert "Cost per cell" not in (tmp_path / "old_out" / "summary.md").read_text()
    from peftbench.analysis import costs
    from peftbench.analysis.cells import summarize
    from peftbench.analysis.plots import plot_pareto
    from peftbench.analysis.records import load_records

    df, _ = load_records([tmp_path / "old"])
    fig = plot_pareto(costs.cost_frame(df, summarize(df)), tmp_path / "p.png")
    assert [ax.get_xlabel() for ax in fig.axes] == ["fine-tuned parameters (% of the base model)"]
