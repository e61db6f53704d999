"""Shared fixtures: tiny randomly initialised BERT and RoBERTa (no download), and the GLUE folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")



@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps one process-wide state: a test's Accelerator(mixed_precision=...) must not meet the one an
    earlier test made (a training run makes exactly one per process). As accelerate's own test case does."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=1000,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_model(arch: str, seed: int = 0, num_labels: int = 2) -> torch.nn.Module:
    torch.manual_seed(seed)
    if arch == "bert":
        model = BertForSequenceClassification(BertConfig(**TINY, num_labels=num_labels))
    else:
        model = RobertaForSequenceClassification(
            RobertaConfig(**TINY, num_labels=num_labels, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
        )
    return model.eval()


def tiny_batch(seed: int = 0, batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    """Token ids with a padded row (row 1 ends at 8) and a [SEP]-like id 102 in every row for infix prompts."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (batch, length), generator=g)
    ids[ids == 102] = 103
    ids[:, 5] = 102
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(params=["bert", "roberta"])
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    path = Path(os.environ.get("PEFTBENCH_GLUE_DIR", ROOT.parent / "shared" / "glue"))
    if not (path / "SST-2" / "train.tsv").exists():
        pytest.skip(f"GLUE data not found at {path} (set PEFTBENCH_GLUE_DIR)")
    return path
