"""An optimized run served on the embedded Triton through ONNX Runtime and OpenVINO (python backend)."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from icd.runtimes.registry import get_runtime
from icd.serve.backend.icd_runtime import LayoutRecord, trim_batch
from icd.serve.triton_local import ModelControlMode
from tests.serve.helpers import icd_log_records, metric

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _infer(url: str, model: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(url.removeprefix("http://")) as client:
        inputs = [httpclient.InferInput("input_ids", list(ids.shape), "INT64"),
                  httpclient.InferInput("attention_mask", list(mask.shape), "INT64")]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        return client.infer(model, inputs).as_numpy("embedding")


def _try_infer(url: str, model: str, ids: np.ndarray, mask: np.ndarray):
    """The output, or the error as ``[status] message``."""
    from tritonclient.utils import InferenceServerException

    try:
        return _infer(url, model, ids, mask)
    except InferenceServerException as exc:
        return f"[{exc.status()}] {exc.message()}"


def _in_process(version_dir, runtime: str):
    """The exported artefact in this process, the output gather applied as the served model applies it."""
    session = get_runtime(runtime).load(version_dir, threads=1)
    index = LayoutRecord.load(version_dir, {}).output_index()

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = session.numpy(ids, mask)
        return out[:, index] if index.size else out

    return run


def test_onnx_and_openvino_serve_like_in_process_with_metrics_budget_trim_and_bad_parameters(
        tmp_path, runtime_repo, triton_server, optimized_source, corpus_split):
    repo = tmp_path / "repo"
    shutil.copytree(runtime_repo, repo)
    bad = repo / "bert_bad_threads"
    shutil.copytree(repo / "bert_onnx", bad)
    config = (bad / "config.pbtxt").read_text().replace('name: "bert_onnx"', 'name: "bert_bad_threads"')
    (bad / "config.pbtxt").write_text(config.replace('key: "icd_threads"\n  value {\n    string_value: "0"',
                                                     'key: "icd_threads"\n  value {\n    string_value: "two"'))
    bad_trim = repo / "bert_bad_trim"
    shutil.copytree(repo / "bert_onnx", bad_trim)
    config = (bad_trim / "config.pbtxt").read_text().replace('name: "bert_onnx"', 'name: "bert_bad_trim"')
    (bad_trim / "config.pbtxt").write_text(config.replace('key: "icd_trim_padding"\n  value {\n    string_value: "8"',
                                                          'key: "icd_trim_padding"\n  value {\n    string_value: "-8"'))
    bad_limits = repo / "bert_bad_limits"
    shutil.copytree(repo / "bert_onnx", bad_limits)
    config = (bad_limits / "config.pbtxt").read_text().replace('name: "bert_onnx"', 'name: "bert_bad_limits"')
    (bad_limits / "config.pbtxt").write_text(config.replace('key: "icd_vocab_size"\n  value {\n    string_value: "',
                                                            'key: "icd_vocab_size"\n  value {\n    string_value: "x'))
    server = triton_server(repo, model_control_mode=ModelControlMode.EXPLICIT,
                           load_models=("bert_onnx", "bert_openvino", "bert_bad_threads", "bert_bad_trim",
                                        "bert_bad_limits"),
                           timeout_s=300,
                           env={"TRITON_ICD_CACHE_DIR": str(tmp_path / "cache")})
    rows = {row["name"]: row for row in server.repository_index()}
    assert rows["bert_bad_threads"]["state"] != "READY"
    assert "icd_threads='two': expected a whole number" in rows["bert_bad_threads"].get("reason", "")
    assert rows["bert_bad_trim"]["state"] != "READY"
    assert "icd_trim_padding='-8': expected a whole number" in rows["bert_bad_trim"].get("reason", "")
    assert rows["bert_bad_limits"]["state"] != "READY"
    assert re.search(r"icd_vocab_size='x\d+': expected a whole number", rows["bert_bad_limits"].get("reason", ""))

    batch = optimized_source.tokenizer(corpus_split.heldout[:6], padding="max_length", max_length=32,
                                       truncation=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
    alone = {}
    for model, runtime in (("bert_onnx", "onnx"), ("bert_openvino", "openvino")):
        local = _in_process(repo / model / "1", runtime)
        padded = local(ids, mask)
        alone[model] = []
        for row in range(len(ids)):  # sequential single-text requests: one batch each
            got = _infer(server.http_url, model, ids[row:row + 1], mask[row:row + 1])
            alone[model].append(got)
            as_run = local(*trim_batch(ids[row:row + 1], mask[row:row + 1], 8))
            np.testing.assert_allclose(got, as_run, atol=1e-4, rtol=0, err_msg=f"{model} row {row}: served vs "
                                       "in-process on the batch as the server runs it (padding trimmed)")
            if runtime == "onnx":  # fp32: the padding never reaches a real token, trimmed or not
                np.testing.assert_allclose(as_run, padded[row:row + 1], atol=1e-4, rtol=0,
                                           err_msg=f"{model} row {row}: fp32 trimmed vs padded")

    log = server.log_text()
    records = icd_log_records(log)
    text = httpx.get(server.metrics_url, trust_env=False).text
    for model, runtime in (("bert_onnx", "onnx"), ("bert_openvino", "openvino")):
        mine = [r for r in records if r["model"] == model]
        assert len(mine) == 6 and {r["runtime"] for r in mine} == {runtime}
        assert [r["cache"] for r in mine] == ["miss"] + ["hit"] * 5, "one instance: one miss, then the cache serves"
        assert all(r["permutation_time_s"] > 0 for r in mine), "the hidden-dim output gather runs and is timed"
        # sent padded to 32 tokens, run without the padding (a multiple of 8), as compared above
        assert all(r["seq_lens"] == [32] and r["run_seq_lens"][0] % 8 == 0 for r in mine)
        assert min(r["run_seq_lens"][0] for r in mine) < 32, [r["run_seq_lens"] for r in mine]
        labels = {"model": model, "version": "1"}
        assert metric(text, "triton_icd_correlation_total", **labels) == 6
        assert metric(text, "triton_icd_correlation_cache_hits", **labels) == 5
        # the thread budget: one instance per model of the repository, passed to every instance
        assert f"icd: loaded {model} v1" in log and "from $ICD_THREADS_PER_INSTANCE" in log
        assert "padding trimmed to a multiple of 8 tokens" in log

    # A request past the model's limits gets its own error (HTTP 400) naming the input, value and place; the
    # requests batched with it are served. Unchecked, OpenVINO answered 600 tokens with an empty output.
    vocab = optimized_source.tokenizer.vocab_size
    for model in ("bert_onnx", "bert_openvino"):
        bad_ids = ids.copy()
        bad_ids[2, 3] = vocab + 7
        bad_mask = mask.copy()
        bad_mask[4, 1] = 2
        sent = [(ids[row:row + 1], mask[row:row + 1]) for row in range(len(ids))]
        sent[2], sent[4] = (bad_ids[2:3], mask[2:3]), (ids[4:5], bad_mask[4:5])
        long_ids = np.full((1, 600), 1000, dtype=np.int64)
        sent.append((long_ids, np.ones_like(long_ids)))
        with ThreadPoolExecutor(max_workers=len(sent)) as pool:  # concurrent: Triton batches them together
            results = list(pool.map(lambda pair: _try_infer(server.http_url, model, *pair), sent))
        for row, result in enumerate(results[:len(ids)]):
            if row not in (2, 4):  # served, within another batch's arithmetic (bench/padding_consistency.py)
                first = alone[model][row]
                cos = float((result * first).sum() / np.linalg.norm(result) / np.linalg.norm(first))
                assert cos > 0.999, (model, row, cos)
        assert results[2] == (f"[400] {model}: input_ids holds token id {vocab + 7} at [0, 3]: this model's ids run "
                              f"0..{vocab - 1}")
        assert results[4] == f"[400] {model}: attention_mask holds 2 at [0, 1]: expected 0 or 1"
        assert results[-1] == f"[400] {model}: input_ids has 600 tokens per text; this model reads at most 512"
