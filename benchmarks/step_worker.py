"""One implementation of one method, kept alive in its own process and asked for timed steps, round by round.

``bench_step.py`` starts one worker per (method, implementation) and talks to it in JSON lines over stdin/stdout:
the first line builds the model, each later line asks for N training steps (forward + backward + AdamW step,
gradients zeroed) or N inference forwards, and the answer holds the step times and the peak memory so far.

The file imports neither peftbench nor peft nor adapters at the top, so the same script runs in the project's
environment (implementations ``ours``, ``peft``, ``hf``) and in ``.venv-adapters`` (``adapters``, which pins an
older transformers). Peak memory on CPU is the rise of the process's resident set during the steps: after the
model and optimizer are built, freed heap is returned to the OS (``malloc_trim``), the kernel's peak-RSS mark is
reset to the current RSS (``/proc/self/clear_refs`` ← 5), and the peak is ``VmHWM`` − that baseline. On CUDA it is
``torch.cuda.max_memory_allocated`` − the allocation before the first step.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import time
from typing import Any

import torch
from torch import nn

#: Model shapes (random weights). ``tiny_bert`` is for the smoke test.
SHAPES: dict[str, dict[str, Any]] = {
    "minilm": {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
               "intermediate_size": 1536},
    "roberta_base": {"model_type": "roberta", "max_position_embeddings": 514, "type_vocab_size": 1},
    "tiny_bert": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 64, "vocab_size": 1000},
}


# ------------------------------------------------------------------------------------------------ memory
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak(device: str) -> float:
    """Release freed memory, reset the peak mark, and return the baseline in MiB."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") / 1024


def peak_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_kib("VmHWM") / 1024


# ------------------------------------------------------------------------------------------------ models
def build_base(shape: dict[str, Any], attn: str | None) -> nn.Module:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    kwargs = {k: v for k, v in shape.items() if k != "model_type"}
    if attn:
        kwargs["attn_implementation"] = attn
    config = AutoConfig.for_model(shape["model_type"], num_labels=2, **kwargs)
    return AutoModelForSequenceClassification.from_config(config)


def _head_names(model: nn.Module) -> list[str]:
    """The task head as peftbench counts it: the classifier, and BERT's pooler (RoBERTa's sits in its classifier)."""
    return [n for n in ("classifier", "pooler") if any(name.split(".")[-1] == n for name, _ in model.named_modules())]


def _set_head_trainable(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if name.split(".")[-1] in ("classifier", "pooler"):
            module.requires_grad_(True)


def build_ours(model: nn.Module, method: str) -> tuple[nn.Module, dict[str, Any]]:
    from peftbench.space.inject import apply_method
    from peftbench.space.presets import load_method
    from peftbench.space.spec import MethodSpec

    references = {"frozen": MethodSpec(name="frozen", train_head=True),
                  "backprop": MethodSpec(name="backprop", train_head=True),
                  "layernorm": MethodSpec(name="layernorm", train_layer_norm=True, train_head=True)}
    spec = references[method] if method in references else load_method(method)
    report = apply_method(model, spec)
    if method == "backprop":
        model.enable_input_require_grads()
    return model, {"paper_params": report.paper, "stored_params": report.stored}


def build_hf(model: nn.Module, method: str) -> tuple[nn.Module, dict[str, Any]]:
    """Plain transformers: ``full`` trains everything, ``frozen`` only the head, ``bitfit`` biases + head,
    ``layernorm`` the LayerNorms + head (so the backward runs through the whole frozen backbone), ``backprop`` only
    the head but with the embeddings' output requiring grad (transformers' ``enable_input_require_grads``), so the
    backward computes the input gradient of every frozen layer and no weight gradient: the floor any method with a
    module in the bottom layer pays."""
    model.requires_grad_(method == "full")
    if method == "backprop":
        model.enable_input_require_grads()
    if method == "bitfit":
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(".bias"))
    if method == "layernorm":
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)
    _set_head_trainable(model)
    return model, {}


def build_peft(model: nn.Module, method: str) -> tuple[nn.Module, dict[str, Any]]:
    import peft

    d = model.config.hidden_size
    save = _head_names(model)  # train the same head as ours (BERT: pooler too)
    configs = {
        "lora": lambda: peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"]),
        "prefix": lambda: peft.PrefixTuningConfig(num_virtual_tokens=16, prefix_projection=True,
                                                  encoder_hidden_size=800),
        "ptuning_v2": lambda: peft.PrefixTuningConfig(num_virtual_tokens=20, prefix_projection=False),
        "prompt": lambda: peft.PromptTuningConfig(num_virtual_tokens=20),
        "ptuning": lambda: peft.PromptEncoderConfig(num_virtual_tokens=20, encoder_reparameterization_type="LSTM",
                                                    encoder_hidden_size=d // 2, encoder_num_layers=2),
    }
    config = configs[method]()
    config.task_type = peft.TaskType.SEQ_CLS
    config.modules_to_save = save
    return peft.get_peft_model(model, config), {}


def build_adapters(model: nn.Module, method: str) -> tuple[nn.Module, dict[str, Any]]:
    import adapters
    from adapters import DoubleSeqBnConfig, LoRAConfig, MAMConfig, ParBnConfig, PrefixTuningConfig

    d = model.config.hidden_size
    rf = d / 16  # reduction factor giving bottleneck r = 16, as in our presets
    prefix = lambda: PrefixTuningConfig(prefix_length=16, bottleneck_size=800)  # noqa: E731
    configs = {
        "adapter": lambda: DoubleSeqBnConfig(reduction_factor=rf, non_linearity="relu"),
        "pa": lambda: ParBnConfig(reduction_factor=rf, scaling=1.0),
        "scaled_pa": lambda: ParBnConfig(reduction_factor=rf, scaling=4.0),
        "prefix": prefix,
        "lora": lambda: LoRAConfig(r=8, alpha=16, dropout=0.1, attn_matrices=["q", "v"]),
        "mam": lambda: MAMConfig(prefix(), ParBnConfig(reduction_factor=rf, scaling=2.0)),
    }
    config = configs[method]()
    adapters.init(model)
    model.add_adapter("bench", config=config)
    model.train_adapter("bench")
    if method == "adapter":  # Houlsby (and our preset) train the layer norms too
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)
    _set_head_trainable(model)
    return model, {}


BUILDERS = {"ours": build_ours, "hf": build_hf, "peft": build_peft, "adapters": build_adapters}


def make_batch(vocab: int, batch: int, seq: int, seed: int, device: str) -> dict[str, torch.Tensor]:
    """Random ids with realistic padding: row lengths uniform in [seq/2, seq], the first row full."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab - 1, (batch, seq), generator=g)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = ids * mask + (1 - mask)  # padded positions hold id 1 (a pad-like id; masked out anyway)
    labels = torch.randint(0, 2, (batch,), generator=g)
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": mask, "labels": labels}.items()}


# ------------------------------------------------------------------------------------------------ worker
class Bench:
    """The model, optimizer and batch of one implementation of one method."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.device = request.get("device", "cpu")
        torch.manual_seed(request.get("seed", 0))
        shape = request["shape"] if isinstance(request["shape"], dict) else SHAPES[request["shape"]]
        impl, method, self.mode = request["impl"], request["method"], request.get("mode", "train")
        base = build_base(shape, request.get("attn"))
        self.total = sum(p.numel() for p in base.parameters())
        start = time.perf_counter()
        self.model, self.info = BUILDERS[impl](base, method)
        self.info["build_s"] = time.perf_counter() - start
        self.model.to(self.device)
        self.batch = make_batch(base.config.vocab_size, request["batch"], request["seq"], request.get("seed", 0),
                                self.device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if self.mode == "train":
            self.model.train()
            self.optimizer = torch.optim.AdamW(self.trainable, lr=1e-4)
        else:
            self.model.eval()
            self.batch.pop("labels")
            if request.get("merge"):
                self.info["merged"] = merge_lora(self.model)
        self.baseline = reset_peak(self.device)

    def describe(self) -> dict[str, Any]:
        return {"trainable": sum(p.numel() for p in self.trainable), "total": self.total,
                "attn": getattr(self.model.config, "_attn_implementation", None),
                "baseline_mib": self.baseline, **self.info}

    def step(self) -> None:
        if self.mode == "train":
            loss = self.model(**self.batch).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                self.model(**self.batch)

    def run(self, steps: int) -> dict[str, Any]:
        times, cpu_times = [], []
        for _ in range(steps):
            if self.device == "cuda":
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            self.step()
            if self.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        peak = peak_mib(self.device)
        return {"times": times, "cpu_times": cpu_times, "peak_mib": peak, "peak_delta_mib": peak - self.baseline}


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA wrapper of ours into the weight it runs beside; returns how many were merged."""
    from peftbench.space.modules import ParallelLinear

    wrappers = [m for m in model.modules() if isinstance(m, ParallelLinear)]
    for wrapper in wrappers:
        wrapper.merge()
    return len(wrappers)


def main() -> None:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints go to stderr, not into the protocol
    if os.environ.get("BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    bench = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "build":
                bench = Bench(request)
                answer = {"ok": True, **bench.describe()}
            elif request["op"] == "run":
                answer = {"ok": True, **bench.run(request["steps"])}
            else:
                break
        except Exception as err:  # report to the parent, which names the implementation
            answer = {"ok": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        out.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
