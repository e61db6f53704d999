"""Tokenisation of the GLUE splits, cached on disk: a sweep tokenises each task once per tokenizer and length.

`tokenize_glue` tokenises one sentence or a pair (or, for the verbalizer head, the example written into its
template), truncated and not padded; `tokenized_cache_path` is its cache key; `make_collator` pads each batch to its
longest row. Nothing here imports torch or transformers at module level.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import DatasetDict

from peftbench.run.data import absolute_path
from peftbench.run.tasks import DataError, get_task

if TYPE_CHECKING:
    from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase


logger = logging.getLogger(__name__)
DEFAULT_CACHE_DIR = Path("~/.cache/peftbench/tokenized")
_CACHE_VERSION = 1  # bump when tokenisation changes what it stores


# ------------------------------------------------------------------------------------------ tokenisation


def tokenized_cache_path(
    dsd: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    max_length: int = 128,
    cache_dir: str | os.PathLike | None = None,
    template: Any = None,
) -> Path:
    """Where `tokenize_glue` stores (or finds) this tokenisation.

    The key hashes the task, each split's fingerprint and size (for local data: the file's content hash,
    updated by every seeded select/split), the tokenizer's class, name_or_path, vocabulary size and
    truncation side, `max_length`, and the verbalizer template if any.
    """
    info = get_task(task)
    key = {
        "version": _CACHE_VERSION,
        "task": info.name,
        "max_length": int(max_length),
        # datasets has no public accessor for the fingerprint; `_fingerprint` is what its own caching uses.
        "splits": {name: [ds._fingerprint, ds.num_rows] for name, ds in sorted(dsd.items())},
        "tokenizer": [
            f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
            str(tokenizer.name_or_path),
            len(tokenizer),
            getattr(tokenizer, "truncation_side", "right"),
        ],
    }
    if template is not None:  # (absent otherwise, so existing caches keep their keys)
        key["template"] = template.key
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    root = absolute_path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR.expanduser()
    return root / f"{info.name}-{digest}"


def tokenize_glue(
    dsd: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    max_length: int = 128,
    cache_dir: str | os.PathLike | None = None,
    template: Any = None,
) -> DatasetDict:
    """Tokenise every split (one sentence or a pair, truncated to `max_length`, not padded), cached on disk.

    With `template` (a `peftbench.space.verbalizer.Template`) each example is written into the template as one
    sequence, cut in its text, never in the template (`peftbench.space.verbalizer.encode`).

    Returns `input_ids`, `attention_mask`, `token_type_ids` (when the tokenizer makes them) and `labels`;
    the text columns and `idx` are dropped (rows keep their order, so `dsd[split]["idx"]` still applies).
    A second call with the same data, tokenizer and `max_length` loads from `tokenized_cache_path(...)`
    without tokenising (it logs "cache hit"). Pad per batch with `make_collator`.
    """
    info = get_task(task)
    for name, ds in dsd.items():
        missing = [c for c in (*info.text_fields, "label") if c not in ds.column_names]
        if missing:
            raise DataError(f"{info.name}/{name}: missing column(s) {missing}; it has {ds.column_names}")
    path = tokenized_cache_path(dsd, tokenizer, info.name, max_length, cache_dir, template)
    if (path / "dataset_dict.json").is_file():
        logger.info("tokenised %s: cache hit %s", info.name, path)
        return DatasetDict.load_from_disk(str(path))

    logger.info("tokenising %s (max_length=%d) into %s", info.name, max_length, path)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        if template is not None:
            from peftbench.space.verbalizer import encode as encode_template

            return encode_template(template, tokenizer, batch, max_length)
        texts = [batch[field] for field in info.text_fields]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    out = DatasetDict()
    for name, ds in dsd.items():
        drop = [c for c in ds.column_names if c != "label"]
        # An explicit fingerprint spares datasets from pickling the tokenizer to hash `encode`.
        tokenised = ds.map(
            encode, batched=True, remove_columns=drop, new_fingerprint=f"{path.name}-{name}",
            desc=f"tokenise {info.name}/{name}",
        )  # fmt: skip
        out[name] = tokenised.rename_column("label", "labels")

    # Write to a private folder, then rename: concurrent runs of a sweep never see a half-written cache.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    out.save_to_disk(str(tmp))
    try:
        os.replace(tmp, path)
    except OSError:  # another process stored the same key first
        shutil.rmtree(tmp, ignore_errors=True)
    return DatasetDict.load_from_disk(str(path))


def make_collator(
    tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None
) -> DataCollatorWithPadding:
    """transformers' `DataCollatorWithPadding`: pads each batch to its longest example."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
