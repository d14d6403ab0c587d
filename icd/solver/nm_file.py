"""``perm.json`` written by ``icd permute-nm`` — schema ``icd.nm_permutation/v1``.

```json
{"schema": "icd.nm_permutation/v1", "convention": "new column j is old column perm[j] (new = old[:, perm])",
 "n": 2, "m": 4, "weights": "W.npy", "weights_sha256": "…", "perm": [...], "sha256": "…",
 "rows": 384, "cols": 384, "kept_plain": …, "kept_permuted": …, "kept_upper": …, "efficacy": …, "seconds": …,
 "seed": 0, "time_limit_s": 10.0}
```

``sha256`` is the hex sha256 of ``perm`` as little-endian int64 bytes (as in ``permutation.json``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from icd.errors import ArtefactError
from icd.io.atomic import write_json_atomic
from icd.solver.nm_search import NMResult

NM_PERMUTATION_SCHEMA = "icd.nm_permutation/v1"
CONVENTION = "new column j is old column perm[j] (new = old[:, perm])"


def perm_sha256(perm: np.ndarray | list[int]) -> str:
    """Hex sha256 of ``perm`` as little-endian int64 bytes."""
    return hashlib.sha256(np.asarray(perm, dtype="<i8").tobytes()).hexdigest()


def nm_permutation_document(result: NMResult, **provenance: Any) -> dict[str, Any]:
    """The ``perm.json`` document for a search result (``provenance``: weights path, seed, time limit ...)."""
    perm = [int(x) for x in result.perm]
    return {"schema": NM_PERMUTATION_SCHEMA, "convention": CONVENTION, "n": result.n, "m": result.m,
            **provenance, "perm": perm, "sha256": perm_sha256(perm), **result.summary()}


def write_nm_permutation(path: str | Path, result: NMResult, **provenance: Any) -> dict[str, Any]:
    """Write ``perm.json`` atomically; returns the document."""
    doc = nm_permutation_document(result, **provenance)
    write_json_atomic(path, doc)
    return doc


def read_nm_permutation(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``perm.json``; ``ArtefactError`` naming the file and the problem."""
    target = Path(path)
    try:
        doc = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtefactError(f"{target}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{target}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != NM_PERMUTATION_SCHEMA:
        raise ArtefactError(f"{target}: schema is not {NM_PERMUTATION_SCHEMA}")
    perm = doc.get("perm")
    if not isinstance(perm, list) or sorted(perm) != list(range(len(perm))):
        raise ArtefactError(f"{target}: perm is not a permutation of range(n)")
    if doc.get("cols") != len(perm):
        raise ArtefactError(f"{target}: perm has {len(perm)} entries but cols is {doc.get('cols')}")
    if doc.get("sha256") != perm_sha256(perm):
        raise ArtefactError(f"{target}: sha256 does not match perm")
    return doc
