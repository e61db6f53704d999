"""``python -m peftbench.verify``: a committed record is rerun from its recorded config and compared bit for bit.

The canary (``tests/data/canary/result.json``) is a real run small enough for every CI run: MAM (an MLP-
reparameterised gated prefix and a scaled parallel adapter) on tiny_bert (random weights drawn from the run's
seed, dropout on), STS-B (its regression predictions are recorded to 7 significant digits, so almost any change of
the arithmetic shows in them), 96 training rows, 1 epoch, fp32. A change that alters training numerics fails
`test_the_canary_reruns_bit_for_bit` the day it lands. If a change is *meant* to alter them, say so in its commit
and regenerate the canary with the command in `CANARY_COMMAND` (then copy ``run/result.json`` here).

fp32 is bitwise only within one CPU kind: AVX512 kernels block float sums differently from AVX2 ones (the AVX2
canary rerun on an AVX512 machine: 1 of 64 predictions and the epoch-1 history differ; pinning ATen, MKL and
oneDNN to AVX2 there does not restore it), and within one kind only on the same SIMD extensions (an AVX512 canary
rerun on an AVX512 CPU with AMX and AVX512-FP16: the same predictions, a gate's value 1e-9 apart). So a canary is
named by the features of the CPU that made it, ``canary/<cpu_features>/result.json``; a kind's folder
(``canary/AVX2``: every AVX2 machine this project has had reran it bit for bit) stands in where none is. The canary
tests rerun this machine's; on a machine without one they skip and say how to make it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import pytest

from peftbench import verify
from peftbench.run import rerun
from peftbench.run.precision import cpu_features, cpu_isa
from peftbench.run.verify import sample

CANARIES = Path(__file__).resolve().parent / "data" / "canary"
#: this CPU's canary (the one to rerun: its features', else its kind's), and one of any kind (for the tests that
#: only read a record)
CANARY_HERE = next((p for p in (CANARIES / cpu_features() / "result.json", CANARIES / cpu_isa() / "result.json")
                    if p.is_file()), CANARIES / cpu_features() / "result.json")  # fmt: skip
CANARY = CANARIES / "AVX2" / "result.json"
CANARY_COMMAND = ("python -m peftbench method=mam model=tiny_bert task=stsb data.max_train_samples=128 data.held_out=32 "
                  "data.max_eval_samples=64 train.epochs=1 train.mixed_precision=no train.progress=false "
                  "train.inference_batches=0 save=none train.checkpoint=false resume=false sweep=canary "
                  "results_root=/tmp/canary hydra.run.dir=/tmp/canary/run")


def run_main(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = verify.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


@pytest.fixture(scope="module")
def canary_rerun(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> dict:
    """One rerun of this CPU kind's canary through ``python -m peftbench`` (kept: the record the other tests
    compare with)."""
    if not CANARY_HERE.is_file():
        pytest.skip(f"no canary for this CPU ({cpu_features()}): run CANARY_COMMAND and copy its run/result.json to "
                    f"{CANARY_HERE}")
    keep = tmp_path_factory.mktemp("verify")
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setenv("PEFTBENCH_GLUE_DIR", str(glue_dir))
        code = verify.main(["--records", str(CANARY_HERE), "--keep", str(keep), "--set",
                            f"data.cache_dir={keep / 'cache'}"])
    (record,) = keep.glob("*/run/result.json")
    log = next(keep.glob("*/rerun.log")).read_text()
    return {"code": code, "lines": out.getvalue().splitlines(), "stderr": err.getvalue(),
            "record": json.loads(record.read_text()), "log": log}


@pytest.mark.slow
def test_the_canary_reruns_bit_for_bit(canary_rerun):
    result_lines = canary_rerun["lines"]
    assert canary_rerun["code"] == 0, "\n".join(result_lines) + "\n" + canary_rerun["log"][-3000:]
    assert result_lines[0].startswith(str(CANARY_HERE)) and result_lines[0].endswith("identical"), result_lines
    assert "1 identical, 0 differ" in result_lines[-1]
    committed, rerun = json.loads(CANARY_HERE.read_text()), canary_rerun["record"]
    assert rerun["predictions"] == committed["predictions"]
    assert rerun["history"] == committed["history"] and rerun["score"] == committed["score"]
    # through the command every run goes through, with exactly the recorded config (its run key)
    assert rerun["run_key"] == committed["run_key"] and rerun["mixed_precision"] == "no"
    assert " -m peftbench " in canary_rerun["log"].splitlines()[0]


@pytest.mark.slow
def test_an_altered_prediction_or_history_is_reported_as_differing(canary_rerun, tmp_path, monkeypatch, capsys):
    committed = json.loads(CANARY_HERE.read_text())
    altered = copy.deepcopy(committed)
    altered["predictions"]["validation"]["predictions"][5] += 1e-6  # one row, one unit in the 7th digit
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "result.json").write_text(json.dumps(altered))
    history = copy.deepcopy(committed)
    history["history"][0]["train_loss"] = history["history"][0]["train_loss"] * (1 + 1e-12)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "result.json").write_text(json.dumps(history))
    monkeypatch.setattr(verify, "rerun", lambda plan, folder: copy.deepcopy(canary_rerun["record"]))
    code, out, err = run_main(capsys, "--records", tmp_path / "a", tmp_path / "b")
    assert code == 1
    assert "1 of 64 predictions differ" in out[0] and "first differing epoch" not in out[0], out
    assert "0 of 64 predictions differ, first differing epoch 1" in out[1], out
    assert out[-1].endswith("0 identical, 2 differ")


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    for argv, expected in (
        ([tmp_path / "missing"], "is not a directory"),
        ([tmp_path], "no completed result.json records"),
        ([], "give a DIR of records or --records"),
        (["--records", tmp_path / "nothing"], "no record at"),
        ([tmp_path, "--sample", "0"], "--sample 0"),
        (["--records", CANARY, "--set", "train.lr=1"], "only keys that do not change what a run computes"),
        (["--bogus"], "unrecognized arguments"),
    ):
        code, out, err = run_main(capsys, *argv)
        assert code == 2 and len(err) == 1 and err[0].startswith("peftbench.verify: error: "), (argv, err)
        assert expected in err[0], (argv, err)
        assert out == []


def test_a_bf16_record_is_refused_on_a_cpu_without_native_bf16(tmp_path, monkeypatch, capsys):
    record = json.loads(CANARY.read_text())
    record["mixed_precision"] = "bf16"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps(record))
    monkeypatch.setattr("peftbench.run.precision.cpu_supports_bf16", lambda: False)
    code, out, err = run_main(capsys, "--records", tmp_path / "run")
    assert code == 2 and len(err) == 1 and "this CPU has no native bf16" in err[0], err
    # in a sample it is passed over with a line; with nothing else left, that is bad input too
    code, out, err = run_main(capsys, tmp_path)
    assert code == 2 and "none of the 1 completed records" in err[0] and "no native bf16" in err[0], err


def test_the_sample_is_deterministic_and_spread_over_methods():
    records = [(Path(f"{m}/{i}/result.json"), {"method": m}) for m in ("lora", "mam", "full") for i in range(5)]
    picked = sample(records, 4, seed=1)
    assert picked == sample(records, 4, seed=1)
    methods = [r["method"] for _, r in picked]
    assert sorted(methods[:3]) == ["full", "lora", "mam"] and len(set(methods)) == 3
    assert len({tuple(p for p, _ in sample(records, 4, seed=s)) for s in range(5)}) > 1
    assert len(sample(records, 99, seed=0)) == 15


def test_a_recorded_config_becomes_overrides_that_compose_it():
    """Slots added and removed, a quoted string, a model config entry: the plan composes the record's run key."""
    record = json.loads(CANARY.read_text())
    config = record["config"]
    config["method"]["name"] = "custom_arm"  # no such YAML: composed from the default method's
    config["method"]["modules"]["extra"] = {**config["method"]["modules"]["ffn"], "r": 4, "representation": ["attn"]}
    config["task"]["template"] = "{sentence1} isn't \\ ${sentence2}? {mask}"
    config["model"]["config"]["hidden_dropout_prob"] = 0.2
    plan = rerun.plan(record)
    from peftbench.run.config import as_plain, compose
    from peftbench.run.record import record_key

    assert plan.key == record_key(record) and plan.precision == "no"
    composed = as_plain(compose(plan.overrides))
    assert composed["task"]["template"] == config["task"]["template"]
    # the record predates issue 29's module fields: they compose at their defaults, everything recorded as recorded
    from dataclasses import fields

    from peftbench.space.spec import ModuleSpec

    defaults = {f.name: f.default for f in fields(ModuleSpec)}
    assert composed["method"]["modules"].keys() == config["method"]["modules"].keys()
    for slot, recorded in config["method"]["modules"].items():
        got = composed["method"]["modules"][slot]
        assert {k: got[k] for k in recorded} == recorded, slot
        added = set(got) - set(recorded)
        assert added == {"scale_rule", "magnitude", "projections", "projection_key"}, added
        assert {k: got[k] for k in added} == {k: defaults[k] for k in added}
    assert "train.mixed_precision='no'" in plan.overrides and "resume=false" in plan.overrides
    assert "train.checkpoint=false" in plan.overrides and "train.inference_batches=0" in plan.overrides
    assert any(o.startswith("+method.modules.extra=") for o in plan.overrides)
    assert "+model.config.hidden_dropout_prob=0.2" in plan.overrides


def test_a_difference_across_cpu_kinds_says_so():
    """A record of one CPU kind rerun on another: the difference is reported, with the two kinds, since fp32 is
    bitwise only within one; within one kind, or with identical results, no such note."""
    from peftbench.run.verify import compare

    committed = json.loads(CANARY.read_text())
    assert committed["cpu_isa"] == "AVX2"
    rerun_elsewhere = copy.deepcopy(committed) | {"cpu_isa": "AVX512"}
    rerun_elsewhere["predictions"]["validation"]["predictions"][0] += 1e-6
    outcome = compare(committed, rerun_elsewhere)
    assert not outcome.identical and outcome.differing == 1
    assert "computed on AVX2, rerun on AVX512: fp32 is bitwise only within one CPU kind" in outcome.notes
    same_kind = copy.deepcopy(rerun_elsewhere) | {"cpu_isa": "AVX2"}
    assert not any("CPU kind" in n for n in compare(committed, same_kind).notes)
    assert compare(committed, copy.deepcopy(committed) | {"cpu_isa": "AVX512"}).identical
    unrecorded = {k: v for k, v in committed.items() if k != "cpu_isa"}
    assert "computed on a CPU kind it does not record, rerun on AVX512" in compare(unrecorded, rerun_elsewhere).notes[0]
    # one kind, other SIMD extensions (`cpu_features`, recorded since 2026-12-07): said too, an older record included
    other_features = same_kind | {"cpu_features": "AVX2-bbbbbbbb"}
    assert compare(committed | {"cpu_features": "AVX2-aaaaaaaa"}, other_features).notes == [
        "computed on AVX2-aaaaaaaa, rerun on AVX2-bbbbbbbb: within one kind, other SIMD extensions may change the "
        "last digits"]
    assert "computed on CPU features it does not record" in compare(committed, other_features).notes[0]
    assert compare(committed | {"cpu_features": "AVX2-bbbbbbbb"}, other_features).notes == []
