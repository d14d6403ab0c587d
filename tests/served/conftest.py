"""Served-path fixtures: a real ``icd run`` output (small, real MiniLM weights), exported with
``icd export-triton`` in several runtimes / precisions and served on one embedded Triton for the whole session.

* ``served_run`` (session): one ``icd run`` of ``configs/minilm.json`` (embedding; permutations of every kind incl.
  ``hidden``, so the served model also applies the output gather), small corpus, linear mode, with 2:4 sparsity
  on the FFN Linears and then int8.
* ``served_repo`` (session): from it, ``icd export-triton`` writes ``icd_int8`` (TorchScript, the run's int8: 2:4 +
  int8), ``icd_2of4`` (TorchScript fp32: the 2:4 weights alone) and ``baseline`` (the model as loaded).
* ``served_triton`` (session): one real ``tritonserver`` on ``served_repo`` (stopped by PID at the end).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from icd.cli.main import main
from icd.serve.triton_local import TritonServer

SMALL = [
    "data.calibration_texts=48", "data.heldout_texts=32", "data.batch_size=16", "pipeline.mode=linear",
    "measure.latency.runs=1", "measure.latency.warmup=0", "measure.latency.batch_size=2",
    "measure.latency.seq_len=32", "solver.time_limit_s=2",
    'transforms=[{"type": "nm_sparsity", "n": 2, "m": 4, "scope": "ffn"}, '
    '{"type": "int8", "search_texts": 16, "alpha_grid": [0.5]}]',
]
BASELINE = "baseline"
TIMEOUT_S = 1800
"""Per-test limit of the served tests (the first one builds the session's run, exports and server)."""


@dataclass(frozen=True)
class Export:
    """One exported model: its name and how ``icd export-triton`` was asked for it."""

    model: str
    runtime: str
    precision: str

    @property
    def final(self) -> bool:
        """The run's own final model (what metrics.json measured): int8 on top of 2:4."""
        return self.precision == "int8"


EXPORTS = (
    Export("icd_int8", "torchscript", "int8"),
    Export("icd_2of4", "torchscript", "fp32"),
)
"""ONNX Runtime and OpenVINO exports of an optimized run are served and compared by tests/runtimes/test_served_e2e.py."""


@pytest.fixture(scope="session")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``icd run`` output directory."""
    out = tmp_path_factory.mktemp("served_run") / "run"
    overrides = [flag for item in SMALL for flag in ("--override", item)]
    assert main(["run", "-c", "configs/minilm.json", *overrides, "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def served_repo(tmp_path_factory: pytest.TempPathFactory, served_run: Path) -> Path:
    """The model repository ``icd export-triton`` wrote (1 thread per model)."""
    repo = tmp_path_factory.mktemp("served_repo")
    common = ["--input-dir", str(served_run), "--output-dir", str(repo), "--threads", "1"]
    for export in EXPORTS:
        assert main(["export-triton", *common, "--model-name", export.model, "--runtime", export.runtime,
                     "--precision", export.precision]) == 0, export
    assert main(["export-triton", *common, "--model-name", BASELINE, "--baseline", "--runtime", "torchscript",
                 "--precision", "fp32"]) == 0
    return repo


@pytest.fixture(scope="session")
def served_triton(served_repo: Path) -> Iterator[TritonServer]:
    from tests.fixtures.triton import start_triton

    server = start_triton(served_repo)
    yield server
    server.stop()
