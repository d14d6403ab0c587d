"""KServe v2 JSON request bodies for the BERT models (``input_ids``/``attention_mask`` INT64) and outputs.

``text_payloads`` tokenizes held-out stdlib docstrings (real text); ``synthetic_payloads`` draws random word-piece
ids (synthetic — for load shape only, never for output agreement claims).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from icd.errors import UserError

OUTPUT_NAME = "logits"
RANDOM_ID_LOW, RANDOM_ID_HIGH, CLS_ID, SEP_ID = 1000, 30000, 101, 102


def token_payload(ids: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """One request body for a ``[batch, seq]`` pair of int arrays."""
    ids2, mask2 = np.atleast_2d(ids).astype(np.int64), np.atleast_2d(mask).astype(np.int64)
    return {"inputs": [
        {"name": "input_ids", "datatype": "INT64", "shape": list(ids2.shape), "data": ids2.ravel().tolist()},
        {"name": "attention_mask", "datatype": "INT64", "shape": list(mask2.shape), "data": mask2.ravel().tolist()},
    ]}


def synthetic_payloads(n: int, seq_len: int = 32, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` single-row bodies of random ids (synthetic inputs)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(RANDOM_ID_LOW, RANDOM_ID_HIGH, size=(n, seq_len), dtype=np.int64)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    return [token_payload(ids[i:i + 1], np.ones((1, seq_len), dtype=np.int64)) for i in range(n)]


def text_payloads(n: int, seq_len: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` single-row bodies of tokenized held-out stdlib docstrings (real text)."""
    from icd.config.schema import ModelSection
    from icd.data.corpus import load_split
    from icd.model.loader import load_tokenizer

    held_out = load_split(0, n, seed=seed, sources=["stdlib"]).heldout
    tokenizer = load_tokenizer(ModelSection())
    enc = tokenizer(list(held_out), padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return [token_payload(enc["input_ids"][i:i + 1], enc["attention_mask"][i:i + 1]) for i in range(len(held_out))]


def payloads_for(inputs: str, n: int, seq_len: int) -> list[dict[str, Any]]:
    """``n`` bodies of ``inputs`` (``text``: held-out docstrings, ``synthetic``: random ids)."""
    if seq_len < 2:  # room for [CLS] and [SEP]
        raise UserError(f"--seq-len {seq_len}: expected at least 2 tokens")
    if inputs == "text":
        return text_payloads(n, seq_len)
    if inputs == "synthetic":
        return synthetic_payloads(n, seq_len)
    raise UserError(f"--inputs {inputs!r}: expected 'text' or 'synthetic'")


def named_output(body: dict[str, Any], name: str | None = None) -> tuple[str, np.ndarray]:
    """``(name, flat float array)`` of the named (default: the first) output of a KServe v2 response."""
    for out in body.get("outputs", []):
        if name is None or out.get("name") == name:
            return str(out.get("name", "")), np.asarray(out["data"], dtype=float).ravel()
    raise UserError(f"response has no output {name!r} (outputs: {[o.get('name') for o in body.get('outputs', [])]})")
