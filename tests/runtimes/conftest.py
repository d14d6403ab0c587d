"""One small *optimized* run shared by the runtime tests (a real ``icd run``, not the identity sample)."""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL_RUN = [
    "data.calibration_texts=32", "data.heldout_texts=16", "data.batch_size=16",
    "measure.latency.runs=1", "measure.latency.warmup=0", "measure.latency.batch_size=2",
    "measure.latency.seq_len=16", "solver.time_limit_s=2", "pipeline.mode=linear",
    "transforms.0.search_texts=8", "transforms.0.alpha_grid=[0.5]",
]


@pytest.fixture(scope="session")
def optimized_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``icd run`` of configs/minilm.json (embedding, permutations incl. the hidden dim, icd int8), small corpus."""
    from icd.config import load_config
    from icd.pipeline.runner import run_config

    out = tmp_path_factory.mktemp("optimized") / "run"
    run_config(load_config("configs/minilm.json", SMALL_RUN), out, progress=False)
    return out


@pytest.fixture(scope="session")
def optimized_source(optimized_run: Path):
    """The run's model as runtimes see it (fp32 weights + icd's int8 record)."""
    from icd.runtimes.source import ModelSource

    return ModelSource.from_run(optimized_run)


@pytest.fixture(scope="session")
def runtime_repo(tmp_path_factory: pytest.TempPathFactory, optimized_run: Path) -> Path:
    """The optimized run exported as ``bert_onnx`` (onnx fp32) and ``bert_openvino`` (openvino int8, NNCF with
    icd's recipe), python backend, each verified at export. Read-only: copy it before changing files."""
    from icd.export.options import ExportOptions
    from icd.export.repository import export_model

    repo = tmp_path_factory.mktemp("runtime_repo")
    export_model(optimized_run, repo, ExportOptions(model_name="bert_onnx", runtime="onnx", precision="fp32"))
    export_model(optimized_run, repo, ExportOptions(model_name="bert_openvino", runtime="openvino", precision="int8"))
    return repo
