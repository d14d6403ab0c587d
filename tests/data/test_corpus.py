"""The docstring corpus: sources, dedup, hash split, determinism, pinned versions, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from icd.data import corpus
from icd.data.corpus import DEFAULT_SOURCES, load_split, resolve_source
from icd.errors import ConfigError


def test_split_is_disjoint_and_deterministic():
    a = load_split(512, 256, seed=0)
    b = load_split(512, 256, seed=0)
    assert a == b
    assert not set(a.calibration) & set(a.heldout)
    assert len(set(a.heldout)) == 256
    assert [s.split("==")[0] for s in a.sources] == list(DEFAULT_SOURCES)
    assert all("==" in s for s in a.sources)


def test_packages_add_text_and_every_text_keeps_its_side():
    stdlib = load_split(0, 0, sources=["stdlib"])
    full = load_split(0, 0)
    assert full.pool_sizes["calibration"] > 2 * stdlib.pool_sizes["calibration"]
    assert full.pool_sizes["heldout"] > 2 * stdlib.pool_sizes["heldout"]
    _, full_pool = corpus.corpus_pool()
    assert len(full_pool) == len(set(full_pool))  # deduplicated
    whole_stdlib = load_split(stdlib.pool_sizes["calibration"], stdlib.pool_sizes["heldout"], sources=["stdlib"])
    whole = load_split(full.pool_sizes["calibration"], full.pool_sizes["heldout"])
    assert set(whole_stdlib.calibration) <= set(whole.calibration)  # adding sources moves no text across
    assert set(whole_stdlib.heldout) <= set(whole.heldout)
    assert not set(whole.calibration) & set(whole.heldout)


@pytest.mark.parametrize("source", ["sympy", "matplotlib", "scikit-learn"])
def test_opt_in_sources_add_text_and_move_none_across(source):
    alone = load_split(0, 0, sources=[source])
    assert alone.sources[0].startswith(f"{source}==")
    assert alone.pool_sizes["calibration"] > 100 and alone.pool_sizes["heldout"] > 10
    default = load_split(0, 0)
    more = load_split(0, 0, sources=[*DEFAULT_SOURCES, source])
    assert more.pool_sizes["calibration"] > default.pool_sizes["calibration"]
    whole = load_split(default.pool_sizes["calibration"], default.pool_sizes["heldout"])
    whole_more = load_split(more.pool_sizes["calibration"], more.pool_sizes["heldout"],
                            sources=[*DEFAULT_SOURCES, source])
    assert set(whole.heldout) <= set(whole_more.heldout)  # the default held-out texts stay held out
    assert not set(whole_more.calibration) & set(whole.heldout)


def test_pool_does_not_depend_on_what_the_process_imported():
    """A process that imported torch and transformers first samples the very same texts."""
    code = ("import torch, transformers, scipy.stats, email.mime.text, unittest.mock\n"
            "from icd.data.corpus import load_split\n"
            "s = load_split(64, 32, seed=3)\n"
            "import json; print(json.dumps([s.pool_sha256, s.calibration, s.heldout]))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    sha, calibration, heldout = json.loads(child.stdout)
    here = load_split(64, 32, seed=3)
    assert (sha, calibration, heldout) == (here.pool_sha256, here.calibration, here.heldout)


def test_fresh_extraction_matches_the_cache(tmp_path, monkeypatch):
    cached = corpus.stdlib_docstrings()
    monkeypatch.setenv("ICD_CACHE_DIR", str(tmp_path))
    corpus._source_texts.cache_clear()
    try:
        assert corpus.stdlib_docstrings() == cached
        assert list((tmp_path / "corpus").glob("stdlib-*.json"))
    finally:
        corpus._source_texts.cache_clear()


def test_too_many_texts_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"data\.calibration_texts=1000000: the corpus has only \d+"):
        load_split(10**6, 1)
    with pytest.raises(ConfigError, match=r"data\.heldout_texts=1000000"):
        load_split(1, 10**6)


def test_pinned_version_must_be_installed():
    numpy_source = resolve_source("numpy")
    assert resolve_source(numpy_source.pinned) == numpy_source
    with pytest.raises(ConfigError, match=r"'numpy==0\.0\.1' is pinned but numpy"):
        load_split(1, 1, sources=["stdlib", "numpy==0.0.1"])


@pytest.mark.parametrize("sources, message", [
    (["nosuchpackage"], "unknown source 'nosuchpackage'"),
    ([], "data.sources: empty"),
])
def test_bad_sources(sources, message):
    with pytest.raises(ConfigError, match=message):
        load_split(1, 1, sources=sources)
