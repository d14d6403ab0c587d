"""Served-path fixtures: real ``icd run`` outputs (small, real MiniLM weights), exported with ``icd export-triton``
and served on one embedded Triton for the whole session.

* ``served_runs`` (session): two ``icd run`` directories of ``configs/minilm.json`` (embedding, permutations of
  every kind incl. ``hidden``, so the served model also applies the output gather), small corpus, linear mode —
  ``int8`` (the int8 transform) and ``nm`` (2:4 sparsity on the FFN Linears).
* ``served_repo`` (session): ``icd_int8``, ``icd_nm`` and ``baseline`` exported from them by ``icd export-triton``.
* ``served_triton`` (session): one real ``tritonserver`` on ``served_repo`` (stopped by PID at the end).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from icd.cli.main import main
from icd.serve.triton_local import TritonServer

SMALL = [
    "data.calibration_texts=48", "data.heldout_texts=32", "data.batch_size=16", "pipeline.mode=linear",
    "measure.latency.runs=1", "measure.latency.warmup=0", "measure.latency.batch_size=2",
    "measure.latency.seq_len=32", "solver.time_limit_s=2",
]
TRANSFORMS = {
    "int8": '[{"type": "int8", "scope": "all", "smooth_alpha": 0.5}]',
    "nm": '[{"type": "nm_sparsity", "n": 2, "m": 4, "scope": "ffn"}]',
}
MODELS = {"int8": "icd_int8", "nm": "icd_nm"}
BASELINE = "baseline"


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``icd run`` output directories by transform (``int8``, ``nm``)."""
    root = tmp_path_factory.mktemp("served_runs")
    runs = {}
    for name, transforms in TRANSFORMS.items():
        out = root / name
        overrides = [flag for item in [*SMALL, f"transforms={transforms}"] for flag in ("--override", item)]
        assert main(["run", "-c", "configs/minilm.json", *overrides, "--out", str(out), "--no-progress"]) == 0
        runs[name] = out
    return runs


@pytest.fixture(scope="session")
def served_repo(tmp_path_factory: pytest.TempPathFactory, served_runs: dict[str, Path]) -> Path:
    """The model repository ``icd export-triton`` wrote: the optimized models and the baseline (1 thread each)."""
    repo = tmp_path_factory.mktemp("served_repo")
    common = ["--output-dir", str(repo), "--torch-threads", "1"]
    for name, model in MODELS.items():
        assert main(["export-triton", "--input-dir", str(served_runs[name]), "--model-name", model, *common]) == 0
    assert main(["export-triton", "--input-dir", str(served_runs["int8"]), "--model-name", BASELINE, "--baseline",
                 *common]) == 0
    return repo


@pytest.fixture(scope="session")
def served_triton(served_repo: Path) -> Iterator[TritonServer]:
    from tests.fixtures.triton import start_triton

    server = start_triton(served_repo)
    yield server
    server.stop()
