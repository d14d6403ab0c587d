"""Export a run to a Triton model repository: ``<output>/<model>/config.pbtxt`` + ``<output>/<model>/<version>/``.

Version folder (python backend)::

    model.pt | model.onnx | model.xml + model.bin
                             the artefact of the runtime (torchscript | onnx | openvino): (input_ids, attention_mask)
                             -> output, verified against the in-process model before it is kept
    icd_runtime.json         runtime, precision, compile properties, int8 recipe (how to load it)
    model.py, icd_runtime.py python backend (checksums, ICD metrics, correlation cache, thread budget)
    permutation.json         copied from the run (optimized export only)
    correlation_matrix.npz   copied from the run (optimized export only)
    icd_layout.json          layout efficiency, permutations, run-time permutations
    provenance.json          how it was made: what was applied, per record with its source; the run, options,
                             the verification figures
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

from icd.errors import ArtefactError, UserError
from icd.export.config_pbtxt import parse_config, render_config
from icd.export.gpu_shapes import gpu_shape_warning
from icd.export.gpu_target import gpu_problem
from icd.export.layout_efficiency import BLOCK, layout_efficiency
from icd.export.options import DEFAULT_TRIM_PADDING, ExportOptions, Platform, Target
from icd.export.provenance import applied_records
from icd.export.run_inputs import CORRELATION_FILE, PERMUTATION_FILE, RunInputs, read_run
from icd.io.atomic import write_json_atomic, write_text_atomic
from icd.model.encoder import Encoder
from icd.model.families import family_of
from icd.runtimes.base import ExportedArtefact, Precision, Runtime, Variant
from icd.runtimes.source import ModelSource
from icd.runtimes.threads import ThreadBudget
from icd.serve.backend import BACKEND_DIR, BACKEND_FILES
from icd.serve.backend.icd_runtime import (LAYOUT_FILE, MANIFEST_NAME, MAX_TOKENS_PARAMETER, OUTPUT_FROM_HIDDEN,
                                            TRIM_PARAMETER, VOCAB_PARAMETER, manifest_text)

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
    variant: Variant
    variant_source: str
    threads: ThreadBudget
    verification: dict[str, Any]
    warnings: tuple[str, ...] = ()
    padding: str = ""
    """python backend: what ``icd_trim_padding`` does for this model, in words (empty for native backends)."""


def load_model_for(inputs: RunInputs, baseline: bool) -> Encoder:
    """The run's optimized Encoder (runtime transforms applied), or the baseline rebuilt from ``config.lock.json``."""
    if baseline:
        from icd.config.schema import IcdConfig
        from icd.model.loader import load_encoder

        return load_encoder(IcdConfig.model_validate(inputs.config_lock).model)
    from icd.pipeline.model_store import load_run_encoder

    return load_run_encoder(inputs.model_dir)


def profile_choice(run_dir: Path, options: ExportOptions) -> tuple[Variant, str | None] | None:
    """The run's ``icd profile`` choice (``runtime_profile.json``), read once per export; None for a baseline
    export or a run never profiled."""
    from icd.runtimes.profile import read_choice

    return None if options.baseline else read_choice(run_dir)


def chosen_recipe(choice: tuple[Variant, str | None] | None, options: ExportOptions, variant: Variant) -> str | None:
    """The OpenVINO int8 recipe to export: ``options.int8_recipe``, else the profile's ``choice`` when it chose
    exactly this variant with a recipe (``openvino:int8+<recipe>``), else None (the default recipe)."""
    if options.int8_recipe is not None or options.baseline:
        return options.int8_recipe
    return choice[1] if choice is not None and choice[0] == variant else None


def resolve_variant(choice: tuple[Variant, str | None] | None, options: ExportOptions,
                    has_int8: bool) -> tuple[Variant, str]:
    """The runtime and precision to export, and where the choice came from.

    Runtime: ``options.runtime``, else (optimized model) the run's ``icd profile`` ``choice``, else torchscript
    (as the guide exports). Precision: ``options.precision``, else the profile's when it chose this runtime, else
    the run's own (int8 when the run has icd's int8 and the runtime has int8; the baseline is fp32).
    For ``--target gpu`` a profile choice or run's int8 that runs on the CPU only (:func:`gpu_problem`: the profile
    timed CPU runtimes) is left aside for torchscript / fp32, and the returned text says so.
    """
    from icd.runtimes.registry import DEFAULT_RUNTIME, get_runtime

    gpu = options.target == Target.GPU
    chosen = None if choice is None or options.baseline else choice[0]
    if options.runtime is None and chosen is not None and gpu and gpu_problem(chosen, options.platform):
        runtime = DEFAULT_RUNTIME
        where = f"default (--target gpu: the icd profile choice {chosen.name} runs on the CPU)"
        chosen = None
    elif options.runtime is None and chosen is not None:
        runtime, where = chosen.runtime, "icd profile choice (runtime_profile.json)"
    else:
        runtime = options.runtime or DEFAULT_RUNTIME
        where = "--runtime" if options.runtime else "default (the run has no icd profile choice)"
    if options.precision:
        return Variant(runtime, Precision(options.precision)), where + ", --precision"
    if chosen is not None and chosen.runtime == runtime:
        return Variant(runtime, chosen.precision), where
    own_int8 = has_int8 and not options.baseline and Precision.INT8 in get_runtime(runtime).precisions
    if own_int8 and gpu and gpu_problem(Variant(runtime, Precision.INT8), options.platform):
        return Variant(runtime, Precision.FP32), where + ", fp32 (--target gpu: the run's int8 runs on the CPU)"
    return Variant(runtime, Precision.INT8 if own_int8 else Precision.FP32), where + ", the run's own precision"


def _provenance(inputs: RunInputs, options: ExportOptions, layout: dict[str, Any], artefact: ExportedArtefact,
                verification: dict[str, Any]) -> dict[str, Any]:
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
        "configured_transforms": list(inputs.config_lock.get("transforms", [])),
        "applied": applied_records(inputs, options.baseline, artefact),
        "runtime": artefact.sidecar(),
        "verification": verification,
        "export_options": {"type": "ExportOptions", "version": 1, "data": options.model_dump(mode="json")},
        "layout_efficiency": layout["layout_efficiency"],
    }


def _runtime_permutations(inputs: RunInputs, encoder: Encoder) -> dict[str, Any]:
    """``{"output": "inverse:hidden"}`` when the output gather is the inverse of permutation.json's hidden
    permutation (the backend builds it from the — possibly encrypted — file), else the index itself."""
    import numpy as np

    if encoder.output_index is None:
        return {}
    index = encoder.output_index.cpu().numpy()
    hidden = inputs.permutations.get("hidden")
    if hidden is not None and np.array_equal(np.argsort(np.asarray(hidden)), index):
        return {"output": OUTPUT_FROM_HIDDEN}
    return {"output": index.tolist()}


def _layout_record(inputs: RunInputs, encoder: Encoder, options: ExportOptions) -> dict[str, Any]:
    value, dims = layout_efficiency(inputs.permutations, inputs.correlation_path, identity=options.baseline)
    return {
        "layout_efficiency": value,
        "definition": f"mean block locality (block {BLOCK}) of |correlation| over dims {dims}; docs/serving.md",
        "dims": dims,
        "identity_layout": options.baseline,
        "correlation_file": None if options.baseline else CORRELATION_FILE,
        "runtime_permutations": _runtime_permutations(inputs, encoder),
    }


def _verify(runtime: Runtime, folder: Path, source: ModelSource, inputs: RunInputs, python_backend: bool,
            threads: int) -> dict[str, Any]:
    from icd.config.schema import IcdConfig
    from icd.data.corpus import load_split
    from icd.runtimes.verify import VERIFY_TEXTS, verify_session

    cfg = IcdConfig.model_validate(inputs.config_lock)
    texts = load_split(cfg.data.calibration_texts, cfg.data.heldout_texts, cfg.data.seed,
                       cfg.data.sources).heldout[:VERIFY_TEXTS]
    session = runtime.load(folder, threads)
    return verify_session(session, source, texts, output_gather=not python_backend,
                          min_cos_fp32=cfg.serve.verify_min_cos).to_dict()


def _write_version(tmp: Path, inputs: RunInputs, source: ModelSource, options: ExportOptions, runtime: Runtime,
                   variant: Variant, threads: int, recipe: str | None = None
                   ) -> tuple[dict[str, Any], ExportedArtefact, dict[str, Any]]:
    from icd.runtimes.openvino_int8 import recipe_argument

    python_backend = options.platform == Platform.PYTHON
    layout = _layout_record(inputs, source.fp32, options)
    # The python backend applies (and times) an embedding model's output gather itself; native backends keep it.
    # A recipe only reaches openvino int8 (export_model checks).
    artefact = runtime.export(source, tmp, variant.precision, output_gather=not python_backend, threads=threads,
                              **recipe_argument(source, recipe))
    verification = _verify(runtime, tmp, source, inputs, python_backend, threads)
    if python_backend:
        for name in BACKEND_FILES:
            shutil.copyfile(BACKEND_DIR / name, tmp / name)
    if not options.baseline:
        shutil.copyfile(inputs.permutation_path, tmp / PERMUTATION_FILE)
        shutil.copyfile(inputs.correlation_path, tmp / CORRELATION_FILE)
    write_json_atomic(tmp / LAYOUT_FILE, layout)
    write_json_atomic(tmp / PROVENANCE_FILE, _provenance(inputs, options, layout, artefact, verification))
    write_text_atomic(tmp / MANIFEST_NAME, manifest_text(tmp))
    return layout, artefact, verification


def padding_trim(options: ExportOptions) -> tuple[int, str]:
    """The ``icd_trim_padding`` multiple of a python-backend export and why, in words.

    Trimming leaves every text's tokens and what they attend to as they were. An int8 that takes its activation
    ranges from each batch (TorchScript, ONNX Runtime) gets other ranges from a trimmed batch, with the same
    fidelity to fp32 (``bench/int8_padding.py``), so every variant trims by default.
    """
    multiple, why = ((options.trim_padding, "--trim-padding") if options.trim_padding is not None
                     else (DEFAULT_TRIM_PADDING, "default"))
    return multiple, ("padding kept (--trim-padding 0)" if multiple == 0 else
                      f"trailing padding trimmed to a multiple of {multiple} tokens ({why})")


def input_limits(source: ModelSource) -> dict[str, str]:
    """The python backend's per-request checks: the most tokens a text may have (the model's positions) and the
    vocabulary size (``icd_max_tokens``, ``icd_vocab_size``; docs/serving.md)."""
    config = source.fp32.bert.config
    return {MAX_TOKENS_PARAMETER: str(family_of(source.fp32).max_tokens(config)),
            VOCAB_PARAMETER: str(int(config.vocab_size))}


def _parameters(options: ExportOptions, layout: dict[str, Any], variant: Variant, runtime: Runtime,
                artefact: ExportedArtefact, threads: int, trim: int = 0,
                limits: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """config.pbtxt's serving fields and parameters; ``trim`` is the python backend's ``icd_trim_padding``,
    ``limits`` its :func:`input_limits`."""
    params = {"icd_kind": "baseline" if options.baseline else "icd", "icd_runtime": variant.runtime,
              "icd_precision": variant.precision.value}
    value = layout["layout_efficiency"]
    params["icd_layout_efficiency"] = "nan" if value is None else f"{value:.6f}"
    if options.platform == Platform.PYTHON:
        params["icd_threads"] = str(options.threads)
        params[TRIM_PARAMETER] = str(trim)
        params.update(limits or {})
        return {"backend": "python"}, params
    serving, backend_params = runtime.triton_serving(variant.precision, threads)
    if variant.runtime == "openvino":  # what the artefact was verified with (its recipe's precision hint), served threads
        from icd.runtimes.openvino import load_properties

        backend_params = load_properties(artefact, threads)
    return serving, {**params, **backend_params}


def _budget(output_dir: Path, options: ExportOptions) -> ThreadBudget:
    from icd.runtimes.threads import ThreadBudget, host_cores, repository_instances, thread_budget

    if options.threads:
        return ThreadBudget(host_cores(), {}, options.threads, "--threads")
    return thread_budget(repository_instances(output_dir, {options.model_name: options.instance_count}))


def export_model(run_dir: Path, output_dir: Path, options: ExportOptions) -> ExportResult:
    """Export the run in ``run_dir`` as model ``options.model_name`` into the repository ``output_dir``.

    Raises:
        ArtefactError: a missing/invalid artefact, a failed conversion or verification.
        UserError: an unknown or uninstalled runtime, a precision the runtime does not have.
        ConfigError: an invalid config.lock.json.
    """
    from icd.runtimes.registry import get_runtime

    inputs = read_run(Path(run_dir), baseline=options.baseline)
    source = ModelSource.from_run(inputs.run_dir, baseline=options.baseline)
    choice = profile_choice(inputs.run_dir, options)
    variant, where = resolve_variant(choice, options, source.int8_record is not None)
    runtime = get_runtime(variant.runtime)
    runtime.check_precision(variant.precision)
    problem = gpu_problem(variant, options.platform) if options.target == Target.GPU else None
    if problem is not None:
        raise UserError(f"--target gpu: {variant.name} ({where}) cannot serve on KIND_GPU instances: {problem}; "
                        f"export torchscript fp32 for the GPU, or this variant with --target cpu")
    if options.int8_recipe is not None and (variant.runtime, variant.precision.value) != ("openvino", "int8"):
        raise UserError(f"--int8-recipe {options.int8_recipe} is for openvino int8; this export is {variant.name} "
                        f"({where})")
    recipe = chosen_recipe(choice, options, variant)
    if recipe is not None:
        where += f", int8 recipe {recipe}" + ("" if options.int8_recipe else " (icd profile choice)")
    budget = _budget(Path(output_dir), options)
    trim, padding = padding_trim(options)
    model_dir = Path(output_dir) / options.model_name
    created = [folder for folder in (model_dir, *model_dir.parents) if not folder.exists()]  # this call's folders
    model_dir.mkdir(parents=True, exist_ok=True)
    version_dir = model_dir / str(options.version)
    tmp = Path(tempfile.mkdtemp(prefix=f".{options.version}.", dir=model_dir))
    try:
        layout, artefact, verification = _write_version(tmp, inputs, source, options, runtime, variant,
                                                        budget.threads, recipe)
        serving, params = _parameters(options, layout, variant, runtime, artefact, budget.threads, trim,
                                      input_limits(source))
        config_text = render_config(options, source.output_name, source.output_width, params, serving)
        if version_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{options.version}.old.", dir=model_dir))
            version_dir.rename(old / "v")
            shutil.rmtree(old)
        tmp.chmod(0o755)
        tmp.rename(version_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_if_empty([model_dir, *created])  # a failed or interrupted export leaves no empty --output-dir
        raise
    config_path = model_dir / "config.pbtxt"
    write_text_atomic(config_path, config_text)
    parse_config(config_path.read_text(), source=str(config_path))
    files = tuple(sorted(p.name for p in version_dir.iterdir()))
    return ExportResult(model_dir, version_dir, config_path, files, layout["layout_efficiency"], source.output_name,
                        source.output_width, variant, where, budget, verification, _warnings(options, source),
                        padding if options.platform == Platform.PYTHON else "")


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove each folder, deepest first, while it is empty (an earlier export's files are never touched)."""
    for folder in sorted(set(folders), key=lambda f: len(f.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _warnings(options: ExportOptions, source: ModelSource) -> tuple[str, ...]:
    """What the export wants the user to know but does not refuse (a GPU target with slow shapes)."""
    if options.target != Target.GPU:
        return ()
    warning = gpu_shape_warning(source.fp32)
    return () if warning is None else (warning,)


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
