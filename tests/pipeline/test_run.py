"""``icd run`` end to end on the real MiniLM weights, small corpus (a few seconds per mode)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from icd.cli.main import main
from icd.config import load_config
from icd.io.permutation_file import read_permutation_file
from icd.measure.encode import encode
from icd.model.layout import permutable_dims
from icd.model.loader import load_tokenizer
from icd.pipeline.model_store import load_run_encoder
from icd.pipeline.runner import run_config

SMALL = [
    "data.calibration_texts=48", "data.heldout_texts=32", "data.batch_size=16",
    "measure.latency.runs=2", "measure.latency.warmup=1", "measure.latency.batch_size=2",
    "measure.latency.seq_len=32", "solver.time_limit_s=4",
]
ARTEFACTS = {"run.json", "config.lock.json", "events.jsonl", "permutation.json", "correlation_matrix.npz",
             "metrics.json", "model", "report.html"}


def _metric(doc, tag):
    return next(m for m in doc["metrics"] if m["tag"] == tag)


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    """A linear run of the classifier config with no transform: permutations only."""
    out = tmp_path_factory.mktemp("runs") / "linear"
    cfg = load_config("configs/minilm_classifier.json", [*SMALL, "pipeline.mode=linear", "transforms=[]"])
    result = run_config(cfg, out, progress=False)
    return cfg, out, result


def test_linear_run_writes_every_artefact(linear_run):
    _, out, _ = linear_run
    assert ARTEFACTS <= {p.name for p in out.iterdir()}
    assert not [p for p in out.parent.iterdir() if ".staging-" in p.name]
    stages = [json.loads(line)["stage"] for line in (out / "events.jsonl").read_text().splitlines()]
    for stage in ("calibrate", "graph", "solve", "apply", "transform", "measure"):
        assert stage in stages


def test_permutation_only_run_preserves_the_function(linear_run):
    cfg, out, result = linear_run
    assert result.final.fidelity.cos_min > 1 - 1e-5
    assert result.final.fidelity.argmax_agreement == 1.0
    perms = read_permutation_file(out / "permutation.json")
    assert any(not np.array_equal(p, np.arange(p.size)) for p in perms.values())


def test_saved_model_reproduces_measured_outputs(linear_run, corpus_split):
    cfg, out, _ = linear_run
    from icd.model.loader import load_encoder

    tokenizer = load_tokenizer(cfg.model)
    saved = load_run_encoder(out / "model")
    dense = load_encoder(cfg.model)
    texts = corpus_split.heldout[:8]
    got = encode(saved, tokenizer, texts, 8, 64)
    want = encode(dense, tokenizer, texts, 8, 64)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert len(read_permutation_file(out / "permutation.json", permutable_dims(saved))) == len(permutable_dims(saved))


def test_metrics_have_units_and_how(linear_run):
    _, out, _ = linear_run
    doc = json.loads((out / "metrics.json").read_text())
    for metric in doc["metrics"]:
        assert {"tag", "value", "unit", "higher_is_better", "how"} <= set(metric)
    assert _metric(doc, "cos_mean")["value"] > 0.99999
    assert _metric(doc, "latency_median_ms")["value"] > 0
    assert _metric(doc, "efficacy_mean")["value"] is None


@pytest.mark.slow
def test_iterative_embedding_run_with_int8(tmp_path):
    out = tmp_path / "iter"
    cfg = load_config("configs/minilm.json", [*SMALL, "pipeline.mode=iterative", "transforms.0.search_texts=16",
                                              "transforms.0.alpha_grid=[0.5]"])
    result = run_config(cfg, out, progress=False)
    assert len(result.decisions) == 1
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["decisions"][0]["reason"]
    assert doc["runtime_transforms"] and doc["runtime_transforms"][0]["type"] == "int8"
    # only permutations were folded before int8: its activation ranges are the (reordered) calibration's
    assert doc["transform_reports"][0]["activation_ranges"].startswith("the calibration statistics")
    # the saved model (fp32 weights + runtime int8 record) gives the outputs that were measured
    tokenizer = load_tokenizer(cfg.model)
    reloaded = load_run_encoder(out / "model")
    from icd.data.corpus import load_split

    split = load_split(cfg.data.calibration_texts, cfg.data.heldout_texts, cfg.data.seed)
    again = encode(reloaded, tokenizer, split.heldout, cfg.data.batch_size, cfg.model.max_length)
    in_memory = encode(result.runtime.encoder, tokenizer, split.heldout, cfg.data.batch_size, cfg.model.max_length)
    torch.testing.assert_close(again, in_memory, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_iterative_run_with_gptq_int8_saves_and_reloads_its_codes(tmp_path):
    from icd.transforms.runtime import INT8_WEIGHTS_FILE

    out = tmp_path / "gptq"
    cfg = load_config("configs/minilm.json", [*SMALL, "pipeline.mode=iterative", "transforms.0.search_texts=16",
                                              "transforms.0.alpha_grid=[0.5]", "transforms.0.weight_rounding=gptq"])
    result = run_config(cfg, out, progress=False)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["runtime_transforms"][0]["data"]["weight_rounding"] == "gptq"
    rounding = doc["transform_reports"][0]["weight_rounding"]
    assert rounding["method"] == "gptq" and rounding["hessians"] == "the calibration statistics of this model"
    assert rounding["rel_output_error_gptq_mean"] < rounding["rel_output_error_nearest_mean"]
    assert (out / "model" / INT8_WEIGHTS_FILE).is_file()
    tokenizer = load_tokenizer(cfg.model)
    from icd.data.corpus import load_split

    split = load_split(cfg.data.calibration_texts, cfg.data.heldout_texts, cfg.data.seed)
    again = encode(load_run_encoder(out / "model"), tokenizer, split.heldout, cfg.data.batch_size,
                   cfg.model.max_length)
    in_memory = encode(result.runtime.encoder, tokenizer, split.heldout, cfg.data.batch_size, cfg.model.max_length)
    torch.testing.assert_close(again, in_memory, rtol=1e-4, atol=1e-4)
    from icd.export.options import ExportOptions
    from icd.export.repository import export_model

    exported = export_model(out, tmp_path / "repo", ExportOptions(model_name="bert_gptq", runtime="torchscript",
                                                                  precision="int8"))
    assert exported.verification["max_abs_diff"] is not None and exported.verification["max_abs_diff"] < 1e-3
    assert exported.verification["cos_mean_fp32"] > 0.99


@pytest.mark.slow
def test_nm_run_reports_efficacy_and_keeps_pattern(tmp_path):
    out = tmp_path / "nm"
    cfg = load_config("configs/minilm.json", [
        *SMALL, "pipeline.mode=iterative", 'pipeline.dims=["hidden","ffn"]',
        'transforms=[{"type":"nm_sparsity","n":2,"m":4,"scope":"ffn","method":"wanda"}]'])
    result = run_config(cfg, out, progress=False)
    doc = json.loads((out / "metrics.json").read_text())
    assert _metric(doc, "efficacy_mean")["value"] > 0
    saved = load_run_encoder(out / "model")
    from icd.transforms.nm_sparsity import is_nm

    for layer in saved.bert.encoder.layer:
        assert is_nm(layer.output.dense.weight, 2, 4)
        assert is_nm(layer.intermediate.dense.weight, 2, 4)
    assert result.final.fidelity.cos_mean > 0.5


def test_cli_run_refuses_foreign_output_dir(tmp_path, capsys):
    foreign = tmp_path / "notarun"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    rc = main(["run", "-c", "configs/minilm.json", "--out", str(foreign), "--no-progress"])
    assert rc == 2
    assert "not a previous icd run" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-c", "configs/absent.json"], "config file not found"),
        (["-c", "configs/minilm.json", "--override", "pipeline.nope=1"], "unknown key"),
        (["-c", "configs/minilm.json", "--override", "data.batch_size=big"], "data.batch_size"),
        (["-c", "configs/minilm.json", "--override", "oops"], "bad override"),
        (["-c", "configs/minilm.json", "--override", "model.path=/nonexistent/ckpt"], "model.path"),
    ],
)
def test_cli_bad_input_exit_2_and_nothing_written(tmp_path, capsys, args, needle):
    out = tmp_path / "run"
    rc = main(["run", *args, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and err.count("\n") == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_pair_prints_and_writes_the_comparison(tmp_path, capsys):
    out = tmp_path / "pair"
    rc = main(["pair", "-c", "configs/minilm.json", *[a for o in SMALL for a in ("--override", o)],
               "--override", "transforms=[]", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    for mode in ("dense", "linear", "iterative"):
        assert mode in printed and (out / mode / "run.json").is_file()
    assert "cos-min" in printed and "p50-ms" in printed
    rows = json.loads((out / "pair.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["dense", "linear", "iterative"]
    assert all(r["cos_mean"] > 0.9999 and r["latency_median_ms"] > 0 for r in rows)
    assert (out / "pair.html").is_file()
