"""Batch order: length-grouped training batches and length-sorted evaluation, so little compute goes to padding.

Batches are padded to their longest row, so random batches of GLUE sentences make the model process 1.5–3× the
real tokens (SST-2 3.0×, RTE 2.6×, MRPC 1.5× with MiniLM's tokenizer). Training batches are length-grouped:
transformers' ``get_length_grouped_indices`` (the order behind its ``LengthGroupedSampler``) cuts a seeded random
permutation into megabatches of 50 batches and sorts each by length; we then shuffle the batches. So a batch
holds rows of similar length, batches come in random order (not long-to-short within each megabatch), and every
epoch sees every example exactly once in a new order that the seed fixes. (``LengthGroupedSampler`` itself
shrinks megabatches to a quarter of a small training set, which left 1.25× padding on 1,350 SST-2 rows.)
Evaluation has no order to keep random: rows go through sorted by length and predictions are put back in
dataset order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler


def row_lengths(dataset) -> list[int]:
    """The token count of each row (the length of its ``input_ids``)."""
    return [len(ids) for ids in dataset["input_ids"]]


def train_sampler(lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool = True) -> Sampler:
    """The order of one run's training rows: length-grouped megabatches, or a plain random permutation.

    Both draw from a generator seeded by ``seed`` and advance it every epoch, so epochs differ and a rerun with
    the same seed repeats every epoch's order.
    """
    generator = torch.Generator().manual_seed(seed)
    if not group_by_length:
        return RandomSampler(range(len(lengths)), generator=generator)
    return LengthGroupedBatches(lengths, batch_size, generator)


class LengthGroupedBatches(Sampler):
    """Row indices in batches of similar length: shuffled megabatches of ``megabatch`` batches, each sorted by
    length (transformers' ``get_length_grouped_indices``), then the full batches in a random order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                 megabatch: int = 50) -> None:
        self.lengths, self.batch_size, self.generator, self.megabatch = list(lengths), batch_size, generator, megabatch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        order = get_length_grouped_indices(self.lengths, self.batch_size, self.megabatch, self.generator)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        # The one short batch (the end of the last megabatch) stays last: the DataLoader cuts this stream into
        # batch_size rows again, and a short batch in the middle would shift every later batch's boundaries.
        full = len(order) // self.batch_size
        for b in [*torch.randperm(full, generator=self.generator).tolist(), *range(full, len(batches))]:
            yield from batches[b]


def length_sorted_order(lengths: Sequence[int]) -> np.ndarray:
    """Row indices from the longest to the shortest (stable), for evaluation batches of similar lengths."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def padding_ratio(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """Tokens processed / real tokens when the rows are batched in ``order`` and padded to each batch's longest."""
    lengths = np.asarray(lengths)[np.asarray(order)]
    padded = sum(int(chunk.max()) * len(chunk) for chunk in np.array_split(
        lengths, range(batch_size, len(lengths), batch_size)) if len(chunk))
    return padded / max(int(lengths.sum()), 1)
