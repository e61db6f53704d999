"""Issue 29: runs of IA3, DoRA, VeRA, rsLoRA and PiSSA export to peft (``PeftModel.from_pretrained`` computes
``load_run``'s logits) and, merged, to a plain transformers checkpoint with the same logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftbench.run.artefacts import load_run
from tests.test_artefacts import RUN, _base, _batch

pytestmark = pytest.mark.slow
METHODS = ["ia3", "dora", "vera", "rslora", "pissa"]
PEFT_TYPE = {"ia3": "IA3", "vera": "VERA", "dora": "LORA", "rslora": "LORA", "pissa": "LORA"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("successors")
    env = {**os.environ, "PEFTBENCH_GLUE_DIR": str(glue_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    # one lr for all, large enough that every method moves visibly in one short epoch
    args = [*RUN, f"data.cache_dir={root / 'cache'}", "results_root=runs", "-m", f"method={','.join(METHODS)}",
            "train.lr=1e-2"]
    out = subprocess.run([sys.executable, "-m", "peftbench", *args], cwd=root, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    found = {}
    for path in (root / "runs").rglob("result.json"):
        record = json.loads(path.read_text())
        assert record["status"] == "completed"
        found[record["method"]] = path.parent
    assert sorted(found) == sorted(METHODS)
    return found


@pytest.mark.parametrize("method", METHODS)
def test_successors_export_to_peft_with_equal_logits(runs, tmp_path, method):
    from peft import PeftModel

    from peftbench.export import main

    out = tmp_path / "peft"
    assert main([str(runs[method]), "--to", "peft", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == PEFT_TYPE[method]
    assert config.get("use_dora", False) == (method == "dora") and config.get("use_rslora", False) == (method == "rslora")
    peft_model = PeftModel.from_pretrained(_base(runs[method]), str(out)).eval()
    ours = load_run(runs[method])
    with torch.no_grad():
        expected = ours(**_batch()).logits
        got = peft_model(**_batch()).logits
        untouched = _base(runs[method])(**_batch()).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(untouched, expected, atol=1e-4)  # the method did change the model


@pytest.mark.parametrize("method", METHODS)
def test_successors_merge_into_a_plain_checkpoint(runs, tmp_path, method):
    from transformers import AutoModelForSequenceClassification

    from peftbench.export import main

    out = tmp_path / "merged"
    assert main([str(runs[method]), "--merged", str(out)]) == 0
    plain = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert not any("delta" in n or "base_layer" in n or "magnitude" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(**_batch()).logits, load_run(runs[method])(**_batch()).logits,
                                   atol=1e-5, rtol=1e-5)
