"""The typed schema of every config group, registered with Hydra's ConfigStore, and the compose helpers.

Each YAML in ``conf/<group>/`` starts from its group's schema (``defaults: [base_<group>]``), so a typo in a YAML
or a command-line override is an error at composition that names the key; semantic checks (value ranges,
impossible combinations) run in the specs' ``__post_init__`` when :func:`to_specs` builds them, which also
checks layer selections against the model's depth where its config is at hand, before anything is loaded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, read_write

from peftbench.run import messages
from peftbench.run.messages import closest, fail  # noqa: F401 (fail: the commands import it from here)
from peftbench.run.models import ModelSpec, model_config, resolve_source
from peftbench.space.presets import CONF_DIR
from peftbench.space.spec import MethodSpec, ModuleSpec, PromptSpec, SpecError, parse_layers

MIN_MAX_LENGTH = 8  # room for the special tokens and a few of each segment's tokens
SELECT_ON = ("held_out", "last")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
#: what ``save`` may ask a run to leave beside its record (`peftbench.run.artefacts`)
SAVE_MODES = ("auto", "none", "modules", "full")
#: The config group (registered below, no YAML) that creates the new slot of ``+method.modules.<slot>.*``.
NEW_SLOT_GROUP = "method_slot"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SpecError(message)


def _positive(key: str, value: float | None, optional: bool = False) -> None:
    """``value`` > 0 and finite (or null where ``optional``)."""
    if value is None and optional:
        return
    _require(value is not None and math.isfinite(value) and value > 0,
             f"{key}={value} must be > 0{' (or null)' if optional else ''}")


HEAD_BIASES = ("zero", "label_mean")


@dataclass
class TaskSpec:
    name: str = "sst2"
    max_length: int = 128
    # The verbalizer head (method.head=verbalizer) writes each example into ``template``, e.g.
    # "{sentence} It was {mask}.", and scores ``label_words`` (one per label, in label order) at {mask}.
    template: str | None = None
    label_words: list[str] = field(default_factory=list)
    # A regression head's output bias at the start: zero (transformers' init) | label_mean (the mean label of the
    # training split, never dev). conf/task/stsb.yaml takes label_mean: from zero, prefix tuning and MAM spend
    # their first steps shifting every prediction to the mean through the prefix and never learn more (FINDINGS.md).
    head_bias: str = "zero"

    def __post_init__(self) -> None:
        from peftbench.run.tasks import GLUE_TASKS  # lazily: datasets is slow to import

        _require(str(self.name).lower() in GLUE_TASKS,
                 f"task.name={self.name!r} is not a GLUE task; valid: {', '.join(GLUE_TASKS)}")
        _require(self.head_bias in HEAD_BIASES,
                 f"task.head_bias={self.head_bias!r} is not valid; valid: {', '.join(HEAD_BIASES)}")
        _require(self.head_bias == "zero" or GLUE_TASKS[str(self.name).lower()].is_regression,
                 f"task.head_bias={self.head_bias} sets a regression head's bias; {self.name} is a classification "
                 "task (valid: zero)")
        _require(self.max_length >= MIN_MAX_LENGTH,
                 f"task.max_length={self.max_length} must be >= {MIN_MAX_LENGTH} (tokens per example, "
                 "special tokens included)")


@dataclass
class DataSpec:
    source: str = "auto"  # auto (local when the folder has the task, else hub) | local | hub
    glue_dir: str | None = None  # local GLUE folder; default $PEFTBENCH_GLUE_DIR, then ../shared/glue
    max_train_samples: int | None = None  # subsample train (None = all); deterministic per seed
    max_eval_samples: int | None = None  # smoke tests only: None = the full dev set (what is reported)
    held_out: float = 0.1  # model selection split held out of train: a fraction in (0, 1), or a count >= 1
    select_on: str = "held_out"  # held_out | last (keep the last epoch)
    cache_dir: str | None = None  # tokenised datasets; default ~/.cache/peftbench/tokenized

    def __post_init__(self) -> None:
        from peftbench.run.data import SOURCES

        _require(self.source in SOURCES,
                 f"data.source={self.source!r} is not valid; valid: {', '.join(SOURCES)}")
        _require(self.select_on in SELECT_ON,
                 f"data.select_on={self.select_on!r} is not valid; valid: {', '.join(SELECT_ON)}")
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"data.{key}={value} must be >= 1 (or null: all examples)")
        held = self.held_out
        _require(math.isfinite(held) and (0 < held < 1 or (held >= 1 and float(held).is_integer())),
                 f"data.held_out={held} is not valid; valid: a fraction in (0, 1) or an integer count >= 1")


@dataclass
class TrainSpec:
    epochs: int = 2
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float | None = None  # None: the method preset's learning rate
    lr_scale: float = 1.0  # the lr used is (lr or the preset's) × lr_scale: one lr grid for methods of different lrs
    weight_decay: float = 0.1
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-6
    mixed_precision: str = "auto"  # auto (bf16 where the GPU or CPU computes it natively, else fp32) | no | bf16 | fp16
    group_by_length: bool = True  # length-grouped training batches (peftbench/run/batching.py); false: random
    cpu: bool = False  # force the CPU even where a GPU exists
    threads: int | None = None  # torch CPU threads (None: torch's default)
    log_every: int = 10
    progress: bool = True
    inference_batches: int = 0  # dev batches timed against the frozen base model (peftbench.run.latency); 0 = off
    # (off for an ad-hoc run, whose wall time it would double on a CPU; the experiment settings time 2)
    checkpoint: bool = True  # save the training state each epoch (and on SIGTERM) so a rerun resumes the run
    keep_checkpoint: bool = False  # keep it after the run completes (results_root/.checkpoints/<run_key>.pt)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            _require(getattr(self, key) >= 1, f"train.{key}={getattr(self, key)} must be >= 1")
        _require(self.inference_batches >= 0, f"train.inference_batches={self.inference_batches} must be >= 0")
        _require(self.threads is None or self.threads >= 1,
                 f"train.threads={self.threads} must be >= 1 (or null: torch's default)")
        _positive("train.lr", self.lr, optional=True)  # 0 would silently mean the preset's lr
        _positive("train.lr_scale", self.lr_scale)
        _positive("train.max_grad_norm", self.max_grad_norm)
        _positive("train.adam_eps", self.adam_eps)
        _require(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                 f"train.weight_decay={self.weight_decay} must be >= 0")
        _require(0 <= self.warmup_ratio < 1, f"train.warmup_ratio={self.warmup_ratio} must lie in [0, 1)")
        betas = list(self.adam_betas)
        _require(len(betas) == 2 and all(0 <= b < 1 for b in betas),
                 f"train.adam_betas={betas} must be two values in [0, 1), e.g. [0.9, 0.98]")
        _require(self.mixed_precision in MIXED_PRECISION, f"train.mixed_precision={self.mixed_precision!r} "
                 f"is not valid; valid: {', '.join(MIXED_PRECISION)}")


@dataclass
class LoggerSpec:
    wandb: bool = False
    project: str = "peftbench"
    entity: str | None = None
    mode: str = "offline"  # online | offline | disabled
    group: str | None = None  # None: the run's cell (peftbench.run.tracking.cell_group)
    dir: str = "."  # W&B's folders go to <dir>/wandb/, where `wandb sync` run from <dir> finds them


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
    save: str = "auto"  # what the run saves beside its record (peftbench.run.artefacts): auto | none | modules | full
    # The protocol (README "Tuning and evaluation seeds"): seeds below this value are tuning seeds (the report
    # chooses each cell's lr on their held-out split); seeds from it on are evaluation seeds, which never enter a
    # choice and give the reported dev score. Not part of the run key.
    evaluation_seeds_from: int = 100

    def __post_init__(self) -> None:
        _require(0 <= self.seed < 2**32, f"seed={self.seed} must lie in [0, 2**32)")
        _require(self.evaluation_seeds_from >= 1, f"evaluation_seeds_from={self.evaluation_seeds_from} must be "
                 ">= 1 (seeds below it tune the lr, seeds from it on are evaluated)")
        _require(self.save in SAVE_MODES, f"save={self.save!r} is not valid; valid: {', '.join(SAVE_MODES)}")


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    for group, node in (("method", MethodSpec), ("model", ModelSpec), ("task", TaskSpec), ("data", DataSpec),
                        ("train", TrainSpec), ("logger", LoggerSpec)):
        cs.store(group=group, name=f"base_{group}", node=node)
    # A module with every field missing: merged onto method.modules.<slot> it creates a new slot holding
    # ModuleSpec's defaults, and leaves an existing slot as it is (a missing value overrides nothing).
    slot = OmegaConf.structured(ModuleSpec)
    for spec_field in fields(ModuleSpec):
        slot[spec_field.name] = MISSING
    cs.store(group=NEW_SLOT_GROUP, name="new", node=slot)


register_schemas()

_SLOT_OVERRIDE = re.compile(r"\+{1,2}method\.modules\.(\w+)[.=]")


def add_new_slots(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """Make ``+method.modules.<slot>.<field>=v`` add a module slot (ModuleSpec's defaults for other fields).

    OmegaConf cannot create a typed ``ModuleSpec`` node from the plain dict that ``+`` makes for a new key, so
    each such slot is first created by the config group ``+method_slot@method.modules.<slot>=new`` and its
    overrides then set fields of an existing node (the ``+`` dropped).
    """
    out, created = [], {o for o in overrides if o.lstrip("+").startswith(f"{NEW_SLOT_GROUP}@")}
    for override in overrides:
        match = _SLOT_OVERRIDE.match(override)
        if match is None:
            out.append(override)
            continue
        create = f"+{NEW_SLOT_GROUP}@method.modules.{match[1]}=new"
        if create not in created:
            out.append(create)
            created.add(create)
        out.append(override.lstrip("+"))
    return out


def compose(overrides: list[str] | tuple[str, ...] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/config.yaml`` with command-line style overrides (what ``python -m peftbench`` sees)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides, hydra = add_new_slots(overrides), return_hydra_config
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=hydra)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def name_model_from_path(cfg: DictConfig) -> None:
    """A model given by path under a preset's name (``model.pretrained=<dir>`` with ``model=minilm``, the default)
    is other weights: in place, it is named after the path's last folder and loses the preset's ``hub_id``, so that
    the record, the report and W&B do not call it ``minilm``. A model named on the command line keeps its name."""
    model = cfg.get("model")
    preset = CONF_DIR / "model" / f"{model.get('name') if model is not None else ''}.yaml"
    if model is None or not model.get("pretrained") or not preset.is_file():
        return
    own = OmegaConf.load(preset).get("pretrained")
    if str(model.pretrained) == str(own) or (own and resolve_source(str(model.pretrained)) == resolve_source(own)):
        return  # the preset's own weights, however written
    folder = Path(str(model.pretrained).removeprefix("pkg:").rstrip("/")).name
    with read_write(model):
        model.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder) or model.name
        model.hub_id = None


def to_specs(cfg: DictConfig) -> RunConfig:
    """Build the typed, validated specs from a composed config (raises SpecError on impossible combinations); a
    model given by path is named in `cfg` first (`name_model_from_path`)."""
    name_model_from_path(cfg)
    check_known_keys(cfg)
    for slot, module in cfg.method.modules.items():  # validate each module under its full name first
        try:
            OmegaConf.to_object(module)
        except SpecError as err:
            raise SpecError(str(err).replace("module", f"method.modules.{slot}", 1)) from None
    specs: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    check_layers(specs)
    check_lengths(specs)
    if specs.method.head == "verbalizer":
        check_verbalizer(specs)
    return specs


def check_known_keys(cfg: DictConfig, where: str = "") -> None:
    """Every key of a schema node is one of its schema's fields. Hydra's ``+key=v`` (and ``++``) adds a key even
    to a typed node, where nothing would read it (``+train.epoch=5`` trains the default epochs) and it would still
    change the run key; a new module slot (``+method.modules.<slot>.*``) is a new entry of a dict, not a field."""
    schema = OmegaConf.get_type(cfg)
    if is_dataclass(schema):
        valid = [f.name for f in fields(schema)]
        for key in cfg:
            if key in valid or (not where and key == "hydra"):
                continue
            name = f"{where}{key}"
            close = closest(str(key), valid)
            scope = f"valid keys of {where.rstrip('.')}" if where else "valid top-level keys"
            hint = f"; did you mean {where}{close[0]}?" if close else ""
            raise SpecError(f"unknown key {name!r}; {scope}: {', '.join(valid)}{hint} (a key added with + must be "
                            "a field of the schema)")
    for key in cfg:
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing() and key != "hydra":
            check_known_keys(child, f"{where}{key}.")


def check_verbalizer(specs: RunConfig) -> None:
    """The task has a template naming its fields and one label word per label; the model has an LM head mapping."""
    from peftbench.run.tasks import get_task
    from peftbench.space.verbalizer import check_template, has_lm_head, lm_class

    info = get_task(specs.task.name)
    check_template(info.name, specs.task.template, specs.task.label_words, info.text_fields, info.num_labels)
    model_type = specs.model.config.get("model_type")
    config = config_at_hand(specs.model) if model_type is None or not specs.model.random_init else None
    if model_type is None and config is not None:  # installed weights: their config is at hand
        model_type = config.model_type
    if model_type is not None:
        lm_class(model_type)
    architectures = getattr(config, "architectures", None) if not specs.model.random_init else None
    if architectures and not has_lm_head(architectures):  # what the weights were saved from says so
        raise SpecError(f"model {specs.model.name} has no pretrained LM head (its weights are "
                        f"{', '.join(architectures)}); head=verbalizer needs one (e.g. model=smollm2), "
                        "or use head=linear")


_CONFIGS: dict[str, Any] = {}


def config_at_hand(spec: ModelSpec, gguf: bool = True):
    """The model's transformers config where it is at hand without a download or its weights (the shape in its
    YAML, or the config of installed weights); None otherwise, or for a GGUF file when not `gguf` (its config is
    parsed from the whole file's header, ~10 s). Cached per model spec: a sweep composes many jobs."""
    source = resolve_source(spec.pretrained)
    if not (spec.config.get("model_type") or (source and Path(source).is_dir())):
        return None
    if spec.gguf_file and not gguf and not spec.config.get("model_type"):
        return None
    key = json.dumps(asdict(spec), sort_keys=True, default=str)
    if key not in _CONFIGS:
        try:
            _CONFIGS[key] = model_config(spec, weights=False)
        except Exception:  # an unusual config: what it sets is checked when the model is built
            _CONFIGS[key] = None
    return _CONFIGS[key]


def model_layers(spec: ModelSpec) -> int | None:
    """The model's number of layers where its config is at hand without a download (the shape in its YAML, or
    installed weights); None otherwise."""
    config = config_at_hand(spec)
    return getattr(config, "num_hidden_layers", None) if config is not None else None


def position_limit(spec: ModelSpec) -> tuple[int, str] | None:
    """The most tokens one input may have in this model, and why (its ``max_position_embeddings``, less
    RoBERTa's offset), for architectures with a table of learned positions; None where there is none (rotary
    positions: Llama) or the config is not at hand cheaply."""
    from peftbench.space.arch import ARCHITECTURES

    config = config_at_hand(spec, gguf=False)
    arch = ARCHITECTURES.get(getattr(config, "model_type", None))
    table = getattr(config, "max_position_embeddings", None)
    if arch is None or not arch.absolute_positions or not isinstance(table, int):
        return None
    if arch.positions_after_padding:  # RoBERTa numbers positions from pad_token_id + 1
        offset = (getattr(config, "pad_token_id", None) or 0) + 1
        return table - offset, (f"max_position_embeddings={table} less {config.model_type}'s offset of {offset}: "
                                f"positions start at pad_token_id + 1")
    return table, f"max_position_embeddings={table}"


def check_lengths(specs: RunConfig) -> None:
    """An input (``task.max_length`` tokens, plus the prompt's vectors where the method inserts one) fits the
    model's position table, where the model's config says how large it is: else every batch of long examples
    fails in the position embedding, at evaluation after a whole run of short training batches."""
    limit = position_limit(specs.model)
    if limit is None:
        return
    most, why = limit
    prompt = specs.method.prompt.length if specs.method.prompt is not None else 0
    if specs.task.max_length + prompt <= most:
        return
    if prompt:
        raise SpecError(f"task.max_length={specs.task.max_length} + method.prompt.length={prompt} = "
                        f"{specs.task.max_length + prompt} tokens per input, but model {specs.model.name} has "
                        f"{most} positions ({why}); valid: task.max_length + method.prompt.length <= {most}")
    raise SpecError(f"task.max_length={specs.task.max_length} tokens per input, but model {specs.model.name} has "
                    f"{most} positions ({why}); valid: task.max_length <= {most}")


def check_layers(specs: RunConfig) -> None:
    """Each module's layer selection fits the model's layers (where their number is known before loading)."""
    chosen = {slot: m.layers for slot, m in specs.method.modules.items() if str(m.layers).strip() != "all"}
    num_layers = model_layers(specs.model) if chosen else None
    if num_layers is None:
        return
    for slot, layers in chosen.items():
        try:
            parse_layers(layers, num_layers)
        except SpecError as err:
            message = str(err).replace("the model", f"model {specs.model.name}", 1)
            raise SpecError(f"method.modules.{slot}.{message}") from None


#: the schemas whose unknown keys `one_line_error` names with their valid fields
SCHEMAS = (RunConfig, TaskSpec, DataSpec, TrainSpec, LoggerSpec, ModelSpec, MethodSpec, ModuleSpec, PromptSpec)


def one_line_error(err: BaseException) -> str:
    """One line from a Hydra/OmegaConf error (`peftbench.run.messages.one_line_error` with the config's schemas)."""
    return messages.one_line_error(err, SCHEMAS)


def as_plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
