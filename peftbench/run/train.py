"""Training one run: AdamW on the method's parameters with a linear schedule, length-grouped batches, the best epoch
kept on the held-out split of train, then the dev splits scored and the inference cost measured.

`train_and_evaluate` is the whole of it, in named steps: `build_loop` (accelerator, batches, optimizer, schedule),
`resume` (from a checkpoint, if the run has one), per epoch `train_epoch` (`train_step` per batch, SIGTERM between
batches saves a checkpoint) and `end_epoch` (held-out selection, history, checkpoint), then `restore_best`, the dev
scores (`peftbench.run.evaluate.score_dev`) and the inference cost (`peftbench.run.latency`). The run's setup is
`peftbench.run.setup.prepare`; the job that calls both and writes the record is `peftbench.run.job`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from peftbench.run import checkpoint as ckpt
from peftbench.run.batching import row_lengths, train_sampler
from peftbench.run.config import RunConfig
from peftbench.run.evaluate import (
    ConstantPredictions,
    EvalSplit,
    GateMonitor,
    eval_split,
    evaluate_split,
    score_dev,
)
from peftbench.run.latency import inference_cost
from peftbench.run.precision import (
    accelerator_at,
    cpu_features,
    cpu_isa,
    determinism,
    fp32_regression_head,
    resolve_mixed_precision,
)
from peftbench.run.setup import Prepared
from peftbench.run.tasks import get_task
from peftbench.space.inject import export_reparameterisations
from peftbench.space.modules import Bottleneck
from peftbench.space.prefix import PrefixEncoder, PrefixHeads
from peftbench.space.prompts import PromptInserter


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _optimizer(model: torch.nn.Module, cfg: RunConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms (1-D), nor on prefixes and prompts with their encoders (the
    prefix MLP, P-tuning's LSTM): they produce inputs to the attention, not weights applied to it. Decay applies
    to every other matrix: LoRA and adapter projections, the head, all weights under full fine-tuning. With
    ``method.lr_ratio`` λ ≠ 1 (LoRA+), W_up and the 1-D parameters train at λ·lr."""
    inputs = {id(p) for m in model.modules() if isinstance(m, PrefixEncoder | PrefixHeads | PromptInserter)
              for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or id(p) in inputs else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    ratio = cfg.method.lr_ratio
    if ratio != 1.0:  # LoRA+: W_up (B) and, as peft's create_loraplus_optimizer, every 1-D parameter at ratio × lr
        ups = {id(m.up.weight) for m in model.modules() if isinstance(m, Bottleneck)}
        fast = [p for p in decay if id(p) in ups]
        groups = [{"params": [p for p in decay if id(p) not in ups], "weight_decay": cfg.train.weight_decay},
                  {"params": fast, "weight_decay": cfg.train.weight_decay, "lr": lr * ratio},
                  {"params": no_decay, "weight_decay": 0.0, "lr": lr * ratio}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(cfg.train.adam_betas),
                             eps=cfg.train.adam_eps)


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


@dataclass
class Loop:
    """The training objects of one run as `accelerate` prepared them, and the numbers the loop steps by."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: Any  # its generator draws each epoch's batch order
    train_dl: DataLoader
    select: EvalSplit | None  # the held-out split the best epoch is chosen on (None: data.select_on=last)
    evals: list[EvalSplit]  # the dev splits the run reports
    trainable: list[torch.nn.Parameter]
    gates: GateMonitor
    task: str
    main_metric: str
    lr: float
    total: int  # optimizer steps of the whole run
    fp32_head: bool  # a regression head kept in fp32 under autocast


@dataclass
class Progress:
    """Where training stands: what the loop carries from batch to batch, and what a checkpoint saves of it besides
    the parameters, the optimizer and the scheduler (`checkpoint_state`)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -math.inf  # the best held-out score so far
    best_state: dict[str, torch.Tensor] | None = None  # the trainable parameters at that epoch
    step: int = 0
    seen: int = 0
    train_time: float = 0.0
    tokens: dict[str, int] = field(default_factory=lambda: {"real": 0, "padded": 0})
    loss_sum: float = 0.0
    n_batches: int = 0
    start_epoch: int = 1
    skip: int = 0  # batches of `start_epoch` already trained before a stop
    resumed: dict[str, Any] | None = None  # the checkpoint this run continues from


def build_loop(cfg: RunConfig, prep: Prepared) -> Loop:
    """The accelerator, the length-grouped training batches, the evaluation splits, AdamW with its linear schedule,
    all prepared by `accelerate`."""
    # On a machine without an accelerator, cpu=True also lets `accelerate launch` / torchrun run data-parallel
    # processes on the CPU (gloo); accelerate sets that up only when told the CPU is the device.
    cpu = cfg.train.cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available())
    # The scheduler steps once per optimizer step, counted over this process's batches, so that N processes of
    # batch b follow the schedule of one process of batch N·b (accelerate would otherwise step it N times).
    accelerator = accelerator_at(resolve_mixed_precision(cfg.train.mixed_precision, cfg.train.cpu), cpu=cpu,
                                 step_scheduler_with_optimizer=False)  # a sweep's runs of two precisions, one process
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
    return Loop(accelerator, model, optimizer, scheduler, sampler, train_dl, select, evals, trainable,
                GateMonitor(model), task, get_task(task).main_metric, lr, total, fp32_head)


def resume(loop: Loop, checkpoint: Path | None, what: str) -> Progress:
    """The progress of a run starting afresh, or of one continuing from the checkpoint at `checkpoint` (the trainable
    parameters, optimizer, scheduler and data order restored; `peftbench.run.checkpoint`)."""
    resumed = ckpt.load(checkpoint, what)
    if resumed is None:
        return Progress()
    named = dict(loop.model.named_parameters())
    with torch.no_grad():
        for name, value in resumed["trainable"].items():
            named[name].copy_(value)
    loop.optimizer.load_state_dict(resumed["optimizer"])
    loop.scheduler.load_state_dict(resumed["scheduler"])
    progress = Progress(history=resumed["history"], best=resumed["best"], best_state=resumed["best_state"],
                        step=resumed["step"], seen=resumed["seen"], train_time=resumed["train_time"],
                        tokens=resumed["tokens"], loss_sum=resumed["loss_sum"], n_batches=resumed["batch"],
                        start_epoch=resumed["epoch"], skip=resumed["batch"], resumed=resumed)
    loop.sampler.generator.set_state(resumed["epoch_generator"])
    return progress


def checkpoint_state(loop: Loop, progress: Progress, epoch: int, batch: int,
                     epoch_generator: torch.Tensor) -> dict[str, Any]:
    """What `peftbench.run.checkpoint` saves: the run stands before batch `batch` of epoch `epoch`."""
    return {"epoch": epoch, "batch": batch, "epoch_generator": epoch_generator, "rng": ckpt.rng_states(),
            "trainable": {n: p.detach().cpu().clone() for n, p in loop.model.named_parameters() if p.requires_grad},
            "optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
            "history": progress.history, "best": progress.best, "best_state": progress.best_state,
            "step": progress.step, "seen": progress.seen, "train_time": progress.train_time,
            "tokens": dict(progress.tokens), "loss_sum": progress.loss_sum if batch else 0.0}  # fmt: skip


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
    loop = build_loop(cfg, prep)
    progress = resume(loop, checkpoint, f"{cfg.method.name}/{loop.task}/seed {cfg.seed}")
    bar = tqdm(total=loop.total, initial=progress.step, desc=f"{cfg.method.name}/{loop.task}",
               disable=not (cfg.train.progress and loop.accelerator.is_main_process), unit="step")  # fmt: skip
    for epoch in range(progress.start_epoch, cfg.train.epochs + 1):
        train_epoch(cfg, loop, progress, epoch, bar, tracker, checkpoint)
        end_epoch(cfg, loop, progress, epoch, tracker, checkpoint)
    bar.close()
    best_epoch = restore_best(cfg, loop, progress)
    # Score what would be stored: the prefix/prompt vectors, not the MLP or LSTM that produced them.
    export_reparameterisations(loop.accelerator.unwrap_model(loop.model))
    eval_start = time.perf_counter()
    metrics, predictions, gate_lambda = score_dev(loop.model, loop.evals, loop.accelerator, loop.task, loop.gates)
    eval_time = time.perf_counter() - eval_start
    return _result(loop, progress, prep, metrics, predictions, gate_lambda, best_epoch, eval_time,
                   _inference(cfg, loop, prep))


def train_epoch(cfg: RunConfig, loop: Loop, progress: Progress, epoch: int, bar, tracker,
                checkpoint: Path | None) -> None:
    """One pass over the training batches (of a resumed epoch, the batches not trained before the stop); SIGTERM
    between two batches saves the checkpoint and raises `RunInterrupted`."""
    loop.model.train()
    epoch_generator = loop.sampler.generator.get_state()  # the epoch's order is drawn from here
    epoch_start = time.perf_counter()
    resumed = progress.resumed
    if epoch > progress.start_epoch or resumed is None:
        progress.loss_sum, progress.n_batches = 0.0, 0
    restore_rng = resumed is not None and epoch == progress.start_epoch
    for i, batch in enumerate(loop.train_dl):
        if epoch == progress.start_epoch and i < progress.skip:  # a resumed epoch: trained before the stop
            continue
        if restore_rng:
            ckpt.set_rng_states(resumed["rng"])  # dropout continues from where it stopped
            restore_rng = False
        train_step(cfg, loop, progress, batch, epoch, epoch_start, bar, tracker)
        if ckpt.STOP:
            bar.close()
            where = "no checkpoint (train.checkpoint=false): a rerun starts over"
            if checkpoint is not None:
                progress.train_time += time.perf_counter() - epoch_start
                if loop.accelerator.is_main_process:
                    ckpt.save(checkpoint, checkpoint_state(loop, progress, epoch, i + 1, epoch_generator))
                where = f"checkpoint {checkpoint}: rerun the same command to resume"
            raise ckpt.RunInterrupted(f"stopped by SIGTERM at epoch {epoch}, step {progress.step} of {loop.total}; "
                                      f"{where}")
    if restore_rng:  # stopped after the epoch's last batch
        ckpt.set_rng_states(resumed["rng"])
    progress.train_time += time.perf_counter() - epoch_start


def train_step(cfg: RunConfig, loop: Loop, progress: Progress, batch: dict[str, torch.Tensor], epoch: int,
               epoch_start: float, bar, tracker) -> None:
    """Forward, backward, gradient clipping and one optimizer and scheduler step; a non-finite loss raises
    `TrainingDiverged`. Counts examples and (padded) tokens, and logs the loss every ``train.log_every`` steps."""
    loss = loop.model(**batch).loss
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch} step {progress.step + 1} (lr {loop.lr:g}); "
                               f"try a smaller train.lr")
    loop.accelerator.backward(loss)
    loop.accelerator.clip_grad_norm_(loop.trainable, cfg.train.max_grad_norm)
    loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    progress.step, progress.seen, progress.n_batches = (progress.step + 1, progress.seen + len(batch["labels"]),
                                                        progress.n_batches + 1)
    mask = batch["attention_mask"]
    progress.tokens["padded"] += mask.numel()
    progress.tokens["real"] += int(mask.sum())
    loss_value = loss.item()
    progress.loss_sum += loss_value
    bar.update(1)
    if progress.step % cfg.train.log_every == 0 or progress.step == loop.total:
        rate = progress.seen / (progress.train_time + time.perf_counter() - epoch_start)
        bar.set_postfix(loss=f"{loss_value:.4f}", ex_s=f"{rate:.1f}")
        if tracker is not None:
            tracker.log({"train/loss": loss_value, "train/lr": loop.scheduler.get_last_lr()[0],
                         "train/examples_per_s": rate}, step=progress.step)


def end_epoch(cfg: RunConfig, loop: Loop, progress: Progress, epoch: int, tracker, checkpoint: Path | None) -> None:
    """The epoch's history entry: train loss, lr and, on the held-out split, the selection metrics and gate λ (an
    epoch whose predictions are constant is recorded as unselectable); the best epoch's parameters kept; the
    checkpoint saved before the next epoch."""
    entry: dict[str, Any] = {"epoch": epoch, "train_loss": progress.loss_sum / max(progress.n_batches, 1),
                             "lr": loop.scheduler.get_last_lr()[0]}
    if loop.select is not None:
        with loop.gates.tracking() as lambdas:
            try:
                entry["select"] = evaluate_split(loop.model, loop.select, loop.accelerator, loop.task)
            except ConstantPredictions as err:  # this epoch cannot be chosen; a later one may have learned
                entry["select_error"] = str(err)
        if lambdas:
            entry["gate_lambda"] = lambdas
        if "select" in entry and entry["select"][loop.main_metric] > progress.best:
            progress.best = entry["select"][loop.main_metric]
            progress.best_state = {n: p.detach().clone() for n, p in loop.model.named_parameters() if p.requires_grad}
            entry["best"] = True
    progress.history.append(entry)
    if tracker is not None:
        logged = {f"select/{k}": v for k, v in entry.get("select", {}).items()} | {"epoch": epoch}
        logged |= {f"select/gate_lambda/layer_{i}": v for i, v in enumerate(entry.get("gate_lambda", []))}
        tracker.log(logged, step=progress.step)
    if checkpoint is not None and epoch < cfg.train.epochs and loop.accelerator.is_main_process:
        ckpt.save(checkpoint, checkpoint_state(loop, progress, epoch + 1, 0, loop.sampler.generator.get_state()))


def restore_best(cfg: RunConfig, loop: Loop, progress: Progress) -> int:
    """Put back the parameters of the epoch chosen on the held-out split, and return that epoch (the last one without
    a held-out split); `ConstantPredictions` when no epoch could be chosen."""
    history = progress.history
    if loop.select is not None and progress.best_state is None and history and "select_error" in history[-1]:
        raise ConstantPredictions(f"no epoch can be chosen: at every epoch (1-{cfg.train.epochs}) "
                                  + history[-1]["select_error"])
    if progress.best_state is not None:  # restore the epoch chosen on the held-out split
        params = dict(loop.model.named_parameters())
        with torch.no_grad():
            for name, value in progress.best_state.items():
                params[name].copy_(value)
    return next((h["epoch"] for h in reversed(history) if h.get("best")), cfg.train.epochs)


def _inference(cfg: RunConfig, loop: Loop, prep: Prepared) -> dict[str, Any] | None:
    """The trained model's inference time over the base model's (`peftbench.run.latency`), in one process only."""
    if not (loop.accelerator.num_processes == 1 and prep.load_base is not None and loop.evals):
        return None

    def load_base():  # the base model as the run computes: its regression head in fp32 too
        base = prep.load_base()
        if loop.fp32_head:
            fp32_regression_head(base, loop.task)
        return base

    return inference_cost(loop.accelerator.unwrap_model(loop.model), load_base, loop.evals[0].loader,
                          cfg.train.inference_batches, loop.accelerator.autocast, loop.accelerator.device)


def _result(loop: Loop, progress: Progress, prep: Prepared, metrics: dict[str, float], predictions: dict,
            gate_lambda: dict, best_epoch: int, eval_time: float, inference: dict[str, Any] | None) -> dict[str, Any]:
    """What training adds to the run's record."""
    accelerator, tokens, train_time = loop.accelerator, progress.tokens, progress.train_time
    return {
        "metrics": metrics,
        "score": metrics[loop.main_metric],
        "metric": loop.main_metric,
        "history": progress.history,
        "best_epoch": best_epoch,
        "lr": loop.lr,
        "steps": progress.step,
        "train_examples": len(prep.train),
        # `seen` and `tokens` count this process's share of a data-parallel run (num_processes shares)
        "throughput": {"train_examples_per_s": progress.seen * accelerator.num_processes / train_time
                       if train_time else None,
                       "train_time_s": train_time, "eval_time_s": eval_time,
                       "setup_time_s": prep.setup_s, "real_tokens": tokens["real"],
                       "padded_tokens": tokens["padded"],
                       "padding_ratio": tokens["padded"] / tokens["real"] if tokens["real"] else None},
        "data_source": prep.data_source,
        "device": str(accelerator.device),
        "cpu_isa": cpu_isa(),  # the CPU kind: fp32 is bitwise only within one (the record's `determinism`)
        "cpu_features": cpu_features(),  # and its SIMD extensions: bitwise is promised only on the same ones
        "num_processes": accelerator.num_processes,
        "determinism": determinism(accelerator.device.type, accelerator.mixed_precision),
        "mixed_precision": accelerator.mixed_precision,
        "head_precision": "fp32" if loop.fp32_head else accelerator.mixed_precision,
        "gate_lambda": gate_lambda or None,
        "inference": inference,
        "predictions": predictions,
    }


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
