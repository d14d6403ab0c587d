"""``icd profile`` on an optimized run: a table, a recorded choice, and export-triton exporting that choice."""

from __future__ import annotations

import json
import shutil

import pytest

from icd.cli.main import main

pytestmark = pytest.mark.slow


def test_profile_records_a_choice_that_export_then_uses(optimized_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(optimized_run, run)
    rc = main(["profile", str(run), "--runtime", "torchscript", "--runtime", "onnx", "--precision", "fp32",
               "--runs", "2", "--warmup", "1", "--batch-size", "2", "--seq-len", "16", "--texts", "8"])
    out = capsys.readouterr().out
    assert rc == 0 and "torchscript:fp32" in out and "onnx:fp32" in out and "chosen:" in out
    doc = json.loads((run / "runtime_profile.json").read_text())
    assert {r["variant"] for r in doc["rows"]} == {"torchscript:fp32", "onnx:fp32"}
    assert all(r["cos_mean"] > 0.999 and r["latency_median_ms"] > 0 for r in doc["rows"])
    # timed on held-out texts padded to 16 tokens as clients send them, trailing padding cut as each is served
    assert doc["inputs"] == "text" and "held-out texts in batches of 2, padded to 16" in doc["latency_how"]
    assert all(0 < r["tokens_run"] <= 16 for r in doc["rows"]) and 0 < doc["reference"]["tokens_run"] <= 16
    assert "timed on:" in out
    assert doc["agreement"] == "NN" and doc["near_ties"]["margin"] == 0.001 and 0 <= doc["near_ties"]["texts"] <= 8
    assert "near tie" in out
    chosen = doc["choice"]["variant"]
    assert chosen in {"torchscript:fp32", "onnx:fp32"}
    ratios = {r["variant"]: r["latency_ratio_to_choice"] for r in doc["rows"]}
    assert ratios[chosen]["median"] == 1.0 and ratios[chosen]["rounds"] == 2
    assert all(r["median"] > 0 and r["ci95"][0] <= r["median"] <= r["ci95"][1] for r in ratios.values())
    models = tmp_path / "models"
    assert main(["export-triton", "--input-dir", str(run), "--model-name", "bert_icd", "--output-dir",
                 str(models)]) == 0
    printed = capsys.readouterr().out
    assert f"{chosen} from icd profile choice" in printed
    sidecar = json.loads((models / "bert_icd" / "1" / "icd_runtime.json").read_text())
    assert f"{sidecar['runtime']}:{sidecar['precision']}" == chosen


def test_profile_times_a_named_int8_recipe_and_export_serves_the_chosen_one(optimized_run, tmp_path, capsys):
    """``--int8-recipe icd_outliers_fused`` adds a row ``openvino:int8+icd_outliers_fused``; export-triton exports
    the chosen row with its recipe (whichever the measurement chose)."""
    from icd.runtimes.openvino_int8 import DEFAULT_RECIPE

    run = tmp_path / "run"
    shutil.copytree(optimized_run, run)
    rc = main(["profile", str(run), "--runtime", "openvino", "--precision", "int8", "--int8-recipe",
               "icd_outliers_fused", "--runs", "2", "--warmup", "1", "--batch-size", "2", "--seq-len", "16",
               "--texts", "8", "--inputs", "random"])
    out = capsys.readouterr().out
    assert rc == 0 and "openvino:int8+icd_outliers_fused" in out
    doc = json.loads((run / "runtime_profile.json").read_text())
    assert doc["inputs"] == "random" and "batch 2x16 random token ids" in doc["latency_how"]
    assert all(r["tokens_run"] == 16 for r in doc["rows"])
    rows = {r["variant"]: r for r in doc["rows"]}
    assert set(rows) == {"openvino:int8", "openvino:int8+icd_outliers_fused"}
    assert rows["openvino:int8+icd_outliers_fused"]["recipe"]["fused_attention"] is True
    assert rows["openvino:int8"]["recipe"]["name"] == DEFAULT_RECIPE
    chosen = doc["choice"]["variant"]
    models = tmp_path / "models"
    assert main(["export-triton", "--input-dir", str(run), "--model-name", "bert_icd", "--output-dir",
                 str(models)]) == 0
    sidecar = json.loads((models / "bert_icd" / "1" / "icd_runtime.json").read_text())
    assert sidecar["recipe"]["name"] == (chosen.partition("+")[2] or DEFAULT_RECIPE)
