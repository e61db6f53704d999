"""Bad input ends in one line naming what was wrong and what is valid (exit 2 before anything runs for a bad
config), never in a traceback, a silent coercion or a record that looks completed (issue 10, point 7)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import peftbench.__main__ as cli
import peftbench.run.record
from peftbench.run import job, sweep, validate
from peftbench.run.config import compose, one_line_error, to_specs
from peftbench.run.data import read_glue_tsv
from peftbench.run.record import write_record
from peftbench.run.tasks import DataError
from peftbench.space.spec import ModuleSpec, SpecError, parse_layers
from tests.conftest import tiny_model

TINY = ["model=tiny_bert"]


def spec_error(overrides: list[str], model: str = "tiny_bert") -> str:
    """The one-line error of composing and validating ``overrides`` in-process (what the CLI prints)."""
    with pytest.raises(Exception) as err:
        to_specs(compose([f"model={model}", *overrides]))
    message = one_line_error(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.epochs=0", "train.epochs=0 must be >= 1"),
        ("train.epochs=-1", "train.epochs=-1 must be >= 1"),
        ("data.held_out=1.5", "held_out=1.5 is not valid; valid: a fraction in (0, 1) or an integer count"),
        ("data.held_out=0", "data.held_out=0.0 is not valid"),
        ("data.held_out=-0.1", "data.held_out=-0.1 is not valid"),
        ("train.lr=0", "train.lr=0.0 must be > 0 (or null)"),
        ("train.lr=-1", "train.lr=-1.0 must be > 0"),
        ("train.lr_scale=0", "train.lr_scale=0.0 must be > 0"),
        ("task.max_length=0", "task.max_length=0 must be >= 8"),
        ("train.warmup_ratio=5", "train.warmup_ratio=5.0 must lie in [0, 1)"),
        ("train.batch_size=0", "train.batch_size=0 must be >= 1"),
        ("train.eval_batch_size=0", "train.eval_batch_size=0 must be >= 1"),
        ("data.max_train_samples=0", "data.max_train_samples=0 must be >= 1 (or null"),
        ("data.max_eval_samples=0", "data.max_eval_samples=0 must be >= 1 (or null"),
        ("data.select_on=bogus", "data.select_on='bogus' is not valid; valid: held_out, last"),
        ("data.source=bogus", "data.source='bogus' is not valid; valid: auto, local, hub"),
        ("train.mixed_precision=bogus", "mixed_precision='bogus' is not valid; valid: auto, no, bf16, fp16"),
        ("train.weight_decay=-0.1", "train.weight_decay=-0.1 must be >= 0"),
        ("train.max_grad_norm=0", "train.max_grad_norm=0.0 must be > 0"),
        ("train.adam_eps=0", "train.adam_eps=0.0 must be > 0"),
        ("train.adam_betas=[0.9]", "train.adam_betas=[0.9] must be two values in [0, 1)"),
        ("train.adam_betas=[0.9,1.0]", "must be two values in [0, 1)"),
        ("train.log_every=0", "train.log_every=0 must be >= 1"),
        ("train.threads=0", "train.threads=0 must be >= 1 (or null"),
        ("task.name=sst3", "task.name='sst3' is not a GLUE task; valid: cola, sst2"),
        ("seed=-1", "seed=-1 must lie in [0, 2**32)"),
        ("method.modules.attn.layers=top:x", "method.modules.attn.layers='top:x' is not a layer selection; "
                                             "valid forms: all, top:N, bottom:N, A-B, i,j,k"),
    ],
)
def test_bad_values_fail_at_compose(override, needle):
    assert needle in spec_error([override])


@pytest.mark.parametrize(
    "overrides",
    [["data.held_out=32"], ["data.held_out=1"], ["data.held_out=0.5"], ["train.lr=null"], ["train.lr=3e-4"],
     ["train.warmup_ratio=0"], ["data.select_on=last"], ["data.source=hub"], ["train.threads=2"],
     ["method.modules.attn.layers=top:2"], ["method.modules.attn.layers='0,-1'"]],
)
def test_valid_values_still_compose(overrides):
    to_specs(compose([*TINY, *overrides]))


def test_layer_count_is_checked_against_the_model_with_one_reason():
    message = spec_error(["method.modules.attn.layers=top:99"])
    assert message.startswith(
        "method.modules.attn.layers='top:99' asks for 99 layers, but model tiny_bert has layers 0..1"
    ), message
    assert "not a layer selection" not in message and "1 <= N <= 2" in message
    assert "but model minilm has layers 0..5" in spec_error(["method.modules.attn.layers=6"], model="minilm")


@pytest.mark.parametrize(
    ("layers", "needle"),
    [("top:99", "asks for 99 layers, but the model has layers 0..1"), ("bottom:0", "bottom:N needs N >= 1"),
     ("1-0", "selects no layers"), ("2", "names layer(s) [2], but the model has layers 0..1"),
     ("0-4", "names layer(s) [2, 3, 4], but"), ("1-99", "names layer(s) [2, ..., 99] (98 layers), but"),
     ("x", "not a layer selection")],
)
def test_parse_layers_gives_one_reason(layers, needle):
    with pytest.raises(SpecError) as err:
        parse_layers(layers, 2)
    assert needle in str(err.value) and err.value.__cause__ is None


def test_layers_beyond_the_model_fail_at_injection_with_one_reason():
    from peftbench.space.inject import apply_method
    from peftbench.space.spec import MethodSpec

    with pytest.raises(SpecError) as err:
        apply_method(tiny_model("bert"), MethodSpec(modules={"a": ModuleSpec(layers="top:99")}))
    assert "asks for 99 layers, but the model has layers 0..1" in str(err.value)
    assert err.value.__cause__ is None and "not a layer selection" not in one_line_error(err.value)


# --------------------------------------------------------------------------------------- command line


def validation_error(argv: list[str], capsys) -> str:
    """What ``validate_command_line`` prints on stderr; it must exit 2 with one line."""
    with pytest.raises(SystemExit) as exit_:
        validate.validate_command_line(sweep.normalise_argv(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def counted_composes(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def counting(overrides, *args, **kwargs):
        calls.append(list(overrides))
        return compose(overrides, *args, **kwargs)

    monkeypatch.setattr(validate, "compose", counting)
    monkeypatch.setattr(sweep, "compose", counting)
    return calls


def test_every_combination_is_checked_once_however_many_seeds(capsys, counted_composes, tmp_path):
    """The r=0 jobs came after the first 256 combinations (seeds × r), so they were never checked."""
    err = validation_error(["-m", *TINY, "method.modules.attn.r=8,0", "seed=range(0,256)",
                            f"results_root={tmp_path}"], capsys)
    assert "method.modules.attn.r=0" in err and "r=0 must be a positive" in err
    assert len(counted_composes) <= 3  # the sweep's first job (for its params), r=8, r=0: not × 256 seeds
    counted_composes.clear()
    validate.validate_command_line(["-m", *TINY, "method.modules.attn.r=8,4", "seed=range(0,5000)",
                               f"results_root={tmp_path}"])
    assert len(counted_composes) <= 3


@pytest.mark.parametrize(("seeds", "needle"), [("seed=0,-1", "seed=-1 must lie in [0, 2**32)"),
                                               ("seed=0,abc", "could not be converted to Integer")])
def test_odd_seeds_beyond_the_first_are_still_checked(capsys, tmp_path, seeds, needle):
    assert needle in validation_error(["-m", *TINY, seeds, f"results_root={tmp_path}"], capsys)


@pytest.mark.parametrize(
    ("args", "root", "needle"),
    [(["-m"], "file", "is not a directory (records are written and resumed from there)"),
     (["-m"], "file/sub", "cannot be created"),
     ([], "file", "is not a directory (resume searches it for records and a single run keeps its claim and "
                  "checkpoint there)"),
     ([], "file/sub", "cannot be created"),  # a single run keeps its claim and checkpoint there (issue 26)
     (["resume=false"], "file", "is not a directory (a single run keeps its checkpoint there)"),
     (["resume=false", "train.checkpoint=false"], "file", None)],  # a single run that never uses it
)
def test_results_root_that_is_a_file_fails_before_any_run(capsys, tmp_path, args, root, needle):
    (tmp_path / "file").write_text("not a folder")
    argv = [*args, *TINY, f"results_root={tmp_path / root}"]
    if needle is None:
        validate.validate_command_line(argv)
    else:
        assert needle in validation_error(argv, capsys)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any directory")
def test_unreadable_results_root_fails_before_any_run(capsys, tmp_path):
    root = tmp_path / "locked"
    root.mkdir()
    root.chmod(0)
    try:
        assert "no permission to read" in validation_error([*TINY, f"results_root={root}"], capsys)
        message = validation_error(["-m", *TINY, f"results_root={root}"], capsys)
        assert "no permission to read and write" in message
    finally:
        root.chmod(0o755)


def test_multirun_flag_after_overrides_is_moved_to_the_front():
    assert sweep.normalise_argv(["model=tiny_bert", "-m", "seed=0"]) == ["-m", "model=tiny_bert", "seed=0"]
    assert sweep.normalise_argv(["seed=0", "--multirun"]) == ["--multirun", "seed=0"]
    assert sweep.normalise_argv(["seed=0"]) == ["seed=0"]


# ----------------------------------------------------------------------------------- new module slots


@pytest.mark.parametrize(
    "overrides",
    [["+method.modules.extra.form=low_rank", "+method.modules.extra.representation=[ffn_w1]"],
     ["+method.modules.extra={form:low_rank,representation:[ffn_w1]}"]],
)
def test_a_new_module_slot_can_be_added_from_the_command_line(overrides):
    specs = to_specs(compose([*TINY, *overrides]))
    extra = specs.method.modules["extra"]
    assert isinstance(extra, ModuleSpec)
    assert (extra.form, extra.representation) == ("low_rank", ["ffn_w1"])
    assert (extra.r, extra.insertion, extra.layers) == (ModuleSpec.r, ModuleSpec.insertion, ModuleSpec.layers)
    lora = to_specs(compose(TINY)).method.modules["attn"]
    assert specs.method.modules["attn"] == lora  # the preset's slot is untouched


def test_a_new_slot_is_validated_like_any_module():
    assert "unknown key 'method.modules.extra.rank'; valid keys of method.modules.extra (ModuleSpec): form," in \
        spec_error(["+method.modules.extra.rank=4"])
    slot = ["+method.modules.extra.form=low_rank", "+method.modules.extra.representation=[attn_q]"]
    clash = spec_error(slot)
    assert clash.startswith("method.modules.extra and method.modules.attn both modify 'attn_q'")
    assert spec_error(["+method.modules.extra.form=prefix"]).startswith(
        "method.modules.extra: form=prefix modifies attention heads")


def test_plus_on_an_existing_slot_changes_only_the_field_given():
    specs = to_specs(compose([*TINY, "+method.modules.attn.r=4"]))
    attn = specs.method.modules["attn"]
    assert attn.r == 4 and attn.representation == ["attn_q", "attn_v"]


# --------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"sentence\tlabel\n", "SST-2/train.tsv: no data rows after the header"),
     (b"", "SST-2/train.tsv: empty file, expected a header line"),
     (b"sentence\tlabel\nab\xff\xfe\t1\n", "SST-2/train.tsv:2: byte 17 (0xff) is not UTF-8; a GLUE TSV must"),
     (b"\xef\xbb\xbfsentence\tlabel\nab\t1\n\x89PNG\t0\n",
      "SST-2/train.tsv:3: byte 23 (0x89) is not UTF-8")],  # offsets count the BOM
)
def test_unusable_tsv_names_the_file(tmp_path, content, needle):
    path = tmp_path / "SST-2" / "train.tsv"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_glue_tsv(path, "sst2")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_headerless_split_without_rows(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("")
    with pytest.raises(DataError, match=r"dev\.tsv: no data rows; a split needs examples"):
        read_glue_tsv(path, "cola", "validation")


# ------------------------------------------------------------------------------------------- records


def _write_many(run_dir: str, writer: int, count: int) -> None:
    for i in range(count):
        write_record({"writer": writer, "i": i, "payload": "x" * 2000}, run_dir)


def test_concurrent_writers_into_one_folder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_write_many, args=(str(tmp_path), w, 150)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["i"] == 149 and record["finished_at"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary file left


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(peftbench.run.record, "os", SimpleNamespace(getpid=os.getpid, replace=full))
    with pytest.raises(OSError, match="No space left"):
        write_record({"status": "completed"}, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def stub_runs(monkeypatch, tmp_path):
    """``run_job`` with training stubbed out (a completed run in no time) and a disk that is full."""
    import peftbench.run.setup
    import peftbench.run.train

    params = {"paper_share": 0.01}
    monkeypatch.setattr(peftbench.run.setup, "prepare", lambda specs: SimpleNamespace(
        report=SimpleNamespace(as_dict=lambda: params)))
    monkeypatch.setattr(peftbench.run.train, "train_and_evaluate", lambda specs, prep, tracker, checkpoint=None: {
        "metrics": {"accuracy": 0.5}, "score": 0.5, "metric": "accuracy"})

    def full(record, run_dir):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(peftbench.run.record, "write_record", full)
    run_dir = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(tmp_path / "run")),
                              overrides=SimpleNamespace(task=["seed=0"]))
    monkeypatch.setattr(job, "HydraConfig", SimpleNamespace(get=lambda: run_dir))
    monkeypatch.setattr(job, "FAILED", [])


def test_a_record_that_cannot_be_written_fails_the_run(stub_runs, capsys):
    record = job.run_job(compose([*TINY, "resume=false"]))
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert job.FAILED == ["lora/sst2/seed 0"]
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write its record" in err and "no record written" in err


def test_the_sweep_summary_survives_records_that_cannot_be_written(stub_runs, capsys, monkeypatch):
    def sweep() -> None:  # what Hydra's multirun does: one run_job per job
        for seed in (0, 1):
            job.run_job(compose([*TINY, "resume=false", f"seed={seed}"]))

    monkeypatch.setattr(cli, "_hydra_main", sweep)
    monkeypatch.setattr(sys, "argv", ["peftbench", *TINY, "resume=false"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    assert "2 run(s) failed: lora/sst2/seed 0, lora/sst2/seed 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- end to end (subprocess)


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "peftbench", *args, "train.progress=false"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needle"),
    [(["train.epochs=0"], "train.epochs=0 must be >= 1"),
     (["-m", "method.modules.attn.r=8,0", "seed=range(0,256)"], "r=0 must be a positive"),
     (["-m", "seed=0", "results_root=FILE"], "is not a directory")],
)
def test_cli_exits_2_with_one_line_and_no_record(tmp_path, args, needle):
    (tmp_path / "FILE").write_text("")
    out = run_cli(tmp_path, *TINY, *args, "hydra.run.dir=run")
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr
    assert not list(tmp_path.rglob("result.json"))


@pytest.mark.slow
def test_cli_accepts_multirun_flag_after_overrides_and_new_slots(tmp_path):
    """A sweep whose one job fails fast (no GLUE folder) shows Hydra took ``-m`` late and the new slot."""
    out = run_cli(tmp_path, *TINY, "-m", "task=rte", "data.glue_dir=missing", "results_root=runs",
                  "+method.modules.extra.form=low_rank", "+method.modules.extra.representation=[ffn_w1]")
    assert out.returncode == 1, out.stderr[-2000:]
    (path,) = (tmp_path / "runs").rglob("result.json")
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and "missing" in record["error"]
    assert record["config"]["method"]["modules"]["extra"]["representation"] == ["ffn_w1"]
    assert "1 run(s) failed" in out.stderr


# ----------------------------------------------------------------------- issue 26: hostile input, round two


@pytest.mark.parametrize(
    ("override", "needle"),
    [("+train.epoch=5", "unknown key 'train.epoch'; valid keys of train: epochs, batch_size"),
     ("+train.epoch=5", "did you mean train.epochs?"),
     ("++data.max_train_sample=5", "unknown key 'data.max_train_sample'"),
     ("+method.modules.attn.rank=4", "unknown key 'method.modules.attn.rank'; valid keys of method.modules.attn"),
     ("+nosuch=1", "unknown key 'nosuch'"),
     ("+method.nosuch=1", "unknown key 'method.nosuch'")],
)
def test_a_key_added_with_plus_must_be_in_the_schema(override, needle):
    """Defect 1: ``+train.epoch=5`` trained the default epochs and ``+train.nosuch=1`` changed the run key."""
    assert needle in spec_error([override])


def test_keys_added_with_plus_that_the_schema_allows_still_compose():
    slot = ["+method.modules.extra.form=low_rank", "+method.modules.extra.representation=[ffn_w1]"]
    assert to_specs(compose([*TINY, *slot])).method.modules["extra"].form == "low_rank"
    assert to_specs(compose([*TINY, "+model.config.layer_norm_eps=1e-6"])).model.config["layer_norm_eps"] == 1e-6


@pytest.mark.parametrize(
    ("model", "overrides", "needle"),
    [("tiny_bert", ["task.max_length=513"], "task.max_length=513 tokens per input, but model tiny_bert has 512 "
                                            "positions (max_position_embeddings=512); valid: task.max_length <= 512"),
     ("roberta_base", ["task.max_length=513"], "model roberta_base has 512 positions (max_position_embeddings=514 "
                                               "less roberta's offset of 2: positions start at pad_token_id + 1)"),
     ("tiny_roberta", ["task.max_length=514"], "model tiny_roberta has 513 positions"),  # its pad_token_id is 0
     ("minilm", ["task.max_length=100000"], "model minilm has 512 positions"),  # its installed config.json
     ("tiny_bert", ["method=prompt", "method.prompt.length=500"],
      "task.max_length=128 + method.prompt.length=500 = 628 tokens per input, but model tiny_bert has 512")],
)
def test_lengths_beyond_the_models_positions_fail_at_compose(model, overrides, needle):
    """Defect 2: a run trained on short batches, then failed at evaluation on a long one."""
    assert needle in spec_error(overrides, model=model)


@pytest.mark.parametrize(
    ("model", "overrides"),
    [("tiny_bert", ["task.max_length=512"]), ("roberta_base", ["task.max_length=512"]),
     ("tiny_roberta", ["task.max_length=513"]), ("tiny_bert", ["method=prompt", "method.prompt.length=384"])],
)
def test_lengths_at_the_models_positions_compose(model, overrides):
    to_specs(compose([f"model={model}", *overrides]))


def test_results_root_through_a_symlink_loop_fails_before_any_run(capsys, tmp_path):
    """Defect 3: ``Path.exists()`` is False on ELOOP, so the check walked up to a writable parent."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for root in ("loop", "loop/sub"):
        message = validation_error(["-m", *TINY, f"results_root={tmp_path / root}"], capsys)
        assert "cannot be checked: Too many levels of symbolic links" in message
        assert "cannot be checked: Too many levels" in validation_error([*TINY, f"results_root={tmp_path / root}"],
                                                                         capsys)


def _record(path: Path, score, run_key: str = "key") -> Path:
    from tests.test_report import make_record, write

    record = make_record("lora", 0, 0.9, run_key=run_key)
    record["score"] = score
    return write(path, record)


@pytest.mark.parametrize("score", [float("nan"), float("inf"), "0.9", None, True])
def test_resume_and_report_agree_that_a_completed_record_without_a_finite_score_is_not_done(tmp_path, capsys,
                                                                                           score):
    """Defect 4: resume skipped a completed record whose score is NaN or a string (so its seed was never redone),
    while the report dropped one and showed the other as a nan cell with "0 problems"."""
    from peftbench.analysis.records import load_records
    from peftbench.run.record import find_completed

    path = _record(tmp_path / "runs" / "0", score)
    assert find_completed([tmp_path / "runs"], "key") is None  # resume reruns it ...
    assert str(path) in capsys.readouterr().err  # ... and says which record it passed over
    df, problems = load_records([tmp_path / "runs"])
    assert df.empty and [p.path for p in problems] == [str(path)]  # the report names the same record
    assert "not a finite number (resume reruns it)" in problems[0].reason
    good = _record(tmp_path / "runs" / "1", 0.9)
    assert find_completed([tmp_path / "runs"], "key") == good

    from peftbench.run.record import completed_score  # the one rule both follow

    assert completed_score(json.loads(path.read_text())) is None
    assert completed_score(json.loads(good.read_text())) == 0.9


def test_the_report_names_malformed_records_and_claims_and_reports_the_rest(tmp_path, capsys):
    """Defect 5: ``params: "many"`` (AttributeError), ``seed: "zero"`` (ValueError) and a claim path that is a
    directory (IsADirectoryError) crashed the report; problems were listed in summary.md only."""
    from peftbench.report import main
    from peftbench.run.claims import CLAIMS_DIR
    from tests.test_report import make_record, write

    runs = tmp_path / "runs"
    for seed in (0, 1):
        write(runs / f"good{seed}", make_record("lora", seed, 0.9))
    bad = {"params": make_record("lora", 2, 0.9) | {"params": "many"},
           "seed": make_record("lora", 3, 0.9) | {"seed": "zero"},
           "metrics": make_record("lora", 4, 0.9) | {"metrics": [0.9]},
           "nan": make_record("lora", 5, 0.9) | {"score": float("nan")}}
    paths = {name: write(runs / name, record) for name, record in bad.items()}
    (runs / CLAIMS_DIR / "x.json").mkdir(parents=True)
    assert main([str(runs), "--out", str(tmp_path / "out"), "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    assert "2 completed, 0 failed, 0 duplicates dropped, 4 problems" in out
    for name, path in paths.items():
        (line,) = [line for line in out.splitlines() if str(path) in line]  # printed, not only in summary.md
        assert name in line.split(str(path))[1], line
    assert f"- unreadable: `{runs / CLAIMS_DIR / 'x.json'}` (Is a directory)" in out
    assert "4 problems" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("argv", [[*TINY, "seed=0,0"], [*TINY, "seed=0,1"], [*TINY, "method=lora,mam"]])
def test_several_values_without_multirun_fail_in_one_line(capsys, argv):
    """Defect 6: Hydra's 5-line "Ambiguous value" message and exit 1."""
    key = argv[-1].split("=")[0]
    message = validation_error(argv, capsys)
    assert "gives several values, which only a sweep runs: add -m" in message and f"{key}=[...]" in message


@pytest.mark.parametrize("multirun", [[], ["-m"]])
def test_a_name_too_long_for_a_folder_fails_before_any_run(capsys, tmp_path, monkeypatch, multirun):
    """Defect 6: a 300-character method.name raised ``OSError: File name too long`` in Hydra."""
    monkeypatch.chdir(tmp_path)
    message = validation_error([*multirun, *TINY, "method.name=" + "x" * 300, f"results_root={tmp_path}"], capsys)
    key = "hydra.sweep.subdir" if multirun else "hydra.run.dir"
    assert message.startswith(f"peftbench: error: {key}=") and "over the file system's limit of 255" in message


def _read_only(monkeypatch, folder: Path) -> None:
    """`folder` as on a read-only mount (or ``chattr +i``): no write access, whoever asks (root included)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        inside = Path(path) == folder or folder in Path(path).parents
        return False if inside and mode & os.W_OK else real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["hydra.run.dir=RO/run"], "hydra.run.dir='RO/run' cannot be created: {ro} is not a writable directory"),
     (["-m", "hydra.sweep.dir=RO/sweep"], "hydra.sweep.dir='RO/sweep' cannot be created"),
     (["-m", "results_root=RO"], "results_root='RO': no permission to read and write"),
     (["results_root=RO"], "results_root='RO': no permission to read and write"),  # defect 7: as a sweep
     (["results_root=RO/sub"], "results_root='RO/sub' cannot be created"),
     (["resume=false", "results_root=RO"], "(a single run keeps its checkpoint there)")],
)
def test_folders_on_a_read_only_mount_fail_before_any_run(capsys, tmp_path, monkeypatch, args, needle):
    """Defects 6 and 7: Hydra raised ``OSError: Read-only file system``; a single run warned, ran unclaimed and
    exited 0 where a sweep exits 2."""
    (tmp_path / "RO").mkdir()
    _read_only(monkeypatch, tmp_path / "RO")
    monkeypatch.chdir(tmp_path)
    assert needle.format(ro=tmp_path / "RO") in validation_error([*TINY, *args], capsys)


def test_a_single_run_that_never_uses_results_root_does_not_check_it(tmp_path, monkeypatch):
    (tmp_path / "RO").mkdir()
    _read_only(monkeypatch, tmp_path / "RO")
    monkeypatch.chdir(tmp_path)
    validate.validate_command_line([*TINY, "resume=false", "train.checkpoint=false", "results_root=RO"])


@pytest.mark.parametrize("merged", [False, True])
def test_export_onto_an_existing_file_fails_in_one_line(tmp_path, capsys, monkeypatch, merged):
    """Defect 6: ``--to peft <existing file>`` raised FileExistsError after loading the model."""
    import peftbench.export
    import peftbench.run.export
    from peftbench import load_method
    from peftbench.run.models import ModelSpec

    def load_run(run_dir):  # a LoRA run's model, as `artefacts.load_run` gives it (no training needed)
        model = tiny_model("bert")
        model.peftbench_run = {"specs": SimpleNamespace(method=load_method("lora"), model=ModelSpec()),
                               "tokenizer": SimpleNamespace(save_pretrained=lambda out: None)}
        return model

    monkeypatch.setattr(peftbench.run.export, "load_run", load_run)
    (tmp_path / "out").write_text("")
    args = [str(tmp_path / "run"), "--merged" if merged else "--to", *([] if merged else ["peft"])]
    assert peftbench.export.main([*args, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("peftbench.export: error: OUT") and "is a file" in err, err


def test_the_caption_names_the_dev_subset(tmp_path):
    """Defect 8: "on the full dev set" in a report of runs made with data.max_eval_samples=64."""
    from peftbench.analysis.cells import summarize
    from peftbench.analysis.records import load_records
    from peftbench.analysis.tables import markdown_table
    from tests.test_report import make_record, write

    for seed in (0, 1):
        record = make_record("lora", seed, 0.9)
        record["config"]["data"] = {"max_eval_samples": 64}
        write(tmp_path / "sub" / str(seed), record)
        write(tmp_path / "full" / str(seed), make_record("lora", seed, 0.9))
    table = markdown_table(summarize(load_records([tmp_path / "sub"])[0]))
    assert "on a 64-example subset of the dev set, the same in every run (data.max_eval_samples=64)" in table
    assert "full dev set" not in table
    assert "on the full dev set" in markdown_table(summarize(load_records([tmp_path / "full"])[0]))


# ----------------------------------------------------------------- issue 26: unclear messages made clear


def test_a_glue_dir_that_is_a_file_and_a_split_that_is_a_directory_say_so(tmp_path):
    from peftbench.run.data import load_glue, pick_source

    (tmp_path / "file").write_text("")
    (tmp_path / "glue" / "SST-2" / "train.tsv").mkdir(parents=True)
    with pytest.raises(DataError, match=r"GLUE directory .*file is a file, not a folder"):
        load_glue("sst2", glue_dir=tmp_path / "file", source="local")
    with pytest.raises(DataError, match=r"needs the file .*SST-2/train\.tsv, which is a directory"):
        load_glue("sst2", glue_dir=tmp_path / "glue", source="local")
    assert "is a file, not a folder" in pick_source("sst2", tmp_path / "file")[1]
    assert "train.tsv is a directory, not a file" in pick_source("sst2", tmp_path / "glue")[1]


def test_a_corrupt_checkpoint_is_said_to_be_discarded_not_resumed(tmp_path, capsys):
    import peftbench.run.checkpoint as ckpt

    path = tmp_path / "run.pt"
    path.write_bytes(b"not a checkpoint")
    assert ckpt.load(path, "lora/sst2/seed 0") is None
    captured = capsys.readouterr()
    assert "resuming" not in captured.out + captured.err
    assert f"lora/sst2/seed 0: its checkpoint {path} cannot be read" in captured.err
    assert "discarded: the run starts over" in captured.err
    ckpt.save(path, {"epoch": 2, "batch": 3})
    assert ckpt.load(path, "lora/sst2/seed 0") == {"epoch": 2, "batch": 3}
    assert "lora/sst2/seed 0: resuming from its checkpoint" in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_with_a_corrupt_checkpoint_says_it_starts_over(tmp_path, glue_dir):
    """"resuming from its checkpoint" was printed before the corrupt checkpoint was silently discarded."""
    from peftbench.run.checkpoint import CHECKPOINTS_DIR
    from peftbench.run.config import as_plain
    from peftbench.run.record import run_key

    args = [*TINY, "data.max_train_samples=32", "data.held_out=8", "data.max_eval_samples=16", "train.epochs=1",
            "train.inference_batches=0", "save=none", "train.mixed_precision=no", f"data.glue_dir={glue_dir}"]
    key = run_key(as_plain(compose(args)))  # fp32 as requested is fp32 as resolved, whichever key holds it
    (tmp_path / "runs" / CHECKPOINTS_DIR).mkdir(parents=True)
    (tmp_path / "runs" / CHECKPOINTS_DIR / f"{key}.pt").write_bytes(b"not a checkpoint")
    out = run_cli(tmp_path, *args, "results_root=runs", "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["run_key"] == key  # the checkpoint it found
    assert "resuming" not in out.stdout + out.stderr
    assert f"its checkpoint {tmp_path / 'runs' / CHECKPOINTS_DIR / key}.pt cannot be read" in out.stderr
    assert "discarded: the run starts over" in out.stderr


def test_an_unquoted_non_ascii_value_gets_the_hint_to_quote_it(capsys):
    message = validation_error([*TINY, "task.label_words=[schlecht,großartig]"], capsys)
    assert "LexerNoViableAltException" in message and "quote the value" in message
    assert "\"task.label_words=[schlecht,'großartig']\"" in message
    specs = to_specs(compose([*TINY, "method.head=verbalizer", "task.label_words=[schlecht,'großartig']"]))
    assert specs.task.label_words == ["schlecht", "großartig"]  # the suggested form works


def test_a_verbalizer_without_an_lm_head_is_refused_at_compose():
    assert spec_error(["method.head=verbalizer"], model="minilm").startswith(
        "model minilm has no pretrained LM head (its weights are BertModel)")
    to_specs(compose([*TINY, "method.head=verbalizer"]))  # random weights: its LM head is built, not missing
