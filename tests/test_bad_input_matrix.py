"""The bad-input matrix (issue 10, point 5): each bad input, given on the command line as a user would, ends in one
error line that names what was wrong (and what is valid, where there is a list), a non-zero exit, and never a
record that looks completed. Exit 2: refused before any run. Exit 1: a run started and failed (its record says
``failed``). A full disk when writing the record is simulated in-process: ``test_bad_input.py``
(``test_a_record_that_cannot_be_written_fails_the_run``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
RUN = ["model=tiny_bert", "data.max_train_samples=64", "data.held_out=16", "train.epochs=1", "train.progress=false"]


def sst2(rows: int = 80) -> Callable[[Path], None]:
    """A GLUE folder whose SST-2 holds the first `rows` examples of the real one (train and dev)."""

    def make(glue: Path, shared: Path) -> None:
        (glue / "SST-2").mkdir(parents=True)
        for split in ("train.tsv", "dev.tsv"):
            lines = (shared / "SST-2" / split).read_text(encoding="utf-8").splitlines(keepends=True)
            (glue / "SST-2" / split).write_text("".join(lines[: rows + 1]), encoding="utf-8")

    return make


def broken_train(content: bytes) -> Callable[[Path, Path], None]:
    def make(glue: Path, shared: Path) -> None:
        sst2()(glue, shared)
        (glue / "SST-2" / "train.tsv").write_bytes(content)

    return make


def edited_train(edit: Callable[[str], str]) -> Callable[[Path, Path], None]:
    def make(glue: Path, shared: Path) -> None:
        sst2()(glue, shared)
        path = glue / "SST-2" / "train.tsv"
        path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")

    return make


def truncate_row(text: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[5] = lines[5].split("\t")[0] + "\n"  # the label field is missing
    return "".join(lines)


def out_of_range_label(text: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\t7\n"
    return "".join(lines)


#: (case id, command-line arguments, how to build the GLUE folder (None: the real one), exit code, needle)
CASES = [
    ("unknown method", ["method=nosuch"], None, 2, "Could not find 'method/nosuch'; valid: adapter, bitfit"),
    ("unknown task", ["task=nosuch"], None, 2, "Could not find 'task/nosuch'; valid: cola, mnli"),
    ("unknown model", ["model=nosuch"], None, 2, "Could not find 'model/nosuch'; valid: bert_base"),
    ("unknown key", ["train.nosuchkey=1"], None, 2, "unknown key 'train.nosuchkey'; valid keys of train (TrainSpec): epochs"),
    ("unknown added key", ["+nosuch=1"], None, 2, "unknown key 'nosuch'; valid top-level keys: method, model"),
    ("wrong type", ["train.epochs=abc"], None, 2, "train.epochs=abc; Value 'abc' of type 'str' could not be converted"),
    ("wrong seed type", ["seed=abc"], None, 2, "seed=abc; Value 'abc' of type 'str' could not be converted"),
    ("negative seed", ["seed=-1"], None, 2, "seed=-1 must lie in [0, 2**32)"),
    ("zero epochs", ["train.epochs=0"], None, 2, "train.epochs=0 must be >= 1"),
    ("negative batch", ["train.batch_size=-3"], None, 2, "train.batch_size=-3 must be >= 1"),
    ("zero lr", ["train.lr=0"], None, 2, "train.lr=0.0 must be > 0"),
    ("negative lr scale", ["train.lr_scale=-1"], None, 2, "train.lr_scale=-1.0 must be > 0"),
    ("held_out out of range", ["data.held_out=1.5"], None, 2, "data.held_out=1.5 is not valid; valid: a fraction"),
    ("zero samples", ["data.max_train_samples=0"], None, 2, "data.max_train_samples=0 must be >= 1"),
    ("zero rank", ["method.modules.attn.r=0"], None, 2, "method.modules.attn.r=0 must be a positive"),
    ("prefix on the FFN", ["method=prefix", "method.modules.attn.representation=[ffn]"], None, 2,
     "form=prefix modifies attention heads; representation must be [attn_heads]"),
    ("layers beyond the model", ["method.modules.attn.layers=top:99"], None, 2,
     "asks for 99 layers, but model tiny_bert has layers 0..1"),
    ("bad value inside a sweep", ["-m", "method=lora,nosuch"], None, 2, "Could not find 'method/nosuch'; valid:"),
    ("results_root is a file", ["-m", "seed=0", "results_root=FILE"], None, 2, "results_root='FILE' is not a directory"),
    ("results_root under a file", ["-m", "seed=0", "results_root=FILE/sub"], None, 2,
     "results_root='FILE/sub' cannot be created"),
    ("missing GLUE folder", ["data.glue_dir=missing"], None, 1, "missing"),
    ("empty TSV", [], broken_train(b""), 1, "SST-2/train.tsv: empty file, expected a header line"),
    ("header-only TSV", [], broken_train(b"sentence\tlabel\n"), 1, "SST-2/train.tsv: no data rows after the header"),
    ("wrong header", [], broken_train(b"text\tscore\nnice\t1\n"), 1, "SST-2/train.tsv"),
    ("binary TSV", [], broken_train(b"sentence\tlabel\n\x89PNG\x00\xff\t1\n"), 1, "SST-2/train.tsv:2: byte"),
    ("truncated row", [], edited_train(truncate_row), 1, "SST-2/train.tsv:6"),
    ("label out of range", [], edited_train(out_of_range_label), 1, "SST-2/train.tsv:4"),
    ("NaN loss", ["train.lr=1e6", "method=full"], sst2(), 1, "is nan"),
    ("unknown head", ["method.head=mlp"], None, 2, "method.head='mlp' is not valid; valid values: linear, verbalizer"),
    ("verbalizer on a regression task", ["task=stsb", "method.head=verbalizer"], None, 2,
     "task stsb is a regression task; head=verbalizer needs classes"),
    ("template without its mask", ["method.head=verbalizer", "task.template='{sentence} It was'"], None, 2,
     "names ['sentence']; it must name each of {mask}, {sentence} exactly once"),
    ("label words per label", ["method.head=verbalizer", "task.label_words=[great]"], None, 2,
     "gives 1 words for 2 labels"),
    ("word init without words", ["method=prefix", "method.modules.attn.init=words"], None, 2,
     "init=words starts a prefix from the frozen model's keys/values"),
    ("verbalizer without an LM head", ["model=minilm", "method.head=verbalizer"], None, 2,
     "model minilm has no pretrained LM head (its weights are BertModel); head=verbalizer needs one"),
    # issue 26: hostile input, round two
    ("typo'd key added with +", ["+train.epoch=5"], None, 2,
     "unknown key 'train.epoch'; valid keys of train: epochs, batch_size"),
    ("unknown key added with + to a section", ["+train.nosuch=1"], None, 2, "unknown key 'train.nosuch'"),
    ("max_length beyond the positions", ["task.max_length=100000"], None, 2,
     "task.max_length=100000 tokens per input, but model tiny_bert has 512 positions (max_position_embeddings=512)"),
    ("prompt beyond the positions", ["method=prompt", "method.prompt.length=600"], None, 2,
     "task.max_length=128 + method.prompt.length=600 = 728 tokens per input, but model tiny_bert has 512 positions"),
    ("results_root through a symlink loop", ["-m", "seed=0", "results_root=LOOP/sub"], None, 2,
     "results_root='LOOP/sub' cannot be checked: Too many levels of symbolic links"),
    ("a sweep without -m", ["seed=0,0"], None, 2, "seed=0,0 gives several values, which only a sweep runs: add -m"),
    ("a method name too long for a folder", ["-m", "seed=0", "method.name=" + "x" * 300], None, 2,
     "cannot be created: its folder name 0_xxxx"),
    ("hydra.run.dir that cannot be created", ["hydra.run.dir=FILE/run"], None, 2,
     "hydra.run.dir='FILE/run' cannot be created"),
    ("hydra.sweep.dir that cannot be created", ["-m", "seed=0", "hydra.sweep.dir=FILE/sweep"], None, 2,
     "hydra.sweep.dir='FILE/sweep' cannot be created"),
    ("results_root under a file, single run", ["results_root=FILE/sub"], None, 2,
     "results_root='FILE/sub' cannot be created: "),
    ("unquoted non-ASCII value", ["task.label_words=[schlecht,großartig]"], None, 2,
     "quote the value, e.g. \"task.label_words=[schlecht,'großartig']\""),
    ("a span of layers beyond the model", ["method.modules.attn.layers=0-3"], None, 2,
     "layers='0-3' names layer(s) [2, 3], but model tiny_bert has layers 0..1"),
    ("GLUE folder that is a file", ["data=local", "data.glue_dir=FILE"], None, 1, "FILE is a file, not a folder"),
    ("train.tsv that is a directory", ["data=local"], lambda glue, shared: (glue / "SST-2" / "train.tsv").mkdir(
        parents=True), 1, "needs the file"),
]


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`python -m peftbench ARGV` for a command line refused before any run: `main` exits in validation, before
    Hydra starts, exactly as in a subprocess (a tenth of the time)."""
    import peftbench.__main__ as cli

    old = sys.argv
    sys.argv = ["peftbench", *argv]
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main()
    finally:
        sys.argv = old
    return int(exit_.value.code), capsys.readouterr().err


@pytest.mark.parametrize(("args", "glue", "code", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(
    tmp_path: Path, glue_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], glue, code: int, needle: str,
) -> None:  # fmt: skip
    (tmp_path / "FILE").write_text("")
    (tmp_path / "LOOP").symlink_to("LOOP")  # a symlink to itself: any path through it fails with ELOOP
    data = [f"data.cache_dir={tmp_path / 'cache'}"]
    if glue is not None:
        glue(tmp_path / "glue", glue_dir)
        data.append(f"data.glue_dir={tmp_path / 'glue'}")
    single = [] if "-m" in args or any(a.startswith("hydra.run.dir=") for a in args) else ["hydra.run.dir=run"]
    run = [a for a in RUN if not (a.startswith("model=") and any(b.startswith("model=") for b in args))]
    argv = [*run, *data, *single, *args]
    if "-m" not in args and not any(a.startswith("results_root=") for a in args):
        argv.append("results_root=runs")
    monkeypatch.chdir(tmp_path)
    if code == 2:
        returncode, stderr = run_in_process(argv, capsys)
    else:  # a run starts: in its own process, as a user runs it
        env = {**os.environ, "PEFTBENCH_GLUE_DIR": str(glue_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
        out = subprocess.run([sys.executable, "-m", "peftbench", *argv], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        returncode, stderr = out.returncode, out.stderr
    assert returncode == code, (returncode, stderr[-3000:])
    errors = [line for line in stderr.splitlines() if line.startswith("peftbench: error:")]
    assert errors and needle in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr
    records = [json.loads(p.read_text()) for p in tmp_path.rglob("result.json")]
    assert not [r for r in records if r["status"] == "completed"]
    if code == 2:
        assert not records  # refused before any run
    else:
        assert [r["status"] for r in records] == ["failed"] and needle in records[0]["error"]
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
