from __future__ import annotations

import numpy as np
import pytest

from icd.errors import UserError
from icd.ops.checksums import verify_path
from icd.ops.compress import (CompressStatus, backup_path, compress_arrays, compress_file, compress_tree,
                              load_correlations, rank_for)
from icd.serve.backend.icd_runtime import MANIFEST_NAME, manifest_text


def _block_corr(n: int = 192, groups: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, groups, n)
    x = rng.normal(size=(n, 48)) + 3 * rng.normal(size=(groups, 48))[labels]
    return np.abs(np.corrcoef(x)).astype(np.float32)


def test_rank_budget():
    n = 384
    r = rank_for(n, 0.1)
    assert n * r + r <= 0.1 * n * n < n * (r + 1) + r + 1


def test_both_layouts_round_trip_names():
    dense = _block_corr(64)
    upper = np.triu(dense, 1)
    row, col = np.nonzero(upper)
    arrays = {"hidden": dense, "stats/hidden/rms": np.ones(64, np.float32),
              "graph/layer0.ffn/row": row.astype(np.int32), "graph/layer0.ffn/col": col.astype(np.int32),
              "graph/layer0.ffn/data": upper[row, col], "graph/layer0.ffn/shape": np.array([64, 64])}
    out, rebuilt = compress_arrays(arrays, 0.1)
    assert sorted(rebuilt) == ["graph/layer0.ffn", "hidden"]
    assert "stats/hidden/rms" in out and "hidden" not in out and "graph/layer0.ffn/row" not in out
    assert out["lowrank/hidden/vectors"].dtype == np.float16


def test_compress_validates_keeps_manifest_and_removes_backup(tmp_path):
    folder = tmp_path / "bert_icd" / "1"
    folder.mkdir(parents=True)
    original = _block_corr()
    np.savez(folder / "correlation_matrix.npz", hidden=original)
    (folder / MANIFEST_NAME).write_text(manifest_text(folder))
    [result] = compress_tree(tmp_path, 0.1, validate=True, time_limit_s=0.5)
    assert result.status == CompressStatus.VALIDATED and result.worst_ratio >= 0.99
    assert result.bytes_after < result.bytes_before / 5
    assert not backup_path(folder / "correlation_matrix.npz").exists()
    assert verify_path(folder).ok
    rebuilt = load_correlations(folder / "correlation_matrix.npz")["hidden"]
    assert rebuilt.shape == original.shape


def test_failed_validation_restores_original(tmp_path):
    path = tmp_path / "correlation_matrix.npz"
    np.savez(path, hidden=_block_corr(groups=16))
    before = path.read_bytes()
    result = compress_file(path, 0.005, validate=True, min_ratio=1.0, time_limit_s=0.5)  # rank 1 of 16 blocks
    assert result.status == CompressStatus.RESTORED and result.worst_ratio < 1.0
    assert path.read_bytes() == before and not backup_path(path).exists()


def test_without_validation_backup_is_kept(tmp_path):
    path = tmp_path / "correlation_matrix.npz"
    np.savez(path, hidden=_block_corr(64))
    result = compress_file(path, 0.1, validate=False)
    assert result.status == CompressStatus.UNVALIDATED and backup_path(path).is_file()


def test_bad_ratio_and_empty_dir(tmp_path):
    with pytest.raises(UserError, match="compression-ratio"):
        compress_tree(tmp_path, 0.0, False)
    with pytest.raises(UserError, match="no correlation_matrix.npz"):
        compress_tree(tmp_path, 0.1, False)
