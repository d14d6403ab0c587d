"""Shared fixtures: free ports, the small real model, and the corpus split."""

from __future__ import annotations

import os

import pytest

from icd.io import ports

pytest_plugins = ["tests.fixtures.triton", "tests.fixtures.prometheus"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _free_port() -> int:
    return ports.free_port()


@pytest.fixture
def free_port():
    """A function returning a currently free TCP port on 127.0.0.1."""
    return _free_port


@pytest.fixture(scope="session")
def minilm_encoder():
    """The real all-MiniLM-L6-v2 encoder (embedding task), fp32, eval mode. Do not mutate: deep-copy first."""
    from icd.config.schema import ModelSection
    from icd.model.loader import load_encoder

    return load_encoder(ModelSection())


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from icd.config.schema import ModelSection
    from icd.model.loader import load_tokenizer

    return load_tokenizer(ModelSection())


@pytest.fixture(scope="session")
def corpus_split():
    """64 calibration and 32 held-out stdlib docstrings (small for 2 cores)."""
    from icd.data.corpus import load_split

    return load_split(64, 32, seed=0)
