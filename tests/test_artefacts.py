"""Issue 12: every run leaves a reloadable artefact (``modules.safetensors``); ``load_run`` rebuilds the trained
model and reproduces the dev predictions the run scored; the budget line; what a sweeper optimises."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from peftbench.run.artefacts import ARTEFACT, ArtefactError, load_run, predict_run

pytestmark = pytest.mark.slow
RUN = ["model=tiny_bert", "task=sst2", "data.max_train_samples=96", "data.held_out=32", "data.max_eval_samples=64",
       "train.epochs=1", "train.progress=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> dict[str, Path]:
    """One sweep (one process): LoRA, MAM (an MLP-reparameterised prefix, exported), Houlsby, BitFit, full
    fine-tuning (saves nothing by default) and prompt tuning with save=full."""
    root = tmp_path_factory.mktemp("artefacts")
    env = {**os.environ, "PEFTBENCH_GLUE_DIR": str(glue_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    common = [*RUN, f"data.cache_dir={root / 'cache'}", "results_root=runs"]
    for args in (["-m", "method=lora,mam,adapter,bitfit,full"], ["-m", "method=prompt", "save=full"],
                 ["-m", "method=lora", "task=stsb"]):
        out = subprocess.run([sys.executable, "-m", "peftbench", *common, *args], cwd=root, env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
    found = {}
    for path in (root / "runs").rglob("result.json"):
        record = json.loads(path.read_text())
        assert record["status"] == "completed"
        found[record["method"] + ("" if record["task"] == "sst2" else f"/{record['task']}")] = path.parent
    found["_stdout"] = out.stdout  # type: ignore[assignment]
    return found


@pytest.mark.parametrize("method", ["lora", "mam", "adapter", "bitfit"])
def test_load_run_reproduces_the_scored_dev_predictions(runs, method):
    record = json.loads((runs[method] / "result.json").read_text())
    artefact = record["artefact"]
    assert artefact["save"] == "modules" and (runs[method] / ARTEFACT).stat().st_size == artefact["bytes"]
    assert artefact["numel"] == record["params"]["stored"]  # the file holds exactly what the record counts
    predictions, references = predict_run(runs[method])
    assert predictions.tolist() == record["predictions"]["validation"]["predictions"]
    assert references.tolist() == record["predictions"]["validation"]["references"]


def test_a_reloaded_regression_run_predicts_as_it_scored_with_its_fp32_head(runs):
    record = json.loads((runs["lora/stsb"] / "result.json").read_text())
    assert record["head_precision"] == ("no" if record["mixed_precision"] == "no" else "fp32")
    predictions, _ = predict_run(runs["lora/stsb"])
    scored = record["predictions"]["validation"]["predictions"]
    # fp32 outputs: more distinct values than bf16 would leave (the tiny model's predictions sit within ~1e-4 of
    # the mean label, where bf16's step is 1/64)
    assert predictions.dtype.name == "float32"
    assert len(set(scored)) > 4 * len(set(torch.tensor(scored).bfloat16().tolist()))
    # bf16 encoder arithmetic in another process differs in the last bits (measured: ≤3e-5 relative), far below
    # bf16's own step (4e-3): the reload computes what the run did, with fp32 outputs
    assert predictions.tolist() == pytest.approx(scored, rel=2e-4)


def test_mam_stores_the_exported_prefix_not_its_mlp(runs):
    with safe_open(str(runs["mam"] / ARTEFACT), framework="pt") as f:
        names = list(f.keys())
        method = json.loads(f.metadata()["method"])
    assert any(n.endswith("peftbench_heads.prefix") for n in names)
    assert not any("mlp" in n or "embedding" in n for n in names)
    assert method["name"] == "mam" and method["modules"]["attn"]["reparam"] == "mlp"


def test_full_fine_tuning_saves_nothing_by_default_and_save_full_saves_everything(runs):
    full = json.loads((runs["full"] / "result.json").read_text())
    assert full["artefact"] == {"save": "none"} and not (runs["full"] / ARTEFACT).exists()
    with pytest.raises(ArtefactError, match="no modules.safetensors \\(save=none\\)"):
        load_run(runs["full"])
    prompt = json.loads((runs["prompt"] / "result.json").read_text())
    assert prompt["artefact"]["save"] == "full" and prompt["artefact"]["numel"] > prompt["params"]["base"]
    predictions, _ = predict_run(runs["prompt"])
    assert predictions.tolist() == prompt["predictions"]["validation"]["predictions"]


def test_budget_line_and_selection_score(runs):
    from peftbench.run.job import selection_score

    assert "lora/stsb/seed 0: trainable params: " in runs["_stdout"]  # the last sweep's output
    assert "|| all params: " in runs["_stdout"] and "|| trainable%: " in runs["_stdout"]
    record = json.loads((runs["lora"] / "result.json").read_text())
    held_out = max(h["select"]["accuracy"] for h in record["history"])
    assert selection_score(record) == held_out
    made_up = {"status": "completed", "metric": "accuracy", "score": 0.95, "history": [{"select": {"accuracy": 0.61}},
                                                                 {"select": {"accuracy": 0.64}}]}
    assert selection_score(made_up) == 0.64  # the best held-out score, never the dev score
    assert math.isnan(selection_score({"status": "failed", "metric": "accuracy", "history": []}))
    skipped = {"status": "skipped", "path": str(runs["lora"] / "result.json")}
    assert selection_score(skipped) == held_out


def test_load_run_refuses_a_folder_without_a_record(tmp_path):
    with pytest.raises(ArtefactError, match="no result.json"):
        load_run(tmp_path)


def _batch():
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 5000, (3, 12), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _base(run_dir: Path):
    from transformers import set_seed

    from peftbench.run.artefacts import _specs_of
    from peftbench.run.models import load_model

    specs = _specs_of(json.loads((run_dir / "result.json").read_text()))
    set_seed(specs.seed)  # tiny_bert is randomly initialised: the run's seed gives its base weights
    return load_model(specs.model, num_labels=2).eval()


def test_lora_exports_to_peft_with_equal_logits(runs, tmp_path):
    import torch
    from peft import PeftModel

    from peftbench.export import main

    out = tmp_path / "peft"
    assert main([str(runs["lora"]), "--to", "peft", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16.0)  # lora preset: r=8, s=2
    peft_model = PeftModel.from_pretrained(_base(runs["lora"]), str(out)).eval()
    ours = load_run(runs["lora"])
    with torch.no_grad():
        expected = ours(**_batch()).logits
        got = peft_model(**_batch()).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(_base(runs["lora"])(**_batch()).logits, expected)  # the adapter did change it


def test_merged_export_is_a_plain_transformers_checkpoint(runs, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from peftbench.export import main

    out = tmp_path / "merged"
    assert main([str(runs["lora"]), "--merged", str(out)]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert not any("delta" in n or "base_layer" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(**_batch()).logits, load_run(runs["lora"])(**_batch()).logits,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("method", "flag", "needle"), [
    ("mam", "--to", "method mam: module attn is form=prefix"),
    ("adapter", "--to", "method adapter: module adapter is form=bottleneck, insertion=sequential"),
    ("bitfit", "--to", "method bitfit is not LoRA"),
    ("adapter", "--merged", "is not a linear module beside a weight; only those merge"),
])  # fmt: skip
def test_export_refuses_what_the_format_cannot_express(runs, tmp_path, capsys, method, flag, needle):
    from peftbench.export import main

    args = [str(runs[method]), "--to", "peft", str(tmp_path / "x")] if flag == "--to" else \
        [str(runs[method]), "--merged", str(tmp_path / "x")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
