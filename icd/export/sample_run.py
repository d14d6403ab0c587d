"""A run directory with *identity* permutations — for tests, benches and demos of export/serve only.

It has the layout ``icd run`` writes (config.lock.json, run.json, model/, permutation.json,
correlation_matrix.npz) but nothing in it was optimized: the model is the configured model as loaded, every
permutation is the identity, and the correlation matrices are the absolute *weight* correlations of the hidden
and FFN channels (not calibration statistics). ``run.json`` says ``"mode": "identity-sample"`` so it can not be
mistaken for an optimizer output.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from icd.io.atomic import write_json_atomic

SAMPLE_MODE = "identity-sample"


def _weight_correlations(encoder, dims) -> dict[str, np.ndarray]:
    """|corrcoef| of weight columns per dim (hidden: word embeddings; ffn: intermediate rows), float32."""
    bert = encoder.bert
    arrays: dict[str, np.ndarray] = {}
    for dim in dims:
        if dim.name == "hidden":
            weights = bert.embeddings.word_embeddings.weight.detach().numpy()[:2048].T
        elif dim.name.endswith(".ffn"):
            weights = bert.get_submodule(encoder.family.linears(dim.layer)["ffn_in"]).weight.detach().numpy()
        else:
            continue
        arrays[dim.name] = np.abs(np.corrcoef(weights)).astype(np.float32)
    return arrays


def write_identity_run_dir(run_dir: Path, config_path: Path | None = None) -> Path:
    """Write the sample run directory (see module docstring); returns ``run_dir``.

    Args:
        run_dir: where to write (created).
        config_path: the config (default: ``configs/minilm_classifier.json`` of this repository: the real MiniLM
            weights with a 2-label head, small enough for tests and benches).
    """
    import icd
    from icd.config.loader import load_config
    from icd.io.permutation_file import write_permutation_file
    from icd.model.layout import permutable_dims
    from icd.model.loader import load_encoder, load_tokenizer
    from icd.pipeline.model_store import save_run_encoder

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = config_path or Path(__file__).resolve().parents[2] / "configs" / "minilm_classifier.json"
    config = load_config(path)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(run_dir / "config.lock.json", config.model_dump(mode="json"))
    encoder = load_encoder(config.model)
    save_run_encoder(run_dir, encoder, load_tokenizer(config.model), config.model, runtime_transforms=[])
    dims = permutable_dims(encoder, ("hidden", "ffn"))
    write_permutation_file(
        run_dir / "permutation.json", dims, {}, model=config.model.model_dump(mode="json"),
        extra={"note": "identity permutations (icd.export.sample_run), not an optimizer output"},
    )
    np.savez(run_dir / "correlation_matrix.npz", **_weight_correlations(encoder, dims))
    write_json_atomic(
        run_dir / "run.json",
        {"icd_version": icd.__version__, "status": "complete", "mode": SAMPLE_MODE, "started": started,
         "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    )
    return run_dir
