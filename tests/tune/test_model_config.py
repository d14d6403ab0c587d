"""A candidate applied to Triton's ModelConfig message; the KIND_GPU guard of a CPU-only host."""

from __future__ import annotations

import pytest

from icd.errors import ArtefactError
from icd.export.config_pbtxt import parse_config
from icd.serve.synthetic_model import EchoDelaySpec, echo_delay_config
from icd.tune import model_config
from icd.tune.space import Candidate

BASE = parse_config(echo_delay_config(EchoDelaySpec(max_batch_size=16, max_queue_delay_us=100)))


def test_apply_candidate_replaces_only_the_searched_fields():
    config = model_config.apply_candidate(BASE, Candidate(3, 2, 8, (4, 8), 2500), model_config.KIND_CPU)
    text = model_config.to_pbtxt(config)
    again = parse_config(text)
    assert again.max_batch_size == 8 and list(again.dynamic_batching.preferred_batch_size) == [4, 8]
    assert again.dynamic_batching.max_queue_delay_microseconds == 2500
    assert [(g.count, g.kind) for g in again.instance_group] == [(3, again.instance_group[0].KIND_CPU)]
    assert again.parameters["icd_threads"].string_value == "2" and "icd_torch_threads" not in again.parameters
    assert again.parameters["icd_delay_ms"].string_value == "5.0" and again.input == BASE.input
    assert BASE.max_batch_size == 16  # the base is not changed
    assert model_config.candidate_of(again) == Candidate(3, 2, 8, (4, 8), 2500)


def test_json_round_trip_is_what_triton_takes():
    doc = model_config.to_json(model_config.apply_candidate(BASE, Candidate(1, 1, 4), model_config.KIND_CPU))
    assert doc["max_batch_size"] == 4 and doc["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
    assert model_config.from_json(doc, "x") == model_config.from_json(model_config.to_json(model_config.from_json(doc, "x")), "y")
    with pytest.raises(ArtefactError, match="live config: not a Triton model configuration"):
        model_config.from_json({"max_batch_size": "many"}, "live config")


def test_kind_gpu_on_a_cpu_only_host_becomes_kind_cpu(monkeypatch, tmp_path):
    gpu_base = parse_config(echo_delay_config(EchoDelaySpec()).replace("KIND_CPU", "KIND_GPU"))
    monkeypatch.setattr(model_config, "_NVIDIA_GPUS", tmp_path / "none")  # a host without the NVIDIA driver
    kind, note = model_config.resolve_kind(gpu_base, server_ran_it=False)
    assert kind == model_config.KIND_CPU and "no GPU" in note
    config = model_config.apply_candidate(gpu_base, Candidate(2, 1, 8), kind)
    assert "KIND_GPU" not in model_config.to_pbtxt(config) and not config.instance_group[0].gpus
    # a server that ran the model on a GPU keeps KIND_GPU (it works there)
    assert model_config.resolve_kind(gpu_base, server_ran_it=True) == (model_config.KIND_GPU, "")
    assert model_config.resolve_kind(BASE, server_ran_it=False) == (model_config.KIND_CPU, "")
