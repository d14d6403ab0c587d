"""``icd run`` with a ``compact`` transform: a smaller model measured, saved and reloaded; iterative steps that are
accepted or rolled back; bad compaction input refused before any work (real MiniLM, tiny corpus)."""

from __future__ import annotations

import json

import pytest
import torch

from icd.cli.main import main
from icd.config import load_config
from icd.measure.encode import encode
from icd.model.loader import load_tokenizer
from icd.pipeline.model_store import load_run_encoder, read_icd_model
from icd.pipeline.runner import run_config
from icd.transforms.compact_slice import layer_sizes

SMALL = [
    "data.calibration_texts=32", "data.heldout_texts=16", "data.batch_size=16", "model.max_length=48",
    "measure.latency.runs=1", "measure.latency.warmup=0", "measure.latency.batch_size=2",
    "measure.latency.seq_len=16", "solver.method=identity", 'pipeline.dims=["ffn"]',
]
TINY = ["model.source=bert_config",  # random weights of a tiny shape: the pipeline's behaviour, in seconds
        'model.bert_config={"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128}']
COMPACT = 'transforms=[{"type":"compact","ffn_keep":0.5,"heads_keep":0.5,"importance":"act_weight"}]'


def test_iterative_compaction_steps_to_the_target_and_reloads(tmp_path):
    out = tmp_path / "iter"
    cfg = load_config("configs/minilm.json", [*SMALL, *TINY, COMPACT, "pipeline.mode=iterative",
                                              "pipeline.iterations=1", "pipeline.accept.min_cos_mean=0.0"])
    result = run_config(cfg, out, progress=False)
    assert [d.accepted for d in result.decisions] == [True]
    saved = load_run_encoder(out / "model")
    assert [(s.heads, s.intermediate) for s in layer_sizes(saved)] == [(2, 64)] * 2  # 4 → 3 → 2, 128 → 91 → 64
    assert len(read_icd_model(out / "model")["layer_sizes"]) == 2
    doc = json.loads((out / "metrics.json").read_text())
    assert [r["type"] for r in doc["weight_transforms"]] == ["compact", "compact"]
    tokenizer = load_tokenizer(cfg.model)
    texts = ["Return the absolute value of the argument.", "Open file and return a stream."]
    torch.testing.assert_close(encode(saved, tokenizer, texts, 2, 48), encode(result.runtime.encoder, tokenizer,
                                                                              texts, 2, 48), rtol=1e-4, atol=1e-5)


def test_a_step_below_the_floor_is_rolled_back(tmp_path):
    cfg = load_config("configs/minilm.json", [*SMALL, *TINY, COMPACT, "pipeline.mode=iterative",
                                              "pipeline.iterations=2", "pipeline.accept.min_cos_mean=1.0"])
    result = run_config(cfg, tmp_path / "iter", progress=False)
    assert [d.accepted for d in result.decisions] == [False]  # the first extra step already falls below; stop
    assert "below the floor" in result.decisions[0].reason
    assert [(s.heads, s.intermediate) for s in layer_sizes(result.runtime.fp32)] == [(3, 102)] * 2  # step 1 stays


@pytest.mark.parametrize("config, override, message", [
    ("configs/minilm.json", '[{"type":"compact","budget":0.01}]', "transforms.0.budget=0.01: no allocation reaches it"),
    ("configs/minilm.json", '[{"type":"compact","ffn_keep":1.5}]', "transforms.0.compact.ffn_keep"),
    ("configs/minilm.json", '[{"type":"compact","heads_keep":0}]', "transforms.0.compact.heads_keep"),
    ("configs/bert.json", '[{"type":"compact","budget":0.6}]', "heads cannot be cut per layer"),
])
def test_bad_compaction_input_is_one_line_and_writes_nothing(tmp_path, capsys, config, override, message):
    out = tmp_path / "bad"
    argv = ["run", "-c", config, "--override", f"transforms={override}", "--out", str(out), "--no-progress"]
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(err) == 1 and err[0].startswith("icd: error: ") and message in err[0], err
    assert list(tmp_path.iterdir()) == []
