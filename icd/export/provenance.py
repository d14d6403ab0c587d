"""``provenance.json``'s ``applied`` list: what was actually applied to the exported model, per record, with its
source — never what was only configured (``configured_transforms`` lists that apart).

* weight transforms the run applied (``metrics.json`` ``weight_transforms``);
* permutations that are not the identity (``permutation.json``; an all-identity file applies nothing);
* runtime transforms re-applied at load (``model/icd_model.json`` ``runtime_transforms``) — only when the exported
  artefact carries them (torchscript int8; other runtimes carry icd's int8 *decisions* through their own recipe,
  recorded in the runtime record);
* the runtime export itself (runtime, precision, recipe).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from icd.export.run_inputs import METRICS_FILE, PERMUTATION_FILE, RunInputs
from icd.io.json_artefact import read_json_artefact
from icd.runtimes.base import ExportedArtefact, Precision


def _weight_records(inputs: RunInputs) -> list[dict[str, Any]]:
    path = inputs.run_dir / METRICS_FILE
    if not path.is_file():
        return []
    doc = read_json_artefact(path)
    return [{**r, "source": f"{METRICS_FILE}:weight_transforms"} for r in doc.get("weight_transforms", []) or []]


def _permutation_record(inputs: RunInputs) -> list[dict[str, Any]]:
    moved = sorted(name for name, perm in inputs.permutations.items()
                   if not np.array_equal(np.asarray(perm), np.arange(len(perm))))
    if not moved:
        return []
    identity = sorted(set(inputs.permutations) - set(moved))
    return [{"type": "permutations", "version": 1, "source": PERMUTATION_FILE,
             "data": {"dims": moved, "identity_dims": identity}}]


def _runtime_records(inputs: RunInputs, artefact: ExportedArtefact) -> list[dict[str, Any]]:
    from icd.pipeline.model_store import read_icd_model

    if not (artefact.variant.runtime == "torchscript" and artefact.variant.precision == Precision.INT8):
        return []
    records = read_icd_model(inputs.model_dir).get("runtime_transforms", [])
    return [{**r, "source": "model/icd_model.json:runtime_transforms"} for r in records]


def applied_records(inputs: RunInputs, baseline: bool, artefact: ExportedArtefact) -> list[dict[str, Any]]:
    """The ``applied`` list (see the module docstring); the baseline has only its runtime export."""
    export = {"type": "runtime_export", "version": 1, "source": "icd export-triton",
              "data": {"runtime": artefact.variant.runtime, "precision": artefact.variant.precision.value,
                       "recipe": dict(artefact.recipe)}}
    if baseline:
        return [export]
    return [*_weight_records(inputs), *_permutation_record(inputs), *_runtime_records(inputs, artefact), export]
