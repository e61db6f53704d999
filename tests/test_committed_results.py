"""The committed results are what the committed records say: each ``results/<experiment>/summary.md`` is what
``python -m peftbench.report results/<experiment>`` writes from the records beside it (rerun the report, or
``python -m peftbench.findings``, after adding records)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peftbench import report

REPO = Path(__file__).resolve().parent.parent
REPORTED = sorted(p.parent for p in (REPO / "results").glob("*/summary.md"))


@pytest.mark.parametrize("folder", REPORTED, ids=[p.name for p in REPORTED])
def test_committed_summary_regenerates_from_its_records(folder: Path, tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(REPO)  # the report names problem files relative to the folder it was given
    try:
        assert report.main([str(folder.relative_to(REPO)), "--out", str(tmp_path)]) == 0
    finally:
        os.chdir(cwd)
    assert (tmp_path / "summary.md").read_text() == (folder / "summary.md").read_text()
