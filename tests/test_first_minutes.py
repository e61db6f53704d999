"""A new user's first ten minutes (issue 28): the README quickstart runs as written, --help shows what to pick,
mistakes are named with the fix, the hub's absence is said at once, and an ad-hoc run spends no time on
inference timing nor prints transformers' load report."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from peftbench.run.config import compose, one_line_error
from peftbench.run.record import run_key
from peftbench.run.summary import SweepSummary
from peftbench.space.presets import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
PICKED = ("method", "task", "model", "data", "train", "logger")


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, "-m", "peftbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def quickstart_commands() -> list[str]:
    """The `python -m peftbench ...` lines of the README's Quickstart section, as written."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("python -m peftbench ")]


def test_help_shows_the_groups_examples_and_where_records_go_not_internal_groups() -> None:
    out = cli("--help")
    assert out.returncode == 0, out.stderr
    assert "base_data" not in out.stdout and "method_slot" not in out.stdout and "Powered by Hydra" not in out.stdout
    listed = {line.split()[0]: set(line.split()[1:]) for line in out.stdout.splitlines()
              if line.strip() and line.split()[0] in PICKED}
    for group in PICKED:  # every preset of every group a user picks from, and nothing that is not one
        assert listed[group] == {p.stem for p in (CONF_DIR / group).glob("*.yaml")}, group
    assert "outputs/<date>/<time>_<method>_<task>_s<seed>/result.json" in out.stdout
    assert "python -m peftbench -m method=lora,mam task=sst2" in out.stdout


@pytest.mark.parametrize(("override", "words"), [
    ("method.modules.attn.rank=4", "unknown key 'method.modules.attn.rank'; valid keys of method.modules.attn "
                                   "(ModuleSpec): form, insertion, representation, composition, r,"),
    ("train.epoch=3", "did you mean train.epochs?"),
    ("model.nme=x", "valid keys of model (ModelSpec): name, pretrained"),
])
def test_an_unknown_nested_key_names_the_valid_fields_and_what_was_meant(override: str, words: str) -> None:
    with pytest.raises(Exception) as err:
        compose([override])
    message = one_line_error(err.value)
    assert words in message and "\n" not in message
    if "rank" in override:
        assert message.endswith("did you mean method.modules.attn.r?")


@pytest.mark.parametrize("multirun", [False, True])
def test_a_field_under_a_null_node_names_the_node_and_the_presets_that_have_one(multirun: bool) -> None:
    """LoRA has no prompt: Hydra's "Unexpected type for root: NoneType" becomes the null node, the method, and the
    presets whose YAML sets a prompt (read from conf/method/, so a new prompt preset joins the list)."""
    having = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml") if "\nprompt:" in p.read_text())
    assert having == ["prompt", "ptuning"]
    args = ["-m", "method=lora,prompt", "hydra.sweep.dir=unused"] if multirun else ["--cfg", "job", "method=lora"]
    out = cli(*args, "method.prompt.length=3")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert ("method.prompt is null with method=lora, so method.prompt.length cannot be set; presets with a "
            f"method.prompt: {', '.join(having)}") in out.stderr and "NoneType" not in out.stderr


def test_cfg_job_is_validated_like_a_run() -> None:
    bad = cli("--cfg", "job", "method.modules.attn.representation=[attn_z]")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "'attn_z' is not valid" in bad.stderr
    good = cli("--cfg", "job", "method=mam", "--resolve")
    assert good.returncode == 0 and "name: mam" in good.stdout


def test_inference_timing_is_off_for_an_ad_hoc_run_and_on_in_experiments_without_changing_run_keys() -> None:
    assert compose([]).train.inference_batches == 0
    for experiment in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        assert compose([f"+experiment={experiment.stem}"]).train.inference_batches == 2, experiment.stem
    config = OmegaConf.to_container(compose([]), resolve=True)
    timed = json.loads(json.dumps(config))
    timed["train"]["inference_batches"] = 2
    assert run_key(config, "no") == run_key(timed, "no")  # committed records (timed) keep their keys


def test_transformers_load_report_is_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    from peftbench.run.config import to_specs
    from peftbench.run.models import load_model

    load_model(to_specs(compose([])).model)  # MiniLM's checkpoint has no classifier: the report would say so
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.out + captured.err and "MISSING" not in captured.out + captured.err


def test_the_hub_unreachable_fails_at_once_without_retries(monkeypatch, tmp_path, caplog) -> None:
    import datasets
    from huggingface_hub import constants

    from peftbench.run.data import load_glue

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: connection refused
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"the hub is unreachable \(127.0.0.1:9: .*\) and nyu-mll/glue/mnli"):
        load_glue("mnli", source="hub")
    assert time.perf_counter() - start < 10  # huggingface_hub's five retries wait 1 + 2 + 4 + 8 + 8 s
    assert "Retrying" not in caplog.text
    assert constants.HF_HUB_OFFLINE is False and datasets.config.HF_HUB_OFFLINE is False  # restored


def test_a_sweep_summary_reads_the_records_and_the_skipped_jobs(tmp_path, capsys) -> None:
    sweep = tmp_path / "sweep"
    earlier = tmp_path / "earlier" / "result.json"
    earlier.parent.mkdir()
    earlier.write_text(json.dumps({"status": "completed", "metric": "accuracy", "score": 0.8125, "time_s": 30}))
    for name, files in (("0_lora_sst2_s0", {"result.json": {"status": "completed", "metric": "accuracy",
                                                            "score": 0.5625, "time_s": 21.8}}),
                        ("1_mam_sst2_s0", {"skipped.json": {"status": "skipped", "path": str(earlier)}}),
                        ("2_pa_sst2_s0", {})):
        (sweep / name / ".hydra").mkdir(parents=True)
        for file, content in files.items():
            (sweep / name / file).write_text(json.dumps(content))
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[-3:]]
    assert rows == [["0_lora_sst2_s0", "completed", "accuracy", "56.2", "22", "s"],
                    ["1_mam_sst2_s0", "skipped", "accuracy", "81.2", "-"],
                    ["2_pa_sst2_s0", "no", "record", "-", "-"]]


def test_the_readme_main_job_is_two_runs() -> None:
    from peftbench.run.sweep import planned_jobs

    sweeps = [shlex.split(c)[3:] for c in quickstart_commands() if "-m" in shlex.split(c)[3:]]
    assert sweeps, "the Quickstart shows the main job"
    assert len(planned_jobs(sweeps[0])) == 2


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_written(tmp_path: Path, glue_dir: Path) -> None:
    """The first command of the README's Quickstart, verbatim, in a fresh folder: a completed record where the
    README says, and the line the README shows as its output."""
    first = quickstart_commands()[0]
    args = shlex.split(first)[3:]
    start = time.perf_counter()
    out = cli(*args, cwd=tmp_path, env={"PEFTBENCH_GLUE_DIR": str(glue_dir)})
    took = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-2000:]
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("result.json")]
    assert record["status"] == "completed" and record.get("inference") is None  # no inference timing
    assert re.search(r"peftbench: lora/sst2 seed 0: accuracy=0\.\d{4} \(0\.327% params\) → .*result\.json",
                     out.stdout + out.stderr)
    assert "LOAD REPORT" not in out.stdout + out.stderr
    print(f"quickstart: {took:.0f} s")
