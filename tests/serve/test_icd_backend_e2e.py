"""Must show 2: checksums, the correlation cache and the ICD metrics, each against the real server."""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from icd.serve.triton_local import ModelControlMode
from tests.serve.helpers import icd_log_records, infer_http, metric, tokenize

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _copy_model(repo: Path, source: str, name: str) -> Path:
    target = repo / name
    shutil.copytree(repo / source, target)
    config = target / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{source}"', f'name: "{name}"'))
    return target


def _without_batching(model_dir: Path, instances: int) -> None:
    """config.pbtxt (outside the version folder's manifest): N CPU instances, no dynamic batching."""
    text = (model_dir / "config.pbtxt").read_text()
    text = re.sub(r"dynamic_batching \{[^}]*\}\n", "", text)
    (model_dir / "config.pbtxt").write_text(re.sub(r"count: \d+", f"count: {instances}", text))


def _reason(server, name: str) -> str:
    rows = {row["name"]: row for row in server.repository_index()}
    return rows[name].get("reason", "") if rows[name]["state"] != "READY" else ""


def test_checksums_shared_cache_metrics_and_logs(tmp_path, triton_repo_bert, triton_server, minilm_tokenizer,
                                                  corpus_split):
    repo = tmp_path / "repo"
    shutil.copytree(triton_repo_bert, repo)
    _without_batching(repo / "bert_icd", instances=2)
    tampered = _copy_model(repo, "bert_icd", "bert_tampered")
    with open(tampered / "1" / "model.pt", "ab") as handle:
        handle.write(b"\x00")
    missing = _copy_model(repo, "bert_icd", "bert_missing")
    (missing / "1" / "permutation.json").unlink()
    server = triton_server(
        repo, model_control_mode=ModelControlMode.EXPLICIT,
        load_models=("bert_icd", "bert_tampered", "bert_missing"), timeout_s=300,
        env={"TRITON_ICD_CACHE_DIR": str(tmp_path / "cache"), "TRITON_ICD_PRELOAD_CORRELATIONS": "false",
             "TRITON_ICD_CACHE_SIZE": "64MB", "TRITON_ICD_CACHE_TTL": "3600", "TRITON_ICD_PROFILE": "true"},
    )
    # A tampered or missing file refuses that model's load, with a clear reason; the others keep serving.
    assert not server.model_ready("bert_tampered") and not server.model_ready("bert_missing")
    assert "checksum verification failed" in _reason(server, "bert_tampered")
    assert "model.pt: sha256 mismatch" in _reason(server, "bert_tampered")
    assert "permutation.json: missing" in _reason(server, "bert_missing")
    assert server.model_ready("bert_icd")

    ids, mask = tokenize(minilm_tokenizer, corpus_split.heldout[:8])
    with ThreadPoolExecutor(max_workers=4) as pool:
        served = list(pool.map(lambda i: infer_http(server.http_url, "bert_icd", ids[i:i + 1], mask[i:i + 1]),
                               range(8)))

    records = [r for r in icd_log_records(server.log_text()) if r["model"] == "bert_icd"]
    assert len(records) == 8 and all(r["batch_size"] == 1 and "profile" in r for r in records)
    # the shared cache has no cross-process lock: each instance may miss once on its first request, then hits
    assert 1 <= [r["cache"] for r in records].count("miss") <= 2, "at most one miss per instance, then hits"
    assert len({r["instance"] for r in records}) == 2, "both instances served (and shared the cache)"
    text = httpx.get(server.metrics_url, trust_env=False).text
    labels = {"model": "bert_icd", "version": "1"}
    assert metric(text, "triton_icd_correlation_total", **labels) == 8
    assert metric(text, "triton_icd_correlation_cache_hits", **labels) == [r["cache"] for r in records].count("hit")
    assert metric(text, "triton_icd_permutation_time_seconds", **labels) == 0.0  # folded: no run-time permutation
    layout = json.loads((repo / "bert_icd" / "1" / "icd_layout.json").read_text())
    assert metric(text, "triton_icd_layout_efficiency", **labels) == pytest.approx(layout["layout_efficiency"])
    assert "# TYPE triton_icd_correlation_cache_hits counter" in text
    assert "# TYPE triton_icd_layout_efficiency gauge" in text

    # The cache directory removed under the serving model (a tmpfs cleaned): made again, requests served as before.
    shutil.rmtree(tmp_path / "cache")
    for row in range(2):
        np.testing.assert_array_equal(infer_http(server.http_url, "bert_icd", ids[row:row + 1], mask[row:row + 1]),
                                      served[row])
    # The cache unusable (its path now a file): every lookup misses, says why, and the requests are served.
    shutil.rmtree(tmp_path / "cache")
    (tmp_path / "cache").write_text("not a directory")
    for row in range(2, 4):
        np.testing.assert_array_equal(infer_http(server.http_url, "bert_icd", ids[row:row + 1], mask[row:row + 1]),
                                      served[row])
    later = [r for r in icd_log_records(server.log_text()) if r["model"] == "bert_icd"][8:]
    assert [r["cache"] for r in later] == ["miss", "hit", "miss", "miss"]
    assert "cache_error" not in later[0] and "cache_error" not in later[1]
    assert all(r["cache_error"].startswith(f"{tmp_path / 'cache'}: cannot store cache entries (") for r in later[2:])
    text = httpx.get(server.metrics_url, trust_env=False).text
    assert metric(text, "triton_icd_correlation_total", **labels) == 12


@pytest.mark.parametrize("size", ["1024MB", "10MB"])
def test_preloaded_cache_hits_from_the_first_request(tmp_path, triton_repo_bert, triton_server, minilm_tokenizer,
                                                     corpus_split, size):
    server = triton_server(
        triton_repo_bert, model_control_mode=ModelControlMode.EXPLICIT, load_models=("bert_icd",), timeout_s=300,
        env={"TRITON_ICD_CACHE_DIR": str(tmp_path / "cache"), "TRITON_ICD_PRELOAD_CORRELATIONS": "true",
             "TRITON_ICD_CACHE_SIZE": size},
    )
    cached = list((tmp_path / "cache").glob("*.npy"))
    with np.load(triton_repo_bert / "bert_icd" / "1" / "correlation_matrix.npz") as data:
        if size == "1024MB":
            assert len(cached) == len(data.files) + 1, "every correlation matrix + the layout entry preloaded"
        else:  # a bound the matrices overflow (2 of its 7 fit): the request layout, preloaded first, is there
            assert 1 <= len(cached) < len(data.files) and sum(p.stat().st_size for p in cached) <= 10 * 1024 ** 2
    ids, mask = tokenize(minilm_tokenizer, corpus_split.heldout[:3])
    for row in range(3):
        infer_http(server.http_url, "bert_icd", ids[row:row + 1], mask[row:row + 1])
    text = httpx.get(server.metrics_url, trust_env=False).text
    assert metric(text, "triton_icd_correlation_total", model="bert_icd", version="1") == 3
    assert metric(text, "triton_icd_correlation_cache_hits", model="bert_icd", version="1") == 3


def test_invalid_cache_setting_refuses_the_load_with_a_clear_error(tmp_path, triton_repo_bert, triton_server):
    server = triton_server(
        triton_repo_bert, model_control_mode=ModelControlMode.EXPLICIT, load_models=("bert_icd",), timeout_s=300,
        env={"TRITON_ICD_CACHE_DIR": str(tmp_path / "cache"), "TRITON_ICD_CACHE_SIZE": "lots"},
    )
    assert not server.model_ready("bert_icd")
    assert "TRITON_ICD_CACHE_SIZE='lots'" in _reason(server, "bert_icd")
