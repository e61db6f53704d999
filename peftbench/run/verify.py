"""Which committed records can be verified here, and whether a rerun computed them again bit for bit.

**Which records.** The completed records (``status: completed``, with a ``config`` and dev ``predictions``) under
DIR. ``--sample N`` picks N of them, deterministically for a ``--seed S``: the records (sorted by path) are shuffled
by ``random.Random(S)`` and taken in order of their rank within their method (the k-th record of a method before
the (k+1)-th of any), so N records cover min(N, #methods) methods. ``--records`` names records (files or run
folders) instead. A record this machine cannot compute as it was computed is refused, not rerun differently: a
bf16 record on a CPU without native bf16 (torch emulates bf16 there, ~30x slower than fp32, and rounds differently
from a native bf16 unit), a GPU record on a machine without a GPU. Named records are refused with an error (exit
2); a sample passes over them with one line saying how many.

**What is compared.** For every dev split, the rerun's per-example predictions against the committed
``predictions[split]["predictions"]``, element by element with ``==`` (class ids; regression scores as recorded,
7 significant digits); the dev metrics and ``score``; and the per-epoch ``history`` (train loss, lr, held-out
metrics, gate λ: the fields both records have), whose first differing epoch says whether training diverged at
once or late. A record is *identical* when all of these are equal. One line per record (path, method, seed,
committed score, rerun score, ``identical`` or ``N of M predictions differ``, the first differing epoch), then a
summary line.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.run.record import record_key, record_precision
from peftbench.run.rerun import RECORD, VerifyError

# ----------------------------------------------------------------------------------------------- records


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except OSError as err:
        raise VerifyError(f"cannot read {path}: {err.strerror}") from None
    except ValueError as err:
        raise VerifyError(f"{path} is not JSON ({err})") from None
    if not isinstance(record, dict):
        raise VerifyError(f"{path} is not a record (a JSON object)")
    return record


def usable(record: dict[str, Any]) -> str | None:
    """Why a record cannot be verified at all (None when it can): not completed, no config or predictions."""
    if record.get("status") != "completed":
        return f"its status is {record.get('status')!r}, not completed"
    if not isinstance(record.get("config"), dict):
        return "it has no resolved config"
    predictions = record.get("predictions")
    if not isinstance(predictions, dict) or not predictions:
        return "it has no dev predictions"
    if record_precision(record) is None:
        return "its precision is unknown"
    return None


def refusal(record: dict[str, Any]) -> str | None:
    """Why this machine cannot compute the record as it was computed (None when it can)."""
    import torch

    device = str(record.get("device") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"it ran on a GPU ({device}) and this machine has none"
    if record_precision(record) == "bf16" and not device.startswith("cuda"):
        from peftbench.run.precision import cpu_supports_bf16

        if not cpu_supports_bf16():
            return ("it ran in bf16 and this CPU has no native bf16 (no AMX / AVX512-BF16: torch would emulate it, "
                    "~30x slower, with other rounding); verify it on a CPU with native bf16")
    return None


def completed_records(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The verifiable records under `root`, sorted by path; unreadable and unusable ones are passed over."""
    out = []
    for path in sorted(root.rglob(RECORD)):
        try:
            record = read_record(path)
        except VerifyError:
            continue
        if usable(record) is None:
            out.append((path, record))
    return out


def sample(records: list[tuple[Path, dict[str, Any]]], n: int, seed: int) -> list[tuple[Path, dict[str, Any]]]:
    """`n` records spread over methods: shuffled with `seed`, then the k-th of each method before any (k+1)-th."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    rank: dict[str, int] = {}
    keyed = []
    for position, (path, record) in enumerate(shuffled):
        method = str(record.get("method"))
        keyed.append((rank.get(method, 0), position, path, record))
        rank[method] = rank.get(method, 0) + 1
    return [(path, record) for _, _, path, record in sorted(keyed, key=lambda k: k[:2])[:n]]


# ----------------------------------------------------------------------------------------------- compare


@dataclass
class Outcome:
    identical: bool
    rerun_score: float | None
    differing: int = 0
    total: int = 0
    first_epoch: int | None = None
    notes: list[str] = field(default_factory=list)


def compare(committed: dict[str, Any], rerun: dict[str, Any], key: str | None = None) -> Outcome:
    """The rerun against the committed record: predictions element by element, metrics, score and history;
    the rerun's run key must be `key` (the plan's; default the record's own)."""
    out = Outcome(identical=True, rerun_score=rerun.get("score"))
    if rerun.get("status") != "completed":
        return Outcome(False, None, notes=[f"rerun {rerun.get('status')}: {rerun.get('error')}"])
    if rerun.get("verify_exit"):
        out.notes.append(f"the rerun wrote its record but exited {rerun['verify_exit']}")
    if record_key(rerun) != (key or record_key(committed)):
        out.identical = False
        out.notes.append("the rerun's run key differs from the record's")
    for split, recorded in committed["predictions"].items():
        mine = (rerun.get("predictions") or {}).get(split)
        if not isinstance(mine, dict):
            out.identical = False
            out.notes.append(f"no {split} predictions in the rerun")
            continue
        theirs, ours = recorded.get("predictions") or [], mine.get("predictions") or []
        out.total += len(theirs)
        if len(theirs) != len(ours):
            out.differing += len(theirs)
            out.notes.append(f"{split}: {len(ours)} predictions, recorded {len(theirs)}")
        else:
            out.differing += sum(a != b for a, b in zip(theirs, ours, strict=True))
        if recorded.get("references") != mine.get("references"):
            out.notes.append(f"{split}: the references differ (other dev data)")
            out.identical = False
    if out.differing:
        out.identical = False
    if committed.get("score") != rerun.get("score") or committed.get("metrics") != rerun.get("metrics"):
        out.identical = False
    history, again = committed.get("history") or [], rerun.get("history") or []
    for i, (a, b) in enumerate(zip(history, again, strict=False)):
        if any(a[k] != b[k] for k in a.keys() & b.keys()):
            out.first_epoch = a.get("epoch", i + 1)
            break
    else:
        if len(history) != len(again):
            out.first_epoch = min(len(history), len(again)) + 1
    if out.first_epoch is not None:
        out.identical = False
    if not out.identical:
        out.notes += _cpu_notes(committed, rerun)
        before, now = committed.get("versions") or {}, rerun.get("versions") or {}
        changed = [f"{k} {before.get(k)} -> {now.get(k)}" for k in ("torch", "transformers", "accelerate")
                   if before.get(k) != now.get(k)]
        if changed:
            out.notes.append("versions differ: " + ", ".join(changed))
    return out


def _cpu_notes(committed: dict[str, Any], rerun: dict[str, Any]) -> list[str]:
    """Why a CPU rerun may differ: another CPU kind (``cpu_isa``), or one kind with other SIMD extensions
    (``cpu_features``, recorded since 2026-12-07; an older record cannot tell)."""
    if str(committed.get("device") or "cpu").startswith("cuda"):
        return []
    kinds, features = (committed.get("cpu_isa"), rerun.get("cpu_isa")), (committed.get("cpu_features"),
                                                                         rerun.get("cpu_features"))  # fmt: skip
    if kinds[0] != kinds[1]:
        return [f"computed on {kinds[0] or 'a CPU kind it does not record'}, rerun on {kinds[1]}: fp32 is bitwise "
                "only within one CPU kind"]  # fmt: skip
    if features[0] != features[1]:
        return [f"computed on {features[0] or 'CPU features it does not record'}, rerun on {features[1]}: within one "
                "kind, other SIMD extensions may change the last digits"]  # fmt: skip
    return []


def line(path: Path, record: dict[str, Any], outcome: Outcome) -> str:
    def fmt(score: Any) -> str:
        return f"{score:.6f}" if isinstance(score, int | float) else "-"

    if outcome.identical:
        verdict = "identical"
    elif outcome.total:
        verdict = f"{outcome.differing} of {outcome.total} predictions differ"
    else:
        verdict = "differs"
    epoch = "" if outcome.first_epoch is None else f", first differing epoch {outcome.first_epoch}"
    notes = "".join(f"; {n}" for n in outcome.notes)
    return (f"{path}  {record.get('method')}  seed {record.get('seed')}  committed {fmt(record.get('score'))}  "
            f"rerun {fmt(outcome.rerun_score)}  {verdict}{epoch}{notes}")
