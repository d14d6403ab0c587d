"""``icd permute-nm --weights W.npy [--n 2 --m 4] [--time-limit S] [--seed 0] --out perm.json``.

Finds a permutation of the input channels (columns) of one weight matrix (rows = outputs) that maximises the
magnitude an N:M mask keeps; prints one JSON line ``{"rows","cols","kept_plain","kept_permuted","kept_upper",
"efficacy","seconds"}`` and writes ``perm.json`` (schema ``icd.nm_permutation/v1``, see icd/solver/nm_file.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from icd.errors import UserError
from icd.io.atomic import sha256_file
from icd.defaults import NM_SEARCH_KICKS as DEFAULT_KICKS
from icd.defaults import NM_SEARCH_TIME_LIMIT_S as DEFAULT_TIME_LIMIT_S

WeightsOption = typer.Option(..., "--weights", "-w", help="2-D weight matrix as .npy (rows = outputs)")
NOption = typer.Option(2, "--n", help="entries kept per group of m")
MOption = typer.Option(4, "--m", help="group size along the input dim (columns)")
TimeOption = typer.Option(DEFAULT_TIME_LIMIT_S, "--time-limit", help="wall-time cap of the search, seconds",
                          envvar="ICD_PERMUTE_NM_TIME_LIMIT")
SeedOption = typer.Option(0, "--seed", help="seed of the search's perturbations")
KicksOption = typer.Option(DEFAULT_KICKS, "--kicks", help="perturbations of the local optimum to try")
OutOption = typer.Option(..., "--out", "-o", help="where to write perm.json")


def load_weights(path: Path) -> np.ndarray:
    """The 2-D numeric matrix stored in ``path`` (.npy); ``UserError`` naming the file otherwise."""
    if not path.is_file():
        raise UserError(f"--weights: no such file: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"--weights: {path} is not a .npy array ({str(exc).splitlines()[0]})") from None
    if not isinstance(arr, np.ndarray):
        raise UserError(f"--weights: {path} holds several arrays (.npz); give one 2-D .npy matrix")
    if arr.ndim != 2:
        raise UserError(f"--weights: {path} must hold a 2-D matrix (rows = outputs, cols = inputs), got shape "
                        f"{arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise UserError(f"--weights: {path} must be a real numeric array, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"--weights: {path} contains NaN or infinite values")
    return arr


def check_arguments(weights: np.ndarray, path: Path, n: int, m: int, time_limit: float, kicks: int) -> None:
    """``UserError`` (one line naming the flag and value) for arguments the search cannot use."""
    if m < 2:
        raise UserError(f"--m: must be >= 2, got {m}")
    if not 0 < n < m:
        raise UserError(f"--n: must satisfy 0 < n < m (m={m}), got {n}")
    if weights.shape[1] % m:
        raise UserError(f"--weights: {path} has {weights.shape[1]} columns, not divisible by --m {m}")
    if not time_limit > 0:
        raise UserError(f"--time-limit: must be > 0, got {time_limit}")
    if kicks < 0:
        raise UserError(f"--kicks: must be >= 0, got {kicks}")


def permute_nm(
    weights: Path = WeightsOption,
    n: int = NOption,
    m: int = MOption,
    time_limit: float = TimeOption,
    seed: int = SeedOption,
    kicks: int = KicksOption,
    out: Path = OutOption,
) -> None:
    """Search an N:M-friendly column permutation of one weight matrix and write perm.json."""
    matrix = load_weights(weights)
    check_arguments(matrix, weights, n, m, time_limit, kicks)
    if out.exists() and out.is_dir():
        raise UserError(f"--out: {out} is a directory; give a file path such as {out / 'perm.json'}")
    from icd.solver.nm_file import write_nm_permutation
    from icd.solver.nm_search import search_nm_permutation

    result = search_nm_permutation(np.abs(matrix.astype(np.float64)), n=n, m=m, time_limit_s=time_limit,
                                   seed=seed, kicks=kicks)
    write_nm_permutation(out, result, weights=str(weights), weights_sha256=sha256_file(weights), seed=seed,
                         time_limit_s=time_limit, kicks=kicks)
    typer.echo(json.dumps(result.summary()))


def register(app: typer.Typer) -> None:
    """Add ``icd permute-nm``."""
    app.command("permute-nm")(permute_nm)
