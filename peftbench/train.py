"""One benchmark run: data → model → method → train (accelerate) → select on held-out train → score the full dev set.

Setup, train and evaluate are separate functions; :func:`run` ties them together and always returns a record
(``status: failed`` with the error when anything goes wrong, see ``peftbench.record``).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from peftbench.config import RunConfig
from peftbench.data import get_task, load_glue, make_collator, split_for_selection, subsample, tokenize_glue
from peftbench.inject import MethodReport, apply_method, export_reparameterisations
from peftbench.metrics import compute_glue_metrics
from peftbench.models import load_model, load_tokenizer
from peftbench.prefix import PrefixEncoder, PrefixHeads
from peftbench.prompts import PromptInserter


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Prepared:
    model: torch.nn.Module
    report: MethodReport
    train: Any
    select: Any | None
    evals: dict[str, Any]
    collator: Any
    setup_s: float


def prepare(cfg: RunConfig) -> Prepared:
    """Tokenised splits (cached per task and tokenizer, so a sweep tokenises once) and the adapted model."""
    start = time.perf_counter()
    info = get_task(cfg.task.name)
    tokenizer = load_tokenizer(cfg.model)
    splits = load_glue(info.name, cfg.data.source, cfg.data.glue_dir)
    tokenized = tokenize_glue(splits, tokenizer, info.name, cfg.task.max_length, cfg.data.cache_dir)
    train = subsample(tokenized["train"], cfg.data.max_train_samples, cfg.seed)
    select = None
    if cfg.data.select_on == "held_out":
        held_out = cfg.data.held_out
        train, select = split_for_selection(train, int(held_out) if held_out >= 1 else float(held_out), cfg.seed)
    elif cfg.data.select_on != "last":
        raise ValueError(f"data.select_on={cfg.data.select_on!r} is not valid; valid values: held_out, last")
    evals = {name: subsample(tokenized[name], cfg.data.max_eval_samples, 0) for name in info.eval_splits}

    set_seed(cfg.seed)  # the same seed gives the same added-module initialisation and data order
    model = load_model(cfg.model, num_labels=info.num_labels)
    report = apply_method(model, cfg.method, tokenizer)
    return Prepared(model, report, train, select, evals, make_collator(tokenizer), time.perf_counter() - start)


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


@torch.no_grad()
def evaluate_split(model, loader, accelerator: Accelerator, task: str) -> dict[str, float]:
    model.eval()
    preds, refs = [], []
    for batch in loader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        logits, labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        preds.append(logits.float().cpu())
        refs.append(labels.cpu())
    logits = torch.cat(preds)
    predictions = logits.squeeze(-1) if get_task(task).is_regression else logits.argmax(-1)
    return compute_glue_metrics(task, predictions.numpy(), torch.cat(refs).numpy())


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


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


def train_and_evaluate(cfg: RunConfig, prep: Prepared, tracker=None) -> dict[str, Any]:
    """Train, keep the best epoch on the selection split, and score every evaluation split of the dev set."""
    with PeakMemory() as memory:
        result = _train_and_evaluate(cfg, prep, tracker)
    result["peak_mem_mb"] = memory.mib
    return result


def _train_and_evaluate(cfg: RunConfig, prep: Prepared, tracker=None) -> dict[str, Any]:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    accelerator = Accelerator(cpu=cfg.train.cpu, mixed_precision=_mixed_precision(cfg.train.mixed_precision))
    task, lr = cfg.task.name, cfg.train.lr or cfg.method.lr
    gen = torch.Generator().manual_seed(cfg.seed)
    train_dl = DataLoader(prep.train, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=prep.collator,
                          generator=gen)
    make = lambda ds: DataLoader(ds, batch_size=cfg.train.eval_batch_size, collate_fn=prep.collator)  # noqa: E731
    select_dl = make(prep.select) if prep.select is not None else None
    eval_dls = {name: make(ds) for name, ds in prep.evals.items()}
    optimizer = _optimizer(prep.model, cfg, lr)
    total = cfg.train.epochs * math.ceil(len(prep.train) / cfg.train.batch_size)
    scheduler = linear_warmup_decay(optimizer, int(cfg.train.warmup_ratio * total), total)
    model, optimizer, train_dl, scheduler = accelerator.prepare(prep.model, optimizer, train_dl, scheduler)
    select_dl = accelerator.prepare(select_dl) if select_dl is not None else None
    eval_dls = {name: accelerator.prepare(dl) for name, dl in eval_dls.items()}
    trainable = [p for p in model.parameters() if p.requires_grad]

    main = get_task(task).main_metric
    history, best, best_state, step, seen, train_time = [], -math.inf, None, 0, 0, 0.0
    bar = tqdm(total=total, desc=f"{cfg.method.name}/{task}", disable=not cfg.train.progress, unit="step")
    for epoch in range(1, cfg.train.epochs + 1):
        model.train()
        epoch_start, loss_sum, n_batches = time.perf_counter(), 0.0, 0
        for batch in train_dl:
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
            loss_value = loss.item()
            loss_sum += loss_value
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == total:
                rate = seen / (train_time + time.perf_counter() - epoch_start)
                bar.set_postfix(loss=f"{loss_value:.4f}", ex_s=f"{rate:.1f}")
                if tracker is not None:
                    tracker.log({"train/loss": loss_value, "train/lr": scheduler.get_last_lr()[0],
                                 "train/examples_per_s": rate}, step=step)
        train_time += time.perf_counter() - epoch_start
        entry: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(n_batches, 1),
                                 "lr": scheduler.get_last_lr()[0]}
        if select_dl is not None:
            entry["select"] = evaluate_split(model, select_dl, accelerator, task)
            if entry["select"][main] > best:
                best = entry["select"][main]
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                entry["best"] = True
        history.append(entry)
        if tracker is not None:
            tracker.log({f"select/{k}": v for k, v in entry.get("select", {}).items()} | {"epoch": epoch}, step=step)
    bar.close()

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
    for name, loader in eval_dls.items():
        suffix = "_mm" if name.endswith("mismatched") else ""
        metrics.update({f"{k}{suffix}": v for k, v in evaluate_split(model, loader, accelerator, task).items()})
    return {
        "metrics": metrics,
        "score": metrics[main],
        "metric": main,
        "history": history,
        "best_epoch": best_epoch,
        "lr": lr,
        "steps": step,
        "train_examples": len(prep.train),
        "throughput": {"train_examples_per_s": seen / train_time if train_time else None,
                       "train_time_s": train_time, "eval_time_s": time.perf_counter() - eval_start,
                       "setup_time_s": prep.setup_s},
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
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
