"""One benchmark run: data → model → method → train (accelerate) → select on held-out train → score the full dev set.

Setup, train and evaluate are separate functions; :func:`run` ties them together and always returns a record
(``status: failed`` with the error when anything goes wrong, see ``peftbench.run.record``).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from peftbench.run import checkpoint as ckpt
from peftbench.run.batching import length_sorted_order, row_lengths, train_sampler
from peftbench.run.config import RunConfig
from peftbench.run.data import (
    get_task,
    load_glue,
    make_collator,
    pick_source,
    split_for_selection,
    subsample,
    tokenize_glue,
)
from peftbench.run.latency import inference_cost
from peftbench.run.metrics import compute_glue_metrics
from peftbench.run.models import load_model, load_tokenizer, model_config
from peftbench.space.arch import arch_for
from peftbench.space.inject import MethodReport, apply_method, export_reparameterisations, head_modules
from peftbench.space.prefix import PrefixEncoder, PrefixHeads
from peftbench.space.prompts import PromptInserter

#: what a record can promise about a rerun with the same seed, by device and precision (README, "Long sweeps")
DETERMINISM = {
    ("cpu", "no"): "bitwise, fp32: the same command and seed give the same metrics and loss history (tested on "
                   "CPU); fp32 records reproduced exactly on both of this project's CPU kinds (AVX2 and AMX)",
    ("cpu", "bf16"): "bitwise on one kind of CPU, bf16 autocast: the same command and seed give the same metrics "
                     "on the same CPU kind; a CPU of the other kind (native AMX/AVX512-BF16 vs emulated on AVX2) "
                     "computes bf16 differently and may give different numbers",
    "gpu": "not bitwise: cuBLAS and atomic-add kernels may reorder float sums between runs; expect differences "
           "in the last digits of losses and occasionally of metrics",
}


def determinism(device_type: str, precision: str) -> str:
    """The record's ``determinism``: what a rerun with the same seed gives on this device at this precision."""
    if device_type != "cpu":
        return f"{DETERMINISM['gpu']} (precision {'fp32' if precision == 'no' else precision})"
    return DETERMINISM.get(("cpu", precision), DETERMINISM[("cpu", "bf16")].replace("bf16", precision))


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class NonFiniteOutput(RuntimeError):
    """The model's logits or a metric on an evaluation split are NaN or infinite: the run did not finish."""


class ConstantPredictions(NonFiniteOutput):
    """The model gave every row the same prediction, so a correlation metric (Pearson, MCC) is undefined.

    On the held-out split at the end of an epoch this makes that epoch unselectable (a later one may learn); on
    the reported split, or at every epoch, the run fails: it collapsed.
    """


@dataclass
class Prepared:
    model: torch.nn.Module
    report: MethodReport
    train: Any
    select: Any | None
    evals: dict[str, Any]
    collator: Any
    setup_s: float
    data_source: str = "local"  # where the data came from (data.source=auto resolves to local or hub)
    load_base: Any = None  # () -> the base model without the method (the inference-cost reference)


def prepare(cfg: RunConfig) -> Prepared:
    """Tokenised splits (cached per task and tokenizer, so a sweep tokenises once) and the adapted model."""
    start = time.perf_counter()
    info = get_task(cfg.task.name)
    tokenizer = load_tokenizer(cfg.model)
    template = None
    if cfg.method.head == "verbalizer":
        template = verbalizer_template(cfg, tokenizer)
    source = cfg.data.source
    if source == "auto":
        source = pick_source(info.name, cfg.data.glue_dir)[0]
    splits = load_glue(info.name, cfg.data.source, cfg.data.glue_dir)
    tokenized = tokenize_glue(splits, tokenizer, info.name, cfg.task.max_length, cfg.data.cache_dir, template)
    train = subsample(tokenized["train"], cfg.data.max_train_samples, cfg.seed)
    select = None
    if cfg.data.select_on == "held_out":
        held_out = cfg.data.held_out
        train, select = split_for_selection(train, int(held_out) if held_out >= 1 else float(held_out), cfg.seed)
    elif cfg.data.select_on != "last":
        raise ValueError(f"data.select_on={cfg.data.select_on!r} is not valid; valid values: held_out, last")
    evals = {name: subsample(tokenized[name], cfg.data.max_eval_samples, 0) for name in info.eval_splits}

    set_seed(cfg.seed)  # the same seed gives the same added-module initialisation and data order
    model = load_model(cfg.model, num_labels=info.num_labels, verbalizer=template)
    report = apply_method(model, cfg.method, tokenizer)
    if cfg.task.head_bias == "label_mean":
        set_output_bias(model, float(np.mean(train["labels"])))

    def load_base() -> torch.nn.Module:
        return load_model(cfg.model, num_labels=info.num_labels, verbalizer=template)

    return Prepared(model, report, train, select, evals, make_collator(tokenizer), time.perf_counter() - start,
                    source, load_base)


def set_output_bias(model: torch.nn.Module, value: float) -> None:
    """Start a regression head's output at `value` (``task.head_bias=label_mean``): its last Linear with one output."""
    outputs = [m for head in head_modules(model, arch_for(model)) for m in head.modules()
               if isinstance(m, torch.nn.Linear) and m.out_features == 1]
    if not outputs or outputs[-1].bias is None:
        raise ValueError(f"task.head_bias=label_mean: {type(model).__name__} has no regression output with a bias "
                         "to set; use task.head_bias=zero")
    with torch.no_grad():
        outputs[-1].bias.fill_(value)


def verbalizer_template(cfg: RunConfig, tokenizer):
    """The task's template resolved for this model's tokenizer (masked or causal LM by its architecture)."""
    from peftbench.space.verbalizer import check_template, lm_class, resolve_template

    info = get_task(cfg.task.name)
    check_template(info.name, cfg.task.template, cfg.task.label_words, info.text_fields, info.num_labels)
    arch, _ = lm_class(model_config(cfg.model, weights=False).model_type)
    return resolve_template(cfg.task.template, cfg.task.label_words, info.text_fields, tokenizer, arch.causal)


def _optimizer(model: torch.nn.Module, cfg: RunConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms (1-D), nor on prefixes and prompts with their encoders (the
    prefix MLP, P-tuning's LSTM): they produce inputs to the attention, not weights applied to it. Decay applies
    to every other matrix: LoRA and adapter projections, the head, all weights under full fine-tuning."""
    inputs = {id(p) for m in model.modules() if isinstance(m, PrefixEncoder | PrefixHeads | PromptInserter)
              for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or id(p) in inputs else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(cfg.train.adam_betas),
                             eps=cfg.train.adam_eps)


@dataclass
class EvalSplit:
    """An evaluation split batched from its longest to its shortest row; ``order`` maps batch rows to dataset rows."""

    name: str
    loader: Any
    order: np.ndarray


def eval_split(name: str, dataset, batch_size: int, collator) -> EvalSplit:
    order = length_sorted_order(row_lengths(dataset))
    loader = DataLoader(dataset.select(order), batch_size=batch_size, collate_fn=collator)
    return EvalSplit(name, loader, order)


@torch.no_grad()
def predict(model, split: EvalSplit, accelerator: Accelerator, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (class ids, or scores for a regression task) and references, in the dataset's row order.

    Non-finite logits raise :class:`NonFiniteOutput`: an argmax over NaN would pass for a prediction.
    """
    model.eval()
    preds, refs = [], []
    for batch in split.loader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        logits, labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        preds.append(logits.float().cpu())
        refs.append(labels.cpu())
    logits = torch.cat(preds)
    bad = int((~torch.isfinite(logits)).any(-1).sum())
    if bad:
        raise NonFiniteOutput(f"{bad} of {len(logits)} rows of {split.name} have non-finite logits; "
                              f"the model diverged (try a smaller train.lr, or train.mixed_precision=no)")
    predictions = logits.squeeze(-1) if get_task(task).is_regression else logits.argmax(-1)
    in_order = np.empty(len(split.order), dtype=predictions.numpy().dtype)
    references = np.empty(len(split.order), dtype=torch.cat(refs).numpy().dtype)
    in_order[split.order], references[split.order] = predictions.numpy(), torch.cat(refs).numpy()
    return in_order, references


def score(task: str, predictions: np.ndarray, references: np.ndarray, split: str) -> dict[str, float]:
    """The GLUE metrics; a non-finite one (e.g. Pearson of constant predictions) raises NonFiniteOutput."""
    metrics = compute_glue_metrics(task, predictions, references)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        message = f"metric(s) {', '.join(bad)} on {split} are not finite: {metrics}"
        if len(predictions) and np.ptp(predictions) == 0:  # what a collapsed run does: Pearson/MCC are undefined for one constant
            raise ConstantPredictions(f"{message} (the model predicts {predictions.flat[0]:g} for all "
                                      f"{len(predictions)} rows: a collapsed run; try a smaller train.lr)")
        raise NonFiniteOutput(message)
    return metrics


def evaluate_split(model, split: EvalSplit, accelerator: Accelerator, task: str) -> dict[str, float]:
    return score(task, *predict(model, split, accelerator, task), split.name)


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX-BF16 or AVX512-BF16); elsewhere torch emulates bf16 at a
    fraction of fp32's speed (measured 16× slower than fp32 on an AVX2-only EPYC), so autocast would not pay."""
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(probe is not None and probe() for probe in probes)


def resolve_mixed_precision(setting: str, force_cpu: bool = False) -> str:
    """``auto``: bf16 autocast where the device computes bf16 natively (a bf16 GPU, an AMX/AVX512-BF16 CPU),
    fp32 (``no``) otherwise; any other setting is kept as given."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and not force_cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_supports_bf16() else "no"


def fp32_regression_head(model: torch.nn.Module, task: str) -> bool:
    """Run a regression task's head outside autocast, so that its predictions are fp32.

    Under bf16 autocast the head's last Linear rounds each prediction to bf16's 8 significant bits: steps of 1/64 at
    2–4 on STS-B's 0–5 scale. A well-trained model hardly notices (LoRA: ~420 distinct values over STS-B's 1,500 dev
    rows), but a weakly trained one predicts a handful of values (prefix, lr 5e-4: 5–8) whose Pearson is computed
    on ties, and a near-constant one predicts one value, whose Pearson is undefined. The head is the pooler and
    classifier (a d×d and a d×1 product per example), so fp32 costs nothing measurable. Classification heads keep
    autocast: an argmax is changed by bf16 rounding only at near-ties. Returns whether a head was changed."""
    if not get_task(task).is_regression:
        return False
    heads = head_modules(model, arch_for(model))  # an unmapped architecture was refused before training
    for head in heads:
        forward = head.forward

        def in_fp32(*args, _forward=forward, **kwargs):
            device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
            with torch.autocast(device_type=device, enabled=False):
                return _forward(*(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args),
                                **kwargs)

        head.forward = in_fp32  # an instance attribute: the parameters' names and the state dict do not change
    return bool(heads)


def effective_lr(cfg: RunConfig) -> float:
    """The peak learning rate of a run: ``train.lr`` (else the method preset's) × ``train.lr_scale``."""
    return (cfg.train.lr or cfg.method.lr) * cfg.train.lr_scale


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak lr over ``warmup`` steps, then linear decay to 0 at ``total``.

    The same schedule as ``transformers.get_linear_schedule_with_warmup`` (checked in the tests), written on
    torch's ``LambdaLR`` because importing ``transformers.optimization`` pulls in ``trainer_utils`` and, through
    it, ``peft``, which a run never uses (~0.3 s of every sweep's start-up).
    """

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_and_evaluate(cfg: RunConfig, prep: Prepared, tracker=None, checkpoint: Path | None = None) -> dict[str, Any]:
    """Train, keep the best epoch on the selection split, and score every evaluation split of the dev set.

    With `checkpoint`, the training state is saved there at every epoch end and when SIGTERM asks the run to stop
    (then :class:`~peftbench.run.checkpoint.RunInterrupted` is raised), and a run finding one there continues from it
    (`peftbench.run.checkpoint`)."""
    with PeakMemory() as memory:
        result = _train_and_evaluate(cfg, prep, tracker, checkpoint)
    result["peak_mem_mb"] = memory.mib
    return result


def _train_and_evaluate(cfg: RunConfig, prep: Prepared, tracker=None, checkpoint: Path | None = None) -> dict[str, Any]:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    # On a machine without an accelerator, cpu=True also lets `accelerate launch` / torchrun run data-parallel
    # processes on the CPU (gloo); accelerate sets that up only when told the CPU is the device.
    cpu = cfg.train.cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available())
    # The scheduler steps once per optimizer step, counted over this process's batches, so that N processes of
    # batch b follow the schedule of one process of batch N·b (accelerate would otherwise step it N times).
    accelerator = Accelerator(cpu=cpu, step_scheduler_with_optimizer=False,
                              mixed_precision=resolve_mixed_precision(cfg.train.mixed_precision, cfg.train.cpu))
    task, lr = cfg.task.name, effective_lr(cfg)
    sampler = train_sampler(row_lengths(prep.train), cfg.train.batch_size, cfg.seed, cfg.train.group_by_length)
    train_dl = DataLoader(prep.train, batch_size=cfg.train.batch_size, sampler=sampler, collate_fn=prep.collator,
                          generator=sampler.generator)  # as DataLoader(shuffle=True, generator=...) before
    select = (eval_split("held_out", prep.select, cfg.train.eval_batch_size, prep.collator)
              if prep.select is not None else None)
    evals = [eval_split(name, ds, cfg.train.eval_batch_size, prep.collator) for name, ds in prep.evals.items()]
    fp32_head = accelerator.mixed_precision != "no" and fp32_regression_head(prep.model, task)
    optimizer = _optimizer(prep.model, cfg, lr)
    total = cfg.train.epochs * math.ceil(len(prep.train) / (cfg.train.batch_size * accelerator.num_processes))
    scheduler = linear_warmup_decay(optimizer, int(cfg.train.warmup_ratio * total), total)
    model, optimizer, train_dl, scheduler = accelerator.prepare(prep.model, optimizer, train_dl, scheduler)
    for split in ([select] if select is not None else []) + evals:
        split.loader = accelerator.prepare(split.loader)
    trainable = [p for p in model.parameters() if p.requires_grad]
    gates = GateMonitor(model)

    main = get_task(task).main_metric
    history, best, best_state, step, seen, train_time = [], -math.inf, None, 0, 0, 0.0
    tokens = {"real": 0, "padded": 0}
    start_epoch, skip, loss_sum, n_batches = 1, 0, 0.0, 0
    resumed = ckpt.load(checkpoint, f"{cfg.method.name}/{task}/seed {cfg.seed}")
    named = dict(model.named_parameters())
    if resumed is not None:
        with torch.no_grad():
            for name, value in resumed["trainable"].items():
                named[name].copy_(value)
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        history, best, best_state = resumed["history"], resumed["best"], resumed["best_state"]
        step, seen, train_time, tokens = resumed["step"], resumed["seen"], resumed["train_time"], resumed["tokens"]
        start_epoch, skip, loss_sum, n_batches = resumed["epoch"], resumed["batch"], resumed["loss_sum"], resumed["batch"]
        sampler.generator.set_state(resumed["epoch_generator"])

    def state(epoch: int, batch: int, epoch_generator: torch.Tensor) -> dict[str, Any]:
        """What `peftbench.run.checkpoint` saves: the run stands before batch `batch` of epoch `epoch`."""
        return {"epoch": epoch, "batch": batch, "epoch_generator": epoch_generator, "rng": ckpt.rng_states(),
                "trainable": {n: p.detach().cpu().clone() for n, p in named.items() if p.requires_grad},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": history,
                "best": best, "best_state": best_state, "step": step, "seen": seen, "train_time": train_time,
                "tokens": dict(tokens), "loss_sum": loss_sum if batch else 0.0}  # fmt: skip

    bar = tqdm(total=total, initial=step, desc=f"{cfg.method.name}/{task}",
               disable=not (cfg.train.progress and accelerator.is_main_process), unit="step")  # fmt: skip
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        model.train()
        epoch_generator = sampler.generator.get_state()  # the epoch's order is drawn from here
        epoch_start = time.perf_counter()
        if epoch > start_epoch or resumed is None:
            loss_sum, n_batches = 0.0, 0
        restore_rng = resumed is not None and epoch == start_epoch
        for i, batch in enumerate(train_dl):
            if epoch == start_epoch and i < skip:  # a resumed epoch: these batches were trained before the stop
                continue
            if restore_rng:
                ckpt.set_rng_states(resumed["rng"])  # dropout continues from where it stopped
                restore_rng = False
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch} step {step + 1} (lr {lr:g}); "
                                       f"try a smaller train.lr")
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, seen, n_batches = step + 1, seen + len(batch["labels"]), n_batches + 1
            mask = batch["attention_mask"]
            tokens["padded"], tokens["real"] = tokens["padded"] + mask.numel(), tokens["real"] + int(mask.sum())
            loss_value = loss.item()
            loss_sum += loss_value
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == total:
                rate = seen / (train_time + time.perf_counter() - epoch_start)
                bar.set_postfix(loss=f"{loss_value:.4f}", ex_s=f"{rate:.1f}")
                if tracker is not None:
                    tracker.log({"train/loss": loss_value, "train/lr": scheduler.get_last_lr()[0],
                                 "train/examples_per_s": rate}, step=step)
            if ckpt.STOP:
                bar.close()
                where = "no checkpoint (train.checkpoint=false): a rerun starts over"
                if checkpoint is not None:
                    train_time += time.perf_counter() - epoch_start
                    if accelerator.is_main_process:
                        ckpt.save(checkpoint, state(epoch, i + 1, epoch_generator))
                    where = f"checkpoint {checkpoint}: rerun the same command to resume"
                raise ckpt.RunInterrupted(f"stopped by SIGTERM at epoch {epoch}, step {step} of {total}; {where}")
        if restore_rng:  # stopped after the epoch's last batch
            ckpt.set_rng_states(resumed["rng"])
        train_time += time.perf_counter() - epoch_start
        entry: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(n_batches, 1),
                                 "lr": scheduler.get_last_lr()[0]}
        if select is not None:
            with gates.tracking() as lambdas:
                try:
                    entry["select"] = evaluate_split(model, select, accelerator, task)
                except ConstantPredictions as err:  # this epoch cannot be chosen; a later one may have learned
                    entry["select_error"] = str(err)
            if lambdas:
                entry["gate_lambda"] = lambdas
            if "select" in entry and entry["select"][main] > best:
                best = entry["select"][main]
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                entry["best"] = True
        history.append(entry)
        if tracker is not None:
            logged = {f"select/{k}": v for k, v in entry.get("select", {}).items()} | {"epoch": epoch}
            logged |= {f"select/gate_lambda/layer_{i}": v for i, v in enumerate(entry.get("gate_lambda", []))}
            tracker.log(logged, step=step)
        if checkpoint is not None and epoch < cfg.train.epochs and accelerator.is_main_process:
            ckpt.save(checkpoint, state(epoch + 1, 0, sampler.generator.get_state()))
    bar.close()
    if select is not None and best_state is None and history and "select_error" in history[-1]:
        raise ConstantPredictions(f"no epoch can be chosen: at every epoch (1-{cfg.train.epochs}) "
                                  + history[-1]["select_error"])

    if best_state is not None:  # restore the epoch chosen on the held-out split
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in best_state.items():
                params[name].copy_(value)
    best_epoch = next((h["epoch"] for h in reversed(history) if h.get("best")), cfg.train.epochs)
    # Score what would be stored: the prefix/prompt vectors, not the MLP or LSTM that produced them.
    export_reparameterisations(accelerator.unwrap_model(model))

    eval_start = time.perf_counter()
    metrics: dict[str, float] = {}
    predictions: dict[str, dict[str, list]] = {}
    gate_lambda: dict[str, list[float]] = {}
    for split in evals:
        suffix = "_mm" if split.name.endswith("mismatched") else ""
        with gates.tracking() as lambdas:
            preds, refs = predict(model, split, accelerator, task)
        metrics.update({f"{k}{suffix}": v for k, v in score(task, preds, refs, split.name).items()})
        predictions[split.name] = {"predictions": _plain(preds), "references": _plain(refs)}
        if lambdas:
            gate_lambda[split.name] = lambdas
    eval_time = time.perf_counter() - eval_start
    inference = None
    if accelerator.num_processes == 1 and prep.load_base is not None and evals:
        def load_base():  # the base model as the run computes: its regression head in fp32 too
            base = prep.load_base()
            if fp32_head:
                fp32_regression_head(base, task)
            return base

        inference = inference_cost(accelerator.unwrap_model(model), load_base, evals[0].loader,
                                   cfg.train.inference_batches, accelerator.autocast, accelerator.device)
    return {
        "metrics": metrics,
        "score": metrics[main],
        "metric": main,
        "history": history,
        "best_epoch": best_epoch,
        "lr": lr,
        "steps": step,
        "train_examples": len(prep.train),
        # `seen` and `tokens` count this process's share of a data-parallel run (num_processes shares)
        "throughput": {"train_examples_per_s": seen * accelerator.num_processes / train_time if train_time else None,
                       "train_time_s": train_time, "eval_time_s": eval_time,
                       "setup_time_s": prep.setup_s, "real_tokens": tokens["real"],
                       "padded_tokens": tokens["padded"],
                       "padding_ratio": tokens["padded"] / tokens["real"] if tokens["real"] else None},
        "data_source": prep.data_source,
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        "determinism": determinism(accelerator.device.type, accelerator.mixed_precision),
        "mixed_precision": accelerator.mixed_precision,
        "head_precision": "fp32" if fp32_head else accelerator.mixed_precision,
        "gate_lambda": gate_lambda or None,
        "inference": inference,
        "predictions": predictions,
    }


def _plain(values: np.ndarray) -> list:
    """Per-example predictions as JSON numbers: class ids as ints, regression scores to 7 significant digits
    (fixed decimals would flatten a near-constant output and change its Pearson correlation)."""
    if np.issubdtype(values.dtype, np.floating):
        return [float(f"{v:.7g}") for v in values]
    return [int(v) for v in values]


class GateMonitor:
    """The mean prefix gate λ(x) per layer over an evaluation split, for every gated prefix of a model.

    λ near 1 means the layer attends almost only to its prefix — the signature of a collapsed prefix run.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.heads = [m for m in model.modules() if isinstance(m, PrefixHeads) and m.gate]

    @contextlib.contextmanager
    def tracking(self) -> Iterator[list[float]]:
        """Yields a list that holds each gated layer's mean λ (bottom layer first) once the block ends."""
        out: list[float] = []
        for head in self.heads:
            head.start_gate_tracking()
        try:
            yield out
        finally:
            out.extend(head.stop_gate_tracking() for head in self.heads)


class PeakMemory:
    """This run's peak memory in MiB: CUDA's allocator peak on a GPU; on the CPU the process's resident set,
    sampled by a thread (ru_maxrss would carry earlier runs of a multirun process)."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s, self.peak, self._stop = interval_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def mib(self) -> float:
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
        return self.peak / 2**20
