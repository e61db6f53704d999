"""A real tiny sweep (two methods × two seeds on SST-2), its report and the notebook, in the same test run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from peftbench.analysis.cells import format_share
from tests.test_run import records, run_cli

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, glue_dir) -> Path:
    tmp = tmp_path_factory.mktemp("sweep")
    out = run_cli(tmp, glue_dir, tmp / "cache", "-m", "method=lora,bitfit", "seed=0,1", "task=sst2", "model=tiny_bert",
                  "data.max_train_samples=96", "data.held_out=32", "train.epochs=1", "train.progress=false",
                  "sweep=e2e")
    assert out.returncode == 0, out.stderr[-2000:]
    return tmp / "multirun"


def test_report_matches_the_records(sweep, tmp_path):
    done = records(sweep)
    assert len(done) == 4 and {r["sweep"] for r in done} == {"e2e"}
    out = subprocess.run([sys.executable, "-m", "peftbench.report", str(sweep), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "summary.csv")
    assert len(table) == 4 and set(table["status"]) == {"completed"}
    markdown = (tmp_path / "summary.md").read_text()
    for method in ("lora", "bitfit"):
        scores = [100 * r["score"] for r in done if r["method"] == method]
        share = 100 * next(r["params"]["paper_share"] for r in done if r["method"] == method)
        median, std = statistics.median(scores), statistics.stdev(scores)
        assert f"{median:.1f} ± {std:.1f}" in markdown, (method, scores, markdown)
        assert f"{method} ({format_share(share)})" in markdown
    png = tmp_path / "budget_vs_score.png"
    assert png.stat().st_size > 5_000


def test_notebook_runs_on_the_sweep(sweep):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "notebooks" / "results.ipynb", as_version=4)
    os.environ["PEFTBENCH_RESULTS"] = str(sweep)
    try:
        nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    finally:
        del os.environ["PEFTBENCH_RESULTS"]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("bitfit" in o.get("data", {}).get("text/markdown", "") for o in outputs)
