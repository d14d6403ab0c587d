"""Save / load the model a run produced, under ``RUN/model/``.

Layout (documented in docs/artefacts.md):

* ``model.safetensors`` + ``config.json`` — the fp32 weights with every permutation, scaling and sparsity mask
  folded in (Hugging Face format, loadable by ``transformers`` alone unless compaction gave the layers their own
  sizes: then ``layer_sizes`` below rebuilds them);
* tokenizer files;
* ``icd_model.json`` — ``{"task", "model": <model section>, "runtime_transforms": [{"type","version","data"}],
  "output_index": [...] | null, "layer_sizes": [{"heads", "intermediate"}, ...] | null}``: transforms that cannot
  live in fp32 weights (dynamic int8 quantization) and are re-applied, deterministically, by
  :func:`load_run_encoder`; and the output gather of an embedding model whose hidden dim was permuted (see
  :meth:`icd.model.encoder.Encoder.set_output_index`); and the per-layer sizes of a compacted model
  (``CompactConfig``), rebuilt before its weights are loaded;
* ``int8_weights.safetensors`` — only when the int8 record rounds with GPTQ: per quantized Linear its int8 codes
  (``<name>.codes``) and per-output-channel scales (``<name>.scales``), packed as they are at load.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from icd.config.schema import ModelSection
from icd.io.atomic import write_json_atomic
from icd.io.json_artefact import read_json_artefact
from icd.model.encoder import Encoder
from icd.transforms.compact_slice import load_compacted, saved_sizes
from icd.transforms.runtime import INT8_WEIGHTS_FILE

MODEL_DIR = "model"
ICD_MODEL_FILE = "icd_model.json"


def save_run_encoder(
    run_dir: Path, encoder: Encoder, tokenizer: Any, section: ModelSection, runtime_transforms: list[dict[str, Any]]
) -> Path:
    """Write ``RUN/model/`` atomically (a temporary sibling folder renamed into place)."""
    target = Path(run_dir) / MODEL_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=run_dir))
    try:
        encoder.hf.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_json_atomic(
            tmp / ICD_MODEL_FILE,
            {
                "task": encoder.task,
                "model": section.model_dump(mode="json"),
                "runtime_transforms": runtime_transforms,
                "output_index": None if encoder.output_index is None else encoder.output_index.tolist(),
                "layer_sizes": saved_sizes(encoder),
            },
        )
        if encoder.int8_weights:
            save_int8_weights(tmp / INT8_WEIGHTS_FILE, encoder.int8_weights)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_icd_model(model_dir: Path) -> dict[str, Any]:
    return read_json_artefact(Path(model_dir) / ICD_MODEL_FILE,
                              f"not an icd model folder (no {ICD_MODEL_FILE}): {model_dir}")


def load_run_encoder(model_dir: Path, runtime_transforms: bool = True) -> Encoder:
    """Load ``RUN/model/`` (weights + runtime transforms unless ``runtime_transforms`` is False) as an eval-mode
    :class:`Encoder`.

    The family comes from the saved ``config.json`` (``model_type``); the folder must load whole (a run saves its
    classification head, so nothing may be missing).

    Raises:
        ArtefactError: not an icd model folder, an unsupported family, or weights that do not load whole.
    """
    from icd.errors import ArtefactError
    from icd.model.loader import load_hf_model
    from icd.transforms.runtime import apply_runtime_transforms_

    meta = read_icd_model(model_dir)
    if meta.get("layer_sizes"):  # compacted: per-layer head counts / FFN sizes the config cannot hold
        hf = load_compacted(Path(model_dir), meta["task"], meta["layer_sizes"], error=ArtefactError)
    else:
        hf = load_hf_model(Path(model_dir), meta["task"], new_head=False, error=ArtefactError)
    encoder = Encoder(hf, meta["task"]).eval()
    if meta.get("output_index") is not None:
        import torch

        encoder.set_output_index(torch.tensor(meta["output_index"], dtype=torch.long))
    if (Path(model_dir) / INT8_WEIGHTS_FILE).is_file():
        encoder.int8_weights = load_int8_weights(Path(model_dir) / INT8_WEIGHTS_FILE)
    if runtime_transforms:
        apply_runtime_transforms_(encoder, meta.get("runtime_transforms", []))
    return encoder


def save_int8_weights(path: Path, codes: dict[str, tuple[Any, Any]]) -> None:
    """``<name>.codes`` (int8) and ``<name>.scales`` (float32) per Linear, as safetensors."""
    from safetensors.torch import save_file

    tensors = {}
    for name, (q, s) in sorted(codes.items()):
        tensors[f"{name}.codes"] = q.contiguous()
        tensors[f"{name}.scales"] = s.contiguous()
    save_file(tensors, str(path), metadata={"format": "icd int8 weight codes", "grid": "symmetric, scale per row"})


def load_int8_weights(path: Path) -> dict[str, tuple[Any, Any]]:
    """The inverse of :func:`save_int8_weights`; ArtefactError when the file is not such a table."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from icd.errors import ArtefactError

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ArtefactError(f"{path}: not a readable safetensors file: {exc}") from None
    names = {key.rsplit(".", 1)[0] for key in tensors}
    out = {}
    for name in sorted(names):
        if f"{name}.codes" not in tensors or f"{name}.scales" not in tensors:
            raise ArtefactError(f"{path}: Linear {name!r} needs both {name}.codes and {name}.scales")
        out[name] = (tensors[f"{name}.codes"], tensors[f"{name}.scales"])
    return out
