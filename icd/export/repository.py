"""Export a run to a Triton model repository: ``<output>/<model>/config.pbtxt`` + ``<output>/<model>/<version>/``.

Version folder (python backend)::

    model.pt                 TorchScript of the Encoder: (input_ids, attention_mask) -> output
    model.py, icd_runtime.py python backend (checksums, ICD metrics, correlation cache)
    permutation.json         copied from the run (optimized export only)
    correlation_matrix.npz   copied from the run (optimized export only)
    icd_layout.json          layout efficiency, permutations, run-time permutations
    provenance.json          how it was made: every applied config as {type, version, data}, the run, options
    checksums.sha256         sha256 of every other file (``sha256sum -c checksums.sha256`` in the folder)

The version folder is built in a temporary sibling and renamed into place: an interrupted export leaves the
previous version (or nothing), never half a model.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icd.errors import ArtefactError
from icd.export.config_pbtxt import parse_config, render_config
from icd.export.layout_efficiency import BLOCK, layout_efficiency
from icd.export.options import ExportOptions, Platform
from icd.export.run_inputs import CORRELATION_FILE, PERMUTATION_FILE, RunInputs, read_run
from icd.export.torchscript import save_torchscript, trace_encoder
from icd.io.atomic import write_json_atomic, write_text_atomic
from icd.model.encoder import Encoder
from icd.serve.backend import BACKEND_DIR, BACKEND_FILES
from icd.serve.backend.icd_runtime import LAYOUT_FILE, MANIFEST_NAME, manifest_text

PROVENANCE_FILE = "provenance.json"


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what it holds."""

    model_dir: Path
    version_dir: Path
    config_path: Path
    files: tuple[str, ...]
    layout_efficiency: float | None
    output_name: str
    output_width: int


def load_model_for(inputs: RunInputs, baseline: bool) -> Encoder:
    """The run's optimized Encoder, or the baseline rebuilt from ``config.lock.json``."""
    if baseline:
        from icd.config.schema import IcdConfig
        from icd.model.loader import load_encoder

        return load_encoder(IcdConfig.model_validate(inputs.config_lock).model)
    from icd.pipeline.model_store import load_run_encoder

    return load_run_encoder(inputs.model_dir)


def _applied_records(inputs: RunInputs, baseline: bool) -> list[dict[str, Any]]:
    """Every config the run records as applied, as ``{type, version, data, source}`` (none for the baseline):
    the configured transforms (``config.lock.json``), the permutations (``permutation.json``) and the runtime
    transforms re-applied at load (``model/icd_model.json``). ``run.json``'s ``mode`` says what kind of run it was."""
    if baseline:
        return []
    records = [
        {"type": str(t.get("type")), "version": 1, "data": t, "source": "config.lock.json:transforms"}
        for t in inputs.config_lock.get("transforms", [])
    ]
    records.append({"type": "permutations", "version": 1, "source": PERMUTATION_FILE,
                    "data": {"dims": sorted(inputs.permutations)}})
    from icd.pipeline.model_store import read_icd_model

    meta = read_icd_model(inputs.model_dir)
    records += [{**r, "source": "model/icd_model.json:runtime_transforms"} for r in meta.get("runtime_transforms", [])]
    return records


def _provenance(inputs: RunInputs, options: ExportOptions, layout: dict[str, Any]) -> dict[str, Any]:
    import torch

    import icd

    return {
        "icd_version": icd.__version__,
        "torch_version": torch.__version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_name": options.model_name,
        "version": options.version,
        "kind": "baseline" if options.baseline else "icd",
        "source_run": str(inputs.run_dir.resolve()),
        "run": inputs.run_meta,
        "config": inputs.config_lock,
        "applied": _applied_records(inputs, options.baseline),
        "export_options": {"type": "ExportOptions", "version": 1, "data": options.model_dump(mode="json")},
        "layout_efficiency": layout["layout_efficiency"],
    }


def _layout_record(inputs: RunInputs, encoder: Encoder, options: ExportOptions) -> dict[str, Any]:
    value, dims = layout_efficiency(inputs.permutations, inputs.correlation_path, identity=options.baseline)
    runtime: dict[str, list[int]] = {}
    if encoder.output_index is not None:
        runtime["output"] = encoder.output_index.tolist()
    return {
        "layout_efficiency": value,
        "definition": f"mean block locality (block {BLOCK}) of |correlation| over dims {dims}; docs/serving.md",
        "dims": dims,
        "identity_layout": options.baseline,
        "correlation_file": None if options.baseline else CORRELATION_FILE,
        "runtime_permutations": runtime,
    }


def _write_version(tmp: Path, inputs: RunInputs, encoder: Encoder, options: ExportOptions) -> dict[str, Any]:
    layout = _layout_record(inputs, encoder, options)
    output_index = encoder.output_index
    if options.platform == Platform.PYTHON and output_index is not None:
        encoder.set_output_index(None)  # the python backend applies (and times) this gather itself
    try:
        save_torchscript(trace_encoder(encoder, options.trace_seq_len), tmp / "model.pt")
    finally:
        encoder.set_output_index(output_index)
    if options.platform == Platform.PYTHON:
        for name in BACKEND_FILES:
            shutil.copyfile(BACKEND_DIR / name, tmp / name)
    if not options.baseline:
        shutil.copyfile(inputs.permutation_path, tmp / PERMUTATION_FILE)
        shutil.copyfile(inputs.correlation_path, tmp / CORRELATION_FILE)
    write_json_atomic(tmp / LAYOUT_FILE, layout)
    write_json_atomic(tmp / PROVENANCE_FILE, _provenance(inputs, options, layout))
    write_text_atomic(tmp / MANIFEST_NAME, manifest_text(tmp))
    return layout


def _output_shape(encoder: Encoder) -> tuple[str, int]:
    config = encoder.bert.config
    if encoder.task == "sequence_classification":
        return "logits", int(encoder.hf.config.num_labels)
    return "embedding", int(config.hidden_size)


def _parameters(options: ExportOptions, layout: dict[str, Any]) -> dict[str, str]:
    params = {"icd_kind": "baseline" if options.baseline else "icd"}
    if options.platform == Platform.PYTHON:
        params["icd_torch_threads"] = str(options.torch_threads)
    value = layout["layout_efficiency"]
    params["icd_layout_efficiency"] = "nan" if value is None else f"{value:.6f}"
    return params


def export_model(run_dir: Path, output_dir: Path, options: ExportOptions) -> ExportResult:
    """Export the run in ``run_dir`` as model ``options.model_name`` into the repository ``output_dir``.

    Raises:
        ArtefactError: a missing/invalid artefact, or a trace that does not reproduce the model.
        ConfigError: an invalid config.lock.json.
    """
    inputs = read_run(Path(run_dir), baseline=options.baseline)
    encoder = load_model_for(inputs, options.baseline)
    output_name, width = _output_shape(encoder)
    model_dir = Path(output_dir) / options.model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    version_dir = model_dir / str(options.version)
    tmp = Path(tempfile.mkdtemp(prefix=f".{options.version}.", dir=model_dir))
    try:
        layout = _write_version(tmp, inputs, encoder, options)
        config_text = render_config(options, output_name, width, _parameters(options, layout))
        if version_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{options.version}.old.", dir=model_dir))
            version_dir.rename(old / "v")
            shutil.rmtree(old)
        tmp.chmod(0o755)
        tmp.rename(version_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    config_path = model_dir / "config.pbtxt"
    write_text_atomic(config_path, config_text)
    parse_config(config_path.read_text(), source=str(config_path))
    files = tuple(sorted(p.name for p in version_dir.iterdir()))
    return ExportResult(model_dir, version_dir, config_path, files, layout["layout_efficiency"], output_name, width)


def verify_model_dir(model_dir: Path) -> None:
    """Check an exported model folder: config parses, every version folder matches its manifest.

    Raises:
        ArtefactError: naming the first problem.
    """
    from icd.export.config_pbtxt import read_config
    from icd.serve.backend.icd_runtime import ChecksumError, verify_manifest

    read_config(Path(model_dir) / "config.pbtxt")
    versions = [p for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise ArtefactError(f"{model_dir}: no version folder")
    for version in versions:
        try:
            verify_manifest(version)
        except ChecksumError as exc:
            raise ArtefactError(str(exc)) from None
