"""The experiment grids of ``conf/experiment/``: every job composes and validates, the grids have the sizes
``experiments/README.md`` documents, the CPU and paper variants run the same designs, and the budgets the
configs claim on roberta-base hold (``describe`` builds the model on the meta device: no weights).

A grid is expanded the way ``python -m peftbench -m +experiment=<name>`` expands it: Hydra's BasicSweeper
takes the product of the ``hydra.sweeper.params`` entries (parsed by Hydra's override parser) and the command
line. Composing all ~670 jobs would take minutes, so each job that brings a new cell (its overrides other than
seed and task), a new task or a new seed is composed: every other job differs from a composed one only in
seed or task, and each of those values is composed too.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from peftbench.describe import describe
from peftbench.run.config import compose, to_specs
from peftbench.space.presets import CONF_DIR

EXPERIMENT_DIR = CONF_DIR / "experiment"
README = CONF_DIR.parent / "experiments" / "README.md"
VARIANTS = ("cpu", "paper")

#: experiment -> (cells, tasks, seeds, learning rates) per variant; runs = their product (the counts of
#: experiments/README.md).
GRIDS: dict[str, dict[str, tuple[int, int, int, int]]] = {
    "table2": {"cpu": (6, 2, 3, 4), "paper": (6, 2, 5, 1)},
    "insertion": {"cpu": (8, 1, 3, 3), "paper": (8, 2, 5, 1)},
    "representation": {"cpu": (12, 1, 3, 3), "paper": (12, 2, 5, 1)},
    "composition": {"cpu": (7, 1, 3, 3), "paper": (7, 2, 5, 1)},
    "bottleneck": {"cpu": (12, 1, 3, 1), "paper": (12, 2, 5, 1)},
    "mam_ablation": {"cpu": (7, 1, 3, 3), "paper": (7, 2, 5, 1)},
    "prefix_ablation": {"cpu": (6, 1, 3, 3), "paper": (6, 2, 5, 1)},
    "prompt_ablation": {"cpu": (7, 1, 3, 3), "paper": (7, 2, 5, 1)},
    "ptuning_v2_ablation": {"cpu": (6, 1, 3, 3), "paper": (6, 2, 5, 1)},
    "modern": {"cpu": (8, 1, 3, 3), "paper": (8, 2, 5, 1)},
}
#: arms that run on another model than their variant's (the verbalizer needs an LM head: SmolLM2, offline)
OTHER_MODEL = {"smollm2_linear": "smollm2", "smollm2_verbalizer": "smollm2"}
#: the sweep keys that are not part of a cell: a cell's runs differ in them (lr_scale: the lr grid)
NOT_CELL = ("seed=", "task=", "train.lr_scale=")
NAMES = [f"{experiment}_{variant}" for experiment in GRIDS for variant in VARIANTS]


def runs(name: str) -> int:
    experiment, variant = name.rsplit("_", 1)
    return math.prod(GRIDS[experiment][variant])


@pytest.fixture(scope="module", autouse=True)
def hydra_context() -> Iterator[None]:
    """One Hydra context for the module: ``peftbench.run.config.compose`` (and ``describe``) reuse it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


@functools.cache
def sweep_jobs(name: str) -> tuple[tuple[str, ...], ...]:
    """The override list of each job of ``python -m peftbench -m +experiment=<name>``, in launch order."""
    cli = [f"+experiment={name}"]
    cfg = hydra_compose(config_name="config", overrides=cli, return_hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    (batch,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + cli), None)
    return tuple(tuple(job) for job in batch)


def cell_of(job: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(o for o in job if not o.startswith(NOT_CELL))


def value_of(job: tuple[str, ...], key: str, default: str | None = None) -> str:
    return next((o.split("=", 1)[1] for o in job if o.startswith(f"{key}=")), default)


@functools.cache
def composed_cells(name: str) -> dict[tuple[str, ...], dict]:
    """Compose and validate the jobs of one experiment that bring a new cell or task; per cell, its design
    coordinates and (paper variants, on roberta-base via ``describe``) its budget."""
    jobs = sweep_jobs(name)
    first = compose(jobs[0])
    to_specs(first)
    assert (first.sweep, first.results_root) == (name, f"{'results' if name.endswith('_cpu') else 'multirun'}/{name}")
    for task in {value_of(job, "task") for job in jobs} - {first.task.name}:
        job = next(j for j in jobs if value_of(j, "task") == task)
        assert to_specs(compose(job)).task.name == task
    cells: dict[tuple[str, ...], dict] = {}
    for job in jobs:
        if cell_of(job) in cells:
            continue
        if name.endswith("_paper"):
            cells[cell_of(job)] = describe(list(job))  # composes, validates (to_specs) and counts
        else:
            specs = to_specs(compose(job))
            cells[cell_of(job)] = {"model": specs.model.name, "design": specs.method.coordinates(),
                                   "method": specs.method.name}
    return cells


def paper_budget(experiment: str, arm: str) -> dict:
    """``describe`` of one arm of an experiment on roberta-base."""
    cells = composed_cells(f"{experiment}_paper")
    return next(report for cell, report in cells.items() if f"experiment/arm/{experiment}={arm}" in cell)


def test_experiment_files_are_the_documented_ones() -> None:
    found = sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml"))  # grid/, setting/, arm/ hold the parts
    assert found == sorted(NAMES)
    readme = README.read_text()
    for name in NAMES:
        assert f"python -m peftbench -m +experiment={name}" in readme
        root = "results" if name.endswith("_cpu") else "multirun"  # where the experiment's records go
        assert f"python -m peftbench.report {root}/{name}" in readme


def test_readme_run_counts_match_the_grids() -> None:
    """Each README table row ``| `experiment` | ... | cpu runs | paper runs |`` holds the grid sizes."""
    rows = {
        m[1]: m[0]
        for m in (re.match(r"\| `(\w+)` \|.*", line) for line in README.read_text().splitlines())
        if m
    }
    for experiment in GRIDS:
        cells = [c.strip() for c in rows[experiment].strip("|").split("|")]
        assert cells[-2:] == [str(runs(f"{experiment}_cpu")), str(runs(f"{experiment}_paper"))], experiment


def test_every_arm_is_swept() -> None:
    """No arm file sits unused: each one is a value of its grid's sweep."""
    swept = {
        (e, o.split("=", 1)[1])
        for e in GRIDS
        for job in sweep_jobs(f"{e}_paper")
        for o in job
        if o.startswith(f"experiment/arm/{e}=")
    }
    arms = {(p.parent.name, p.stem) for p in (EXPERIMENT_DIR / "arm").glob("*/*.yaml")}
    assert arms == swept


@pytest.mark.parametrize("experiment", list(GRIDS))
def test_grid_composes_and_both_variants_run_the_same_designs(experiment: str) -> None:
    designs: dict[str, list[str]] = {}
    for variant in VARIANTS:
        name = f"{experiment}_{variant}"
        jobs = sweep_jobs(name)
        n_cells, n_tasks, n_seeds, n_lrs = GRIDS[experiment][variant]
        assert len(jobs) == runs(name) == len(set(jobs))
        assert len({cell_of(j) for j in jobs}) == n_cells
        assert len({value_of(j, "task") for j in jobs}) == n_tasks
        assert len({value_of(j, "seed") for j in jobs}) == n_seeds
        assert len({value_of(j, "train.lr_scale", "1") for j in jobs}) == n_lrs
        assert all(value_of(j, "seed").isdigit() for j in jobs)  # a seed changes nothing else of a job

        cells = composed_cells(name)
        default = {"cpu": "minilm", "paper": "roberta_base"}[variant]
        assert {c["method"]: c["model"] for c in cells.values()} == {
            c["method"]: OTHER_MODEL.get(c["method"], default) for c in cells.values()}
        designs[variant] = [json.dumps({**c["design"], "on": c["model"] if c["method"] in OTHER_MODEL else None},
                                       sort_keys=True, default=str) for c in cells.values()]
        assert len(set(designs[variant])) == n_cells, f"{name}: two cells of the grid are the same design"
    assert designs["cpu"] == designs["paper"]


def test_table2_methods_land_on_the_paper_budgets() -> None:
    """Paper Table 2 on roberta-base: the PEFT rows at ~0.5% (0.3-0.7%), BitFit ~0.1%, full fine-tuning 100%."""
    shares = {
        arm: paper_budget("table2", arm)["paper_share"]
        for arm in ("full", "bitfit", "prefix", "lora", "adapter", "mam")
    }
    for arm in ("prefix", "lora", "adapter", "mam"):
        assert 0.003 <= shares[arm] <= 0.007, (arm, shares[arm])
    assert 0.0005 <= shares["bitfit"] <= 0.0015
    assert shares["full"] == pytest.approx(1.0)
    assert (
        paper_budget("table2", "mam")["paper"] == 589_824
    )  # REFERENCE.md §2: MAM l=16, r=16 is the paper's "0.5%"


@pytest.mark.parametrize(("tier", "target", "tolerance"), [("small", 0.001, 0.0003), ("large", 0.036, 0.001)])
def test_representation_tiers_hold_their_budget(tier: str, target: float, tolerance: float) -> None:
    """~0.1% within ±0.03 points and ~3.6% within ±0.1 points of roberta-base; within a tier every arm has the
    parallel adapter's exact count, except LoRA on the FFN at ~0.1% (r=1, the smallest: 0.074%)."""
    counts = {}
    for family in ("pa_attn", "pa_ffn", "prefix", "mh_pa", "lora_attn", "lora_ffn"):
        report = paper_budget("representation", f"{family}_{tier}")
        assert abs(report["paper_share"] - target) <= tolerance, (family, tier, report["paper_share"])
        counts[family] = report["paper"]
    equal = {f for f, n in counts.items() if n == counts["pa_ffn"]}
    assert equal == set(counts) - ({"lora_ffn"} if tier == "small" else set())


@pytest.mark.parametrize(("experiment", "counts"), [
    ("insertion", {294_912, 4_718_592}),  # r=16 and r=256, the same for all four adapters of one r
    ("composition", {294_912}),  # prefix l=16 = PA r=16 = LoRA r=8 on W_q, W_v: 0.238%
    ("mam_ablation", {589_824}),  # MAM's 0.475%, each ablation included
])  # fmt: skip
def test_ablations_compare_equal_budgets(experiment: str, counts: set[int]) -> None:
    assert {report["paper"] for report in composed_cells(f"{experiment}_paper").values()} == counts


def test_bottleneck_budgets_follow_the_paper_formulas() -> None:
    """Appendix B on roberta-base (d=768, L=12): adapter and prefix 2·r·d per layer, LoRA on W_q, W_v 4·r·d."""
    per_r = {"pa": 2 * 768 * 12, "prefix": 2 * 768 * 12, "lora": 4 * 768 * 12}
    for cell, report in composed_cells("bottleneck_paper").items():
        arm = next(o for o in cell if o.startswith("experiment/arm/")).split("=", 1)[1]
        method, size = re.fullmatch(r"(pa|lora|prefix)_[rl](\d+)", arm).groups()
        assert report["paper"] == per_r[method] * int(size), arm


def test_planned_jobs_are_the_grid() -> None:
    """`planned_jobs` (the runs FINDINGS.md counts as planned) expands each experiment to its grid size; a
    command-line key narrows it as in Hydra."""
    from peftbench.run.sweep import planned_jobs

    for name in NAMES:
        assert len(planned_jobs(["-m", f"+experiment={name}"])) == runs(name), name
    narrowed = planned_jobs(["-m", "+experiment=table2_cpu", "task=sst2", "train.lr_scale=1"])
    assert len(narrowed) == 6 * 3 and all("task=sst2" in job for job in narrowed)


def test_planned_keys_are_the_keys_runs_record() -> None:
    """`planned_keys` composes a grid once per combination of its non-leaf keys and sets seed and lr_scale on a
    copy: the same keys as composing every job, and the keys the committed records of a finished grid carry."""
    from peftbench.analysis.records import load_records
    from peftbench.run.config import as_plain, compose
    from peftbench.run.record import run_key
    from peftbench.run.sweep import planned_jobs, planned_keys

    argv = ["-m", "+experiment=composition_cpu"]
    keys, jobs = planned_keys(argv), planned_jobs(argv)
    assert len(keys) == len(set(keys)) == len(jobs) == 63
    for i in (0, 1, 2, 20, 40, 62):  # seeds and lr scales of several arms
        assert keys[i] == run_key(as_plain(compose(jobs[i])), "no"), jobs[i]
    insertion = planned_keys(["-m", "+experiment=insertion_cpu"])
    df, _ = load_records([Path(__file__).resolve().parent.parent / "results" / "insertion_cpu"])
    assert set(insertion) <= set(df.loc[df["status"] == "completed", "run_key"])  # its grid is complete (72 jobs)


def _arm_budgets(experiment: str) -> dict[str, int]:
    return {next(o for o in cell if o.startswith("experiment/arm/")).split("=", 1)[1]: report["paper"]
            for cell, report in composed_cells(f"{experiment}_paper").items()}


def test_prompt_family_ablation_budgets() -> None:
    """Issue 11's ablations on roberta-base (d=768, L=12): a prefix 2·l·d per layer, input vectors l·d; P-tuning v2
    2·l·d per prompted layer; SmolLM2 (30 layers, 3 kv heads of 64) 2·l·d_kv per layer. Word init, infix, the
    LSTM encoder and the reparameterisation change no stored count."""
    d, layers = 768, 12
    assert _arm_budgets("prefix_ablation") == {
        "prefix_l4": 2 * 4 * d * layers, "prefix_l16": 2 * 16 * d * layers, "prefix_l64": 2 * 64 * d * layers,
        "prefix_words": 2 * 16 * d * layers, "prefix_embed": 16 * d, "prefix_infix": 16 * d}
    assert _arm_budgets("prompt_ablation") == {
        "prompt_l1": d, "prompt_l5": 5 * d, "prompt_l20": 20 * d, "prompt_l100": 100 * d,
        "prompt_uniform": 20 * d, "prompt_labels": 20 * d, "prompt_lstm": 20 * d}
    assert _arm_budgets("ptuning_v2_ablation") == {
        "ptv2": 2 * 20 * d * layers, "ptv2_mlp": 2 * 20 * d * layers, "ptv2_top3": 2 * 20 * d * 3,
        "ptv2_bottom3": 2 * 20 * d * 3, "smollm2_linear": 30 * 2 * 20 * 192, "smollm2_verbalizer": 30 * 2 * 20 * 192}


def test_modern_budgets_follow_the_formulas() -> None:
    """Issue 29 on roberta-base (d=768, L=12): LoRA-family r=8 on W_q, W_v 4·r·d·L (DoRA + 2·d·L magnitudes), VeRA
    2·(r + d)·L, IA3 (d + d + 4d)·L; the high-rank pair r=64."""
    d, layers, lora = 768, 12, 4 * 8 * 768 * 12
    assert _arm_budgets("modern") == {
        "lora": lora, "loraplus": lora, "pissa": lora, "dora": lora + 2 * d * layers, "vera": 2 * (256 + d) * layers,
        "ia3": 6 * d * layers, "lora_r64": 8 * lora, "rslora_r64": 8 * lora}
    assert _arm_budgets("modern")["vera"] * 12 == lora  # VeRA at a twelfth of LoRA's budget
