"""The typed schema of every config group, registered with Hydra's ConfigStore, and the compose helpers.

Each YAML in ``conf/<group>/`` starts from its group's schema (``defaults: [base_<group>]``), so a typo in a YAML
or a command-line override is an error at composition that names the key; semantic checks (impossible
combinations) run in the specs' ``__post_init__`` when :func:`to_specs` builds them, before anything is loaded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from peftbench.models import ModelSpec
from peftbench.space import MethodSpec, SpecError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class TaskSpec:
    name: str = "sst2"
    max_length: int = 128


@dataclass
class DataSpec:
    source: str = "local"  # local | hub
    glue_dir: str | None = None  # local GLUE folder; default $PEFTBENCH_GLUE_DIR, then ../shared/glue
    max_train_samples: int | None = None  # subsample train (None = all); deterministic per seed
    max_eval_samples: int | None = None  # smoke tests only: None = the full dev set (what is reported)
    held_out: float = 0.1  # model selection split held out of train: a fraction, or a count if > 1
    select_on: str = "held_out"  # held_out | none (keep the last epoch)
    cache_dir: str | None = None  # tokenised datasets; default ~/.cache/peftbench/tokenized


@dataclass
class TrainSpec:
    epochs: int = 2
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float | None = None  # None: the method preset's learning rate
    weight_decay: float = 0.1
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-6
    mixed_precision: str = "auto"  # auto (bf16 on a GPU that has it, else fp32) | no | bf16 | fp16
    cpu: bool = False  # force the CPU even where a GPU exists
    threads: int | None = None  # torch CPU threads (None: torch's default)
    log_every: int = 10
    progress: bool = True


@dataclass
class LoggerSpec:
    wandb: bool = False
    project: str = "peftbench"
    entity: str | None = None
    mode: str = "offline"  # online | offline | disabled
    group: str | None = None  # None: sweep/method/task


@dataclass
class RunConfig:
    method: MethodSpec = field(default_factory=MethodSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    task: TaskSpec = field(default_factory=TaskSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    logger: LoggerSpec = field(default_factory=LoggerSpec)
    seed: int = 0
    sweep: str | None = None  # a name grouping runs (W&B group, report); None: the Hydra sweep dir
    resume: bool = True  # skip a run whose completed record (same run key) exists under results_root
    results_root: str = "multirun"


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    for group, node in (("method", MethodSpec), ("model", ModelSpec), ("task", TaskSpec), ("data", DataSpec),
                        ("train", TrainSpec), ("logger", LoggerSpec)):
        cs.store(group=group, name=f"base_{group}", node=node)


register_schemas()


def compose(overrides: list[str] | tuple[str, ...] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/config.yaml`` with command-line style overrides (what ``python -m peftbench`` sees)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def to_specs(cfg: DictConfig) -> RunConfig:
    """Build the typed, validated specs from a composed config (raises SpecError on impossible combinations)."""
    for slot, module in cfg.method.modules.items():  # validate each module under its full name first
        try:
            OmegaConf.to_object(module)
        except SpecError as err:
            raise SpecError(str(err).replace("module", f"method.modules.{slot}", 1)) from None
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def one_line_error(err: BaseException) -> str:
    """One line from Hydra/OmegaConf errors, which span lines and chain causes (the key, the valid options)."""
    parts: list[str] = []
    seen: BaseException | None = err
    while seen is not None and len(parts) < 3:
        text = str(seen)
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        first = lines[0] if lines else type(seen).__name__
        if "Available options" in text:
            block = text.split("Available options", 1)[1].split("Config search path", 1)[0]
            options = [o.strip() for o in block.splitlines()[1:] if o.strip() and not o.strip().startswith("base_")]
            first = f"{first}; valid: {', '.join(options)}"
        first = first.removeprefix("In 'config': ").rstrip(".")
        if not any(first in p for p in parts) and "$VALUE" not in first:
            parts.append(first)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return "; ".join(parts)


def fail(message: str, code: int = 2) -> None:
    print(f"peftbench: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def as_plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
