"""Batch order: grouped training batches cover every row once per epoch, reproducibly, with little padding;
evaluation in length order gives the predictions of dataset order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from datasets import Dataset
from torch.utils.data import DataLoader

from peftbench.run.batching import length_sorted_order, padding_ratio, row_lengths, train_sampler
from peftbench.run.evaluate import eval_split, predict
from tests.conftest import tiny_model

BATCH = 32


def skewed_lengths(n: int = 5000, seed: int = 0) -> list[int]:
    """Sentence lengths shaped like SST-2's train set (many short phrases, a long tail)."""
    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(2.3, 0.8, n), 3, 66).round()]


def epochs(sampler, n: int) -> list[list[int]]:
    return [list(sampler) for _ in range(n)]


@pytest.mark.parametrize("grouped", [True, False])
def test_every_row_once_per_epoch_and_epochs_differ(grouped):
    lengths = skewed_lengths(2000)
    orders = epochs(train_sampler(lengths, BATCH, seed=3, group_by_length=grouped), 3)
    for order in orders:
        assert sorted(order) == list(range(len(lengths)))
    assert orders[0] != orders[1] != orders[2]


@pytest.mark.parametrize("grouped", [True, False])
def test_same_seed_same_order_other_seed_other_order(grouped):
    lengths = skewed_lengths(2000)
    a = epochs(train_sampler(lengths, BATCH, seed=7, group_by_length=grouped), 2)
    b = epochs(train_sampler(lengths, BATCH, seed=7, group_by_length=grouped), 2)
    c = epochs(train_sampler(lengths, BATCH, seed=8, group_by_length=grouped), 2)
    assert a == b and a != c


def test_grouped_batches_have_small_length_spread():
    lengths = skewed_lengths(5000)
    grouped = list(train_sampler(lengths, BATCH, seed=0, group_by_length=True))
    shuffled = list(train_sampler(lengths, BATCH, seed=0, group_by_length=False))
    assert padding_ratio(lengths, grouped, BATCH) < 1.1
    assert padding_ratio(lengths, shuffled, BATCH) > 1.5
    spreads = [np.ptp(np.asarray(lengths)[grouped[i:i + BATCH]]) for i in range(0, len(grouped), BATCH)]
    assert np.median(spreads) <= 1
    maxes = [max(np.asarray(lengths)[grouped[i:i + BATCH]]) for i in range(0, 50 * BATCH, BATCH)]
    assert maxes != sorted(maxes, reverse=True)  # batches come in random order, not long to short


def test_random_batches_are_the_old_default_order():
    """group_by_length=false gives exactly what DataLoader(shuffle=True) with the seeded generator gave."""
    lengths = skewed_lengths(500)
    old = DataLoader(range(500), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(5))
    sampler = train_sampler(lengths, BATCH, 5, group_by_length=False)
    new = DataLoader(range(500), batch_size=BATCH, sampler=sampler, generator=sampler.generator)
    for _ in range(2):
        assert [b.tolist() for b in old] == [b.tolist() for b in new]


def test_padding_ratio_counts_tokens_processed_over_real_tokens():
    lengths = [1, 3, 2, 2]
    assert padding_ratio(lengths, [0, 1, 2, 3], 2) == pytest.approx((3 * 2 + 2 * 2) / 8)
    assert padding_ratio(lengths, [1, 2, 3, 0], 3) == pytest.approx((3 * 3 + 1) / 8)
    assert list(length_sorted_order([2, 5, 2, 9])) == [3, 1, 0, 2]


def test_length_sorted_evaluation_returns_predictions_in_dataset_order():
    from tokenizers import Tokenizer, models
    from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, "[UNK]")),
                                  pad_token="[PAD]")
    rng = np.random.default_rng(0)
    rows = [rng.integers(5, 1000, rng.integers(2, 20)).tolist() for _ in range(45)]
    ds = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows],
                            "labels": rng.integers(0, 2, len(rows)).tolist()})
    model = tiny_model("bert")
    split = eval_split("validation", ds, 8, DataCollatorWithPadding(tok))
    assert row_lengths(ds) != sorted(row_lengths(ds), reverse=True)  # the sorted order really differs
    predictions, references = predict(model, split, Accelerator(cpu=True), "sst2")
    with torch.no_grad():
        expected = [int(model(input_ids=torch.tensor([r])).logits.argmax(-1)) for r in rows]
    assert predictions.tolist() == expected
    assert references.tolist() == ds["labels"]
