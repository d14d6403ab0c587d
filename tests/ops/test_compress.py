"""Correlation compression: the guide's `--compression-ratio 0.1 --validate-accuracy` on graphs shaped like a
run's (top-16 neighbour graphs of |correlation|, MiniLM and base-size dims), per-matrix report, escalation,
nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest

from icd.errors import UserError
from icd.graph.sparsify import top_k_graph
from icd.ops.checksums import verify_path
from icd.ops.compress import (CompressStatus, backup_path, compress_arrays, compress_file, compress_tree, keep_count,
                              load_correlations, objective_ratio, share_ladder)
from icd.serve.backend.icd_runtime import MANIFEST_NAME, manifest_text
from tests.ops.helpers import run_script


def _block_corr(n: int, groups: int = 8, samples: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, groups, n)
    x = rng.normal(size=(n, samples)) + 3 * rng.normal(size=(groups, samples))[labels]
    return np.abs(np.corrcoef(x))


def _coo(prefix: str, graph) -> dict[str, np.ndarray]:
    """Upper-triangle COO in the run's layout (``graph/<dim>/row|col|data|shape``)."""
    upper = graph.tocoo()
    keep = upper.row < upper.col
    return {f"{prefix}/row": upper.row[keep].astype(np.int32), f"{prefix}/col": upper.col[keep].astype(np.int32),
            f"{prefix}/data": upper.data[keep].astype(np.float32),
            f"{prefix}/shape": np.array(graph.shape, dtype=np.int64)}


def _run_like(hidden: int, ffn: int, heads: int, layers: int = 1) -> dict[str, np.ndarray]:
    """A correlation_matrix.npz like `icd run` writes: top-16 graphs per dim (qk/vo within head blocks)."""
    arrays = {"schema": np.array("icd-correlation/1"), **_coo("graph/hidden", top_k_graph(_block_corr(hidden), 16))}
    for i in range(layers):
        arrays.update(_coo(f"graph/layer{i}.ffn", top_k_graph(_block_corr(ffn, 16, seed=i + 1), 16)))
        arrays.update(_coo(f"graph/layer{i}.heads", top_k_graph(_block_corr(heads, 3, seed=i + 2), None)))
        for part in ("qk", "vo"):
            graph = top_k_graph(_block_corr(hidden, 24, seed=i + 3), 16, block=hidden // heads)
            arrays.update(_coo(f"graph/layer{i}.{part}", graph))
    return arrays


@pytest.mark.parametrize(("shape", "name"), [((384, 1536, 12), "minilm"), ((768, 3072, 12), "base")])
def test_guide_ratio_validates_on_run_shaped_graphs(tmp_path, shape, name):
    folder = tmp_path / name / "bert_icd" / "1"
    folder.mkdir(parents=True)
    np.savez(folder / "correlation_matrix.npz", **_run_like(*shape))
    (folder / MANIFEST_NAME).write_text(manifest_text(folder))
    [result] = compress_tree(tmp_path / name, 0.1, validate=True)
    assert result.status == CompressStatus.VALIDATED, [r.line(0.99) for r in result.matrices]
    assert result.worst_ratio >= 0.99 and result.bytes_after < result.bytes_before
    reports = {r.name: r for r in result.matrices}
    for dim in ("graph/hidden", "graph/layer0.ffn", "graph/layer0.qk", "graph/layer0.vo"):
        assert reports[dim].kept == reports[dim].stored and not reports[dim].escalated  # sparser than 10 %
    assert reports["graph/layer0.heads"].share > 0.1  # the complete 12x12 graph needed more than asked
    assert verify_path(folder).ok and not backup_path(folder / "correlation_matrix.npz").exists()
    rebuilt = load_correlations(folder / "correlation_matrix.npz")
    original = _run_like(*shape)
    row, col = original["graph/hidden/row"], original["graph/hidden/col"]
    np.testing.assert_allclose(rebuilt["graph/hidden"][row, col], original["graph/hidden/data"], rtol=1e-3)


def test_no_escalate_keeps_the_file_and_names_the_share_that_passes(tmp_path):
    path = tmp_path / "correlation_matrix.npz"
    arrays = _run_like(384, 1536, 12)
    np.savez(path, **arrays)
    before = path.read_bytes()
    result = compress_file(path, 0.1, validate=True, escalate=False)
    assert result.status == CompressStatus.RESTORED and result.failed
    assert path.read_bytes() == before and not backup_path(path).exists()
    heads = next(r for r in result.matrices if r.name == "graph/layer0.heads")
    assert heads.asked_ratio < 0.99 and heads.passing_share in share_ladder(0.1)[1:]
    assert "graph/layer0.heads" in heads.line(0.99)


def test_dense_matrix_becomes_sparse_top_entries(tmp_path):
    dense = _block_corr(64).astype(np.float32)
    out, [report] = compress_arrays({"hidden": dense, "stats/rms": np.ones(64, np.float32)}, 0.25)
    assert "hidden" not in out and "stats/rms" in out and out["sparse/hidden/data"].dtype == np.float16
    assert out["sparse/hidden/row"].dtype == np.uint16
    assert report.kept == keep_count(64, 64 * 63 // 2, 0.25) == out["sparse/hidden/data"].size


def test_objective_ratio_is_one_for_the_same_matrix_and_lower_for_noise():
    dense = _block_corr(128, 8)
    assert objective_ratio(dense, dense) == pytest.approx(1.0)
    noise = np.abs(np.random.default_rng(5).normal(size=dense.shape))
    assert objective_ratio(dense, noise + noise.T) < 0.9


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


def test_guide_command_prints_every_matrix(tmp_path):
    folder = tmp_path / "models" / "bert_icd" / "1"
    folder.mkdir(parents=True)
    np.savez(folder / "correlation_matrix.npz", **_run_like(384, 1536, 12))
    done = run_script("compress_correlations.py", "--input-dir", str(tmp_path / "models"), "--compression-ratio",
                      "0.1", "--validate-accuracy")
    assert done.returncode == 0, done.stderr
    assert "compressed, validated" in done.stdout and "graph/layer0.ffn: n=1536" in done.stdout
    assert "1 of 5 matrices below 0.99 at --compression-ratio 0.1; kept more: graph/layer0.heads at" in done.stdout
