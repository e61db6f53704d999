"""Which cells each experiment compares, and the comparison of two cells (the statistics are `peftbench.analysis.stats`).

An experiment's records carry its `sweep` name (``table2_cpu``, ``insertion_paper``, ...); the part before
``_cpu`` / ``_paper`` names its comparisons in `EXPERIMENT_COMPARISONS`, each ``(A, B)`` read "A against B".
``--compare A:B`` on the report's command line adds one over all records. A and B are method names, or a
Table 2 label (``lora (0.65%)``) where one method has several designs.

Cells matched to a comparison, per task × model: when A and B each have one cell, those two. Otherwise cells of
equal budget (paper parameter count) are paired; the cells left over are paired by budget rank when both sides
have as many left (the small tier with the small tier: LoRA on the FFN at r=1 has a little less budget than the
attention's r=3); any other leftover is reported as a note, never guessed. Within a pair of cells, the runs at
each cell's chosen learning rate are paired by seed (`compare_runs`).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from peftbench.analysis import bootstrap, stats
from peftbench.analysis.cells import CELL, summarize

#: experiment (the sweep name without _cpu/_paper) → its comparisons (A, B): "A against B".
EXPERIMENT_COMPARISONS: dict[str, tuple[tuple[str, str], ...]] = {
    # Paper Table 2: every method against LoRA at the same ~0.5% budget (BitFit 0.1%, full 100%).
    "table2": (("mam", "lora"), ("adapter", "lora"), ("prefix", "lora"), ("bitfit", "lora"), ("full", "lora")),
    # Table 3: parallel against sequential at each representation; r=16 and r=256 are paired by budget.
    "insertion": (
        ("parallel_adapter_attn", "sequential_adapter_attn"),
        ("parallel_adapter_ffn", "sequential_adapter_ffn"),
    ),
    # Table 5: the FFN against the attention, per budget tier (~0.1%, ~3.6%).
    "representation": (
        ("pa_ffn", "pa_attn"), ("lora_ffn", "lora_attn"), ("pa_ffn", "mh_pa_heads"), ("pa_ffn", "prefix_heads"),
    ),
    # Table 4: scale against add, the gate against add, scale against the gate, at one budget.
    "composition": (
        ("prefix_gate", "prefix_add"), ("scaled_pa_s4", "pa_add"), ("scaled_pa_learned", "pa_add"),
        ("scaled_pa_s4", "scaled_pa_learned"), ("lora_s4", "lora_s1"), ("scaled_pa_s4", "prefix_gate"),
    ),
    # MAM against each ablation and each ingredient alone at MAM's budget.
    "mam_ablation": tuple(
        ("mam", b) for b in ("mam_s4", "mam_add", "mam_mh_pa", "mam_seq_ffn", "prefix_l32", "scaled_pa_r32_s2")
    ),
    # Figure 1: the functional forms at equal budgets (pa r=16 = lora r=8 = prefix l=16, ...).
    "bottleneck": (("pa", "lora"), ("pa", "prefix"), ("lora", "prefix")),
    # Li & Liang's ablations: length, depth, prefix vs infix (at the input), init from words.
    "prefix_ablation": (
        ("prefix_l16", "prefix_l4"), ("prefix_l64", "prefix_l16"), ("prefix_l16", "prefix_embed"),
        ("prefix_embed", "prefix_infix"), ("prefix_words", "prefix_l16"),
    ),
    # Lester et al.'s prompt length and initialisation; P-tuning v1's encoder against free vectors.
    "prompt_ablation": (
        ("prompt_l20", "prompt_l1"), ("prompt_l20", "prompt_l5"), ("prompt_l100", "prompt_l20"),
        ("prompt_labels", "prompt_l20"), ("prompt_l20", "prompt_uniform"), ("prompt_lstm", "prompt_l20"),
    ),
    # P-tuning v2: reparameterisation, depth at equal layer count, verbalizer against a linear head.
    "ptuning_v2_ablation": (("ptv2_mlp", "ptv2"), ("ptv2_top3", "ptv2_bottom3"), ("smollm2_verbalizer", "smollm2_linear")),
    # Issue 29: the methods after the paper against LoRA at equal rank (VeRA, IA3 at their own smaller budgets),
    # rsLoRA against LoRA at r=64.
    "modern": (("dora", "lora"), ("vera", "lora"), ("loraplus", "lora"), ("pissa", "lora"), ("ia3", "lora"),
               ("rslora_r64", "lora_r64")),
}  # fmt: skip
VARIANT_SUFFIXES = ("_cpu", "_paper")
COMMAND_LINE = "command line"
COMPARISON_COLUMNS = [
    "source", "task", "model", "a", "b", "a_method", "b_method", "a_share", "b_share", "a_lr", "b_lr", "metric",
    "n_a", "n_b", "n_pairs", "n_unpaired", "seeds", "mean_a", "mean_b",  # means over the paired seeds
    "mean_diff", "diff_ci_low", "diff_ci_high", "sd_diff", "p_t", "p_wilcoxon", "mdd",
    "boot2_ci_low", "boot2_ci_high", "boot2_p",  # two-level bootstrap: seeds, then dev examples
    "boot_diff", "boot_ci_low", "boot_ci_high", "boot_p",  # dev examples only: dev-set noise of fixed models
    "n_resamples", "n_examples", "bootstrap_note", "aso_eps", "verdict",
]  # fmt: skip


@dataclass(frozen=True)
class ComparisonSpec:
    """Compare cells named `a` against cells named `b` (method names or labels); `source` says who asked."""

    a: str
    b: str
    source: str = COMMAND_LINE


def parse_compare(text: str) -> ComparisonSpec:
    """``A:B`` (method names or labels) → a spec; a ValueError names what is wrong."""
    a, sep, b = text.partition(":")
    if not sep or not a.strip() or not b.strip() or ":" in b:
        raise ValueError(f"--compare {text!r}: expected A:B, two method names or labels, e.g. mam:lora")
    return ComparisonSpec(a.strip(), b.strip())


def experiment_of(sweep: object) -> str | None:
    """The experiment a sweep name belongs to (``mam_ablation_cpu`` → ``mam_ablation``), or None."""
    if not isinstance(sweep, str):
        return None
    for suffix in VARIANT_SUFFIXES:
        sweep = sweep.removesuffix(suffix)
    return sweep if sweep in EXPERIMENT_COMPARISONS else None


def experiment_comparisons(sweep: object) -> list[ComparisonSpec]:
    """The comparisons declared for the experiment of `sweep` (none for an unknown sweep)."""
    experiment = experiment_of(sweep)
    return [ComparisonSpec(a, b, str(sweep)) for a, b in EXPERIMENT_COMPARISONS.get(experiment or "", ())]


# ---- which cells ---------------------------------------------------------------------------------------------


def _named(cells: pd.DataFrame, name: str) -> pd.DataFrame:
    by_method = cells[cells["method"] == name]
    if len(by_method):
        return by_method
    base_label = cells["label"].str.split(" · ", n=1).str[0]  # the label without the setting (data size, ...)
    return cells[(cells["label"] == name) | (base_label == name)]


def _budget(cell: pd.Series) -> float:
    paper = cell.get("params_paper")
    return float(paper) if paper is not None and math.isfinite(paper) else float(cell["share_pct"])


def pair_cells(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[tuple[pd.Series, pd.Series]], int]:
    """Pairs of (A cell, B cell) by the rule of the module docstring, and the number of cells left unpaired."""
    left_a = sorted((row for _, row in a.iterrows()), key=_budget)
    left_b = sorted((row for _, row in b.iterrows()), key=_budget)
    if len(left_a) == 1 and len(left_b) == 1:
        return [(left_a[0], left_b[0])], 0
    pairs = []
    for cell in list(left_a):
        j = next((j for j, other in enumerate(left_b) if math.isclose(_budget(cell), _budget(other))), None)
        if j is not None:
            pairs.append((cell, left_b.pop(j)))
            left_a = [other for other in left_a if other is not cell]
    if len(left_a) == len(left_b):
        pairs += list(zip(left_a, left_b, strict=True))
        left_a, left_b = [], []
    return sorted(pairs, key=lambda p: _budget(p[0])), len(left_a) + len(left_b)


def match_cells(
    cells: pd.DataFrame, spec: ComparisonSpec
) -> tuple[list[tuple[pd.Series, pd.Series]], list[str]]:
    """The (A, B) cell pairs of `spec` in each task × model of `cells` (a `summarize` table), and notes on
    what could not be compared (a side without completed runs, budgets that do not pair)."""
    pairs, notes = [], []
    cells = cells[cells["n"] > 0]
    missing = [name for name in (spec.a, spec.b) if _named(cells, name).empty]
    if missing:
        return [], [f"{spec.source}: {spec.a} vs {spec.b}: no completed runs of {' or '.join(missing)}"]
    for (task, model, setting), sub in cells.groupby(["task", "model", "setting"], sort=True):
        a, b = _named(sub, spec.a), _named(sub, spec.b)
        where = f"{spec.source}, {task}, {model}{f' ({setting})' if setting else ''}: {spec.a} vs {spec.b}"
        if a.empty or b.empty:
            if len(a) or len(b):
                notes.append(f"{where}: no completed runs of {spec.a if a.empty else spec.b}")
            continue
        found, unpaired = pair_cells(a, b)
        pairs += found
        if unpaired:
            notes.append(f"{where}: {unpaired} cell(s) without a partner of equal budget")
    return pairs, notes


# ---- comparing two cells -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _main_split(path: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The main dev split's predictions and references of the record at `path` (cached per file version)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    splits = record.get("predictions") if isinstance(record, dict) else None
    splits = splits if isinstance(splits, dict) else {}
    split = splits.get("validation") or splits.get("validation_matched")
    if not isinstance(split, dict) or split.get("predictions") is None or split.get("references") is None:
        return None
    return np.asarray(split["predictions"]), np.asarray(split["references"])


def load_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-example dev predictions and references of a record (the main split: ``validation``, or
    ``validation_matched`` for MNLI), or None when the record has none."""
    try:
        return _main_split(str(path), Path(path).stat().st_mtime_ns)
    except OSError:
        return None


def _by_seed(runs: pd.DataFrame) -> tuple[dict[int, pd.Series], int]:
    """One run per seed (the latest finished where a seed ran twice in a cell) and the number dropped."""
    latest = runs.assign(_f=runs["finished_at"].fillna("").astype(str)).sort_values(["_f", "path"])
    chosen = {int(row["seed"]): row for _, row in latest.iterrows()}
    return chosen, len(runs) - len(chosen)


def _prediction_pairs(seeds: list[int], a: dict, b: dict) -> tuple[list[bootstrap.PredictionPair], str]:
    """The dev predictions of each seed pair, or [] and why the bootstrap cannot run."""
    if not seeds:
        return [], "no seed pairs"
    pairs = []
    for s in seeds:
        pa, pb = load_predictions(a[s]["path"]), load_predictions(b[s]["path"])
        if pa is None or pb is None:
            missing = sum(load_predictions(side[x]["path"]) is None for x in seeds for side in (a, b))
            return [], f"no dev predictions in {missing} of {2 * len(seeds)} runs"
        if pa[1].shape != pb[1].shape or not np.array_equal(pa[1], pb[1]):
            return [], f"seed {s}: the two runs' dev references differ"
        pairs.append(bootstrap.PredictionPair(pa[0], pb[0], pa[1]))
    if len({len(p.references) for p in pairs}) > 1:
        return [], "seed pairs cover dev sets of different sizes"
    return pairs, ""


def _bootstraps(
    metric: str, seeds: list[int], a: dict, b: dict, n_resamples: int, seed: int
) -> tuple[bootstrap.Bootstrap | None, bootstrap.Bootstrap | None, str]:
    """The two-level bootstrap (seeds, then examples) and the example-only one, or None and why not."""
    if metric not in bootstrap.BOOTSTRAP_METRICS:
        return None, None, f"metric {metric} not supported"
    pairs, note = _prediction_pairs(seeds, a, b)
    if not pairs:
        return None, None, note
    two_level = bootstrap.two_level_bootstrap(metric, pairs, n_resamples, seed) if len(pairs) >= 2 else None
    return two_level, bootstrap.paired_bootstrap(metric, pairs, n_resamples, seed), ""


def aso(a: np.ndarray, b: np.ndarray) -> float:
    """ε_min of almost stochastic order of A over B over seeds (`stats.aso_epsilon`); NaN below 3 seeds per side
    or where deepsig is not installed."""
    if len(a) < stats.MIN_PAIRS_T or len(b) < stats.MIN_PAIRS_T:
        return math.nan
    try:
        return stats.aso_epsilon(a, b)
    except ImportError:
        return math.nan


def compare_runs(
    cell_a: pd.Series,
    cell_b: pd.Series,
    runs_a: pd.DataFrame,
    runs_b: pd.DataFrame,
    *,
    source: str = COMMAND_LINE,
    n_resamples: int = bootstrap.N_RESAMPLES,
    seed: int = 0,
    alpha: float = stats.ALPHA,
) -> dict:
    """One comparison row (`COMPARISON_COLUMNS`): the completed runs of two cells at their chosen lr, paired by
    seed (runs without a partner are dropped and counted in ``n_unpaired``); scores ×100; the seed-paired test,
    the paired bootstrap over dev examples and the verdict of `peftbench.analysis.stats`."""
    a, dropped_a = _by_seed(runs_a)
    b, dropped_b = _by_seed(runs_b)
    seeds, unpaired = stats.pair_by_seed(a, b)
    score = lambda side: np.array([100 * float(side[s]["score"]) for s in seeds])  # noqa: E731
    paired = stats.paired_test(score(a), score(b))
    metric = str(cell_a["metric"])
    two_level, boot, note = _bootstraps(metric, seeds, a, b, n_resamples, seed)
    d = score(a) - score(b)
    sd = float(d.std(ddof=1)) if len(d) >= 2 else math.nan
    nan = math.nan
    return {
        "source": source, "task": cell_a["task"], "model": cell_a["model"],
        "a": cell_a["label"], "b": cell_b["label"], "a_method": cell_a["method"], "b_method": cell_b["method"],
        "a_share": cell_a.get("share_pct", nan), "b_share": cell_b.get("share_pct", nan),
        "a_lr": cell_a.get("lr", nan), "b_lr": cell_b.get("lr", nan), "metric": metric,
        "n_a": len(runs_a), "n_b": len(runs_b), "n_pairs": len(seeds),
        "n_unpaired": unpaired + dropped_a + dropped_b, "seeds": seeds,
        "mean_a": score(a).mean() if seeds else nan, "mean_b": score(b).mean() if seeds else nan,
        "mean_diff": paired.mean_diff, "diff_ci_low": paired.ci_low, "diff_ci_high": paired.ci_high,
        "sd_diff": sd, "p_t": paired.p_t, "p_wilcoxon": paired.p_wilcoxon,
        "mdd": stats.min_detectable_difference(len(seeds), sd, alpha),
        "boot2_ci_low": two_level.ci_low if two_level else nan, "boot2_ci_high": two_level.ci_high if two_level else nan,
        "boot2_p": two_level.p if two_level else nan,
        "boot_diff": boot.diff if boot else nan, "boot_ci_low": boot.ci_low if boot else nan,
        "boot_ci_high": boot.ci_high if boot else nan, "boot_p": boot.p if boot else nan,
        "n_resamples": n_resamples if boot else 0, "n_examples": boot.n_examples if boot else 0,
        "bootstrap_note": note, "aso_eps": aso(score(a), score(b)),
        "verdict": seed_verdict(paired, alpha),
    }  # fmt: skip


def seed_verdict(paired: stats.PairedTest, alpha: float = stats.ALPHA) -> str:
    """The report's reading of one comparison, from the seed-paired t-test alone (the bootstraps never vote):
    better / worse at p < α, else "no significant difference" — which is not evidence of equality (that takes an
    equivalence test with a declared margin: `peftbench.analysis.findings`)."""
    if paired.n >= stats.MIN_PAIRS_T and math.isfinite(paired.p_t) and paired.p_t < alpha and paired.mean_diff:
        return stats.BETTER if paired.mean_diff > 0 else stats.WORSE
    return stats.NO_DIFFERENCE


# ---- rendering -----------------------------------------------------------------------------------------------

RULE = (
    f"Differences are A − B ×100 on the dev set. Runs are paired by seed (the unit of replication: it draws the "
    f"init, the training subset and the order) at each cell's chosen lr. Paired t: `scipy.stats.ttest_rel` over "
    f"seed pairs (needs ≥ {stats.MIN_PAIRS_T} pairs; the 95% CI, t with n−1 df, needs 2). MDD: the smallest true "
    f"difference the paired t-test detects with 80% power at this n, from the observed sd of the paired "
    f"differences (`statsmodels` TTestPower). Two-level bootstrap: seed pairs resampled, then dev examples within "
    f"each (95% percentile CI; it includes seed variance). ASO ε_min: almost stochastic order of A's scores over B's "
    f"across seeds (`deepsig.aso`; < 0.2: A dominates; ≥ 0.5: it does not). Dev-example bootstrap: the examples alone, the trained "
    f"models fixed, so it measures dev-set sampling noise, not the method; shown for reference, it never votes. "
    f"Verdict at α = {stats.ALPHA}: better/worse when the seed-paired t-test has p < α, else no significant "
    f"difference, which is not evidence of equality."
)


def _signed(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:+.1f}"


def _interval(mid: float, low: float, high: float) -> str:
    if not math.isfinite(mid):
        return "—"
    return _signed(mid) + (f" [{low:+.1f}, {high:+.1f}]" if math.isfinite(low) else "")


def format_p(p: float) -> str:
    """A p-value for a table: ``0.032``, ``<0.001``, ``—`` when not computed."""
    if p is None or not math.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def two_level_interval(r: pd.Series) -> str:
    """``[low, high]`` of the two-level bootstrap, or ``—`` (why not, where the row says)."""
    if math.isfinite(r.get("boot2_ci_low", math.nan)):
        return f"[{r['boot2_ci_low']:+.1f}, {r['boot2_ci_high']:+.1f}]"
    return f"— ({r['bootstrap_note']})" if r.get("bootstrap_note") else "—"


def _f2(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.2f}"


def format_mdd(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.1f}"


def markdown_comparisons(table: pd.DataFrame, notes: list[str] | None = None) -> str:
    """One table per source (experiment or --compare) × task × model:
    ``A vs B | n pairs | mean diff ×100 [95% CI] | paired t p | MDD | two-level bootstrap CI | dev-example bootstrap
    [95% CI] | verdict``, then the decision rule and the notes (comparisons that could not be made)."""
    if table.empty and not notes:
        return ""
    parts = ["## Comparisons"]
    several_models = table["model"].nunique() > 1
    for (source, task, model), sub in table.groupby(["source", "task", "model"], sort=True):
        title = f"### {task} — {source}" + (f" ({model})" if several_models else "")
        lines = [
            title, "",
            "| A vs B | n pairs | mean diff ×100 [95% CI] | paired t p | MDD (80% power) | two-level bootstrap 95% CI "
            "| dev-example bootstrap [95% CI] (dev-set noise only) | ASO ε_min | verdict |",
            "|:---|---:|---:|---:|---:|---:|---:|---:|:---|",
        ]  # fmt: skip
        for _, r in sub.iterrows():
            pairs = f"{r['n_pairs']}" + (f" (+{r['n_unpaired']} unpaired)" if r["n_unpaired"] else "")
            boot = _interval(r["boot_diff"], r["boot_ci_low"], r["boot_ci_high"])
            if r["bootstrap_note"]:
                boot = f"— ({r['bootstrap_note']})"
            lines.append(
                f"| {r['a']} vs {r['b']} | {pairs} | {_interval(r['mean_diff'], r['diff_ci_low'], r['diff_ci_high'])}"
                f" | {format_p(r['p_t'])} | {format_mdd(r['mdd'])} | {two_level_interval(r)} | {boot}"
                f" | {_f2(r.get('aso_eps', math.nan))} | {r['verdict']} |"
            )
        parts.append("\n".join(lines))
    parts.append(RULE)
    if notes:
        parts.append("Not compared:\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)


# ---- the comparisons of a set of records ---------------------------------------------------------------------


def cell_runs(df: pd.DataFrame, cell: pd.Series) -> pd.DataFrame:
    """The completed runs of a `summarize` cell at its lr (runs of unknown lr where the cell's lr is unknown) whose
    dev scores the cell reports: its evaluation seeds' runs when it has any (``dev_on``), else its tuning seeds'."""
    done = df[df["status"] == "completed"]
    if "role" in done and isinstance(cell.get("dev_on"), str):
        done = done[done["role"].fillna("tuning") == cell["dev_on"]]
    mask = np.logical_and.reduce([(done[k] == cell[k]).to_numpy() for k in CELL])
    lr = pd.to_numeric(done["lr"], errors="coerce").to_numpy(dtype=float)
    mask &= np.isnan(lr) if not math.isfinite(cell["lr"]) else np.isclose(lr, cell["lr"], rtol=1e-9, atol=0)
    return done[mask]


def compare(
    df: pd.DataFrame,
    specs: list[ComparisonSpec | str] | tuple = (),
    *,
    experiments: bool = True,
    n_resamples: int = bootstrap.N_RESAMPLES,
) -> tuple[pd.DataFrame, list[str]]:
    """The comparisons each experiment declares, over the runs of its sweep, and `specs` (``"A:B"`` or
    `ComparisonSpec`), over all runs: one row per pair of cells (`COMPARISON_COLUMNS`), and notes on what
    could not be compared. Cells are those of `peftbench.analysis.cells.summarize` (each at its chosen lr)."""
    jobs: list[tuple[pd.DataFrame, list[ComparisonSpec]]] = []
    if experiments and len(df):
        for sweep in sorted(df["sweep"].dropna().astype(str).unique()):
            declared = experiment_comparisons(sweep)
            if declared:
                jobs.append((df[df["sweep"] == sweep], declared))
    asked = [parse_compare(s) if isinstance(s, str) else s for s in specs]
    if asked:
        jobs.append((df, asked))
    rows, notes = [], []
    for runs, todo in jobs:
        cells = summarize(runs)
        for spec in todo:
            pairs, spec_notes = match_cells(cells, spec)
            notes += spec_notes
            rows += [
                compare_runs(
                    a, b, cell_runs(runs, a), cell_runs(runs, b), source=spec.source, n_resamples=n_resamples
                )
                for a, b in pairs
            ]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS), notes
