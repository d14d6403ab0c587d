"""Fixtures of the int8 tests (tests/transforms/test_int8*.py): a token batch and a small calibration context."""

from __future__ import annotations

import pytest
import torch

from icd.transforms.api import TransformContext


@pytest.fixture(scope="module")
def batch():
    """Four random token rows of 16, one of them padded from position 10."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (4, 16), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    return ids, mask


@pytest.fixture
def context(minilm_tokenizer, corpus_split):
    """16 calibration docstrings, MiniLM's tokenizer, batches of 8 at 32 tokens."""
    return TransformContext(tokenizer=minilm_tokenizer, calibration_texts=corpus_split.calibration[:16], batch_size=8,
                            max_length=32)
