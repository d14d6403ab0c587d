"""What ``icd profile`` times by default: held-out texts padded as clients send them, cut as the server runs them."""

from __future__ import annotations

import pytest
import torch

from icd.config.schema import ModelSection
from icd.model.loader import load_tokenizer
from icd.runtimes.profile import TIMING_BATCHES, served_workload

TEXTS = ["Return the sum.", "Open the file and read every line of it into a list of strings, keeping newlines.",
         "x", "Compute the greatest common divisor of the two integers a and b.", "Close.",
         "Parse a date string such as 2024-01-01 into a date object."] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelSection())


def test_texts_padded_as_sent_then_trimmed_to_a_multiple_of_8_as_served(tokenizer):
    work = served_workload(tokenizer, TEXTS, batch_size=4, seq_len=64)
    assert len(work.batches) == TIMING_BATCHES
    assert sum(ids.shape[0] for ids, _ in work.batches) == 4 * TIMING_BATCHES
    for ids, mask in work.batches:
        assert ids.dtype == torch.int64 and ids.shape == mask.shape
        assert ids.shape[1] % 8 == 0 and ids.shape[1] < 64
        assert mask[:, -8:].sum() > 0  # only padding was cut: the last block run still holds a real token
    assert work.mean_tokens_run < 64 and "trimmed to a multiple of 8" in work.how


def test_only_full_batches_are_timed_unless_there_are_fewer_texts_than_one(tokenizer):
    work = served_workload(tokenizer, TEXTS[:9], batch_size=4, seq_len=32)
    assert [ids.shape[0] for ids, _ in work.batches] == [4, 4]
    work = served_workload(tokenizer, TEXTS[:3], batch_size=4, seq_len=32)
    assert [ids.shape[0] for ids, _ in work.batches] == [3]
