"""Every number typed by hand is checked against the records: the discussion below FINDINGS.md's marker and the
README's results section may quote a decimal number (a score, a difference, a p-value, a CI bound) only where the
generated text (FINDINGS.md above its marker, each ``results/<experiment>/summary.md``, the precision comparison)
prints it, and FINDINGS.md's generated part is what `python -m peftbench.findings` writes from the committed
records today (so those numbers are the records')."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peftbench.analysis import findings
from peftbench.findings import PILOTS

REPO = Path(__file__).resolve().parent.parent
FINDINGS = REPO / "experiments" / "FINDINGS.md"
README = REPO / "README.md"
RESULTS_HEADING = "## Results: the paper's claims on a CPU"
#: a decimal number as text prints it: 83.7, −1.6, +0.25, 0.003 (signs and the Unicode minus dropped)
DECIMAL = re.compile(r"(?<![\w.])[−+-]?(\d+\.\d+)(?![\w]|\.\d)")


def decimals(text: str) -> set[str]:
    return set(DECIMAL.findall(text))


def generated_text() -> str:
    generated, _, _ = FINDINGS.read_text(encoding="utf-8").partition(findings.DISCUSSION_MARKER)
    reports = [p.read_text(encoding="utf-8") for p in sorted((REPO / "results").glob("*/summary.md"))]
    precision = REPO / "experiments" / "precision" / "comparison.md"
    return "\n".join([generated, *reports, precision.read_text(encoding="utf-8") if precision.exists() else ""])


def hand_written() -> dict[str, str]:
    _, _, discussion = FINDINGS.read_text(encoding="utf-8").partition(findings.DISCUSSION_MARKER)
    readme = README.read_text(encoding="utf-8")
    start = readme.index(RESULTS_HEADING)
    end = readme.find("\n## ", start + len(RESULTS_HEADING))
    return {"FINDINGS.md discussion": discussion, "README results": readme[start : end if end > 0 else None]}


@pytest.mark.parametrize("where", ["FINDINGS.md discussion", "README results"])
def test_every_decimal_quoted_by_hand_is_printed_by_the_generator(where: str) -> None:
    printed = decimals(generated_text())
    quoted = decimals(hand_written()[where])
    missing = sorted(quoted - printed, key=float)
    assert not missing, f"{where} quotes numbers no generated table prints: {', '.join(missing)}"


def test_the_check_catches_a_number_typed_from_memory() -> None:
    """The errors issue 24 found would fail it: "81–84 Pearson" is integers (not checked, so written as a range of
    the medians instead), but "83.1 (MAM, 2.5e-4)"-style decimals that no table prints are caught."""
    printed = decimals("| mam | 81.3 | 83.1 (lr 5e-4) | −2.4 | p 0.003 |")
    assert decimals("MAM scored 83.1 and −2.4, p 0.003") <= printed
    assert decimals("prefix 11.7 → 2.3") - printed == {"11.7", "2.3"}


@pytest.mark.slow
def test_committed_findings_regenerate_from_the_committed_records() -> None:
    generated, _ = findings.build(REPO / "results", pilots=PILOTS)
    committed, marker, _ = FINDINGS.read_text(encoding="utf-8").partition(findings.DISCUSSION_MARKER)
    assert marker and committed == f"{generated}\n\n"
