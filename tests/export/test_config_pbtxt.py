"""config.pbtxt rendering, parsed back with Triton's own ModelConfig protobuf."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2

from icd.errors import ArtefactError
from icd.export.config_pbtxt import parse_config, render_config
from icd.export.options import ExportOptions, Platform, Target


def _render(**kwargs):
    text = render_config(ExportOptions(**kwargs), "logits", 2, {"icd_kind": "icd"})
    return parse_config(text)


def test_cpu_python_config_matches_the_options():
    config = _render(model_name="bert_icd", max_batch_size=16, instance_count=2, preferred_batch_sizes=(4, 8),
                     max_queue_delay_us=1500, preserve_ordering=False, priority_levels=2)
    assert config.name == "bert_icd" and config.backend == "python" and config.platform == ""
    assert config.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input_ids", model_config_pb2.TYPE_INT64, [-1]), ("attention_mask", model_config_pb2.TYPE_INT64, [-1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("logits", model_config_pb2.TYPE_FP32, [2])]
    group = config.instance_group[0]
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [4, 8]
    assert batching.max_queue_delay_microseconds == 1500
    assert not batching.preserve_ordering and batching.priority_levels == 2
    assert batching.default_priority_level == 2
    assert config.parameters["icd_kind"].string_value == "icd"
    assert not config.HasField("optimization")


def test_gpu_libtorch_config():
    config = _render(target=Target.GPU, platform=Platform.PYTORCH_LIBTORCH, gpus=(0, 1))
    assert config.platform == "pytorch_libtorch" and config.backend == ""
    group = config.instance_group[0]
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and list(group.gpus) == [0, 1]
    assert not config.HasField("optimization"), "no TensorRT accelerator block for TorchScript models"


def test_no_batching_when_max_batch_size_is_zero():
    config = _render(max_batch_size=0, preferred_batch_sizes=())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")


@pytest.mark.parametrize(("max_batch", "preferred"), [(32, [4, 8]), (6, [4]), (2, [])])
def test_default_preferred_sizes_fit_the_max_batch_size_given(max_batch, preferred):
    """Not given, the preferred sizes are the defaults that fit (``--max-batch-size 2`` alone exports); given, a
    size above max_batch_size is refused (below)."""
    config = _render(max_batch_size=max_batch)
    assert config.max_batch_size == max_batch and list(config.dynamic_batching.preferred_batch_size) == preferred


@pytest.mark.parametrize(
    "kwargs",
    [{"model_name": "a/b"}, {"max_batch_size": -1}, {"preferred_batch_sizes": (64,), "max_batch_size": 32},
     {"instance_count": 0}, {"target": "tpu"}, {"platform": "onnx"},
     {"preserve_ordering": True, "priority_levels": 2}],
)
def test_invalid_options_are_rejected(kwargs):
    with pytest.raises(ValidationError):
        ExportOptions(**kwargs)


def test_invalid_text_is_an_artefact_error():
    with pytest.raises(ArtefactError, match="cfg.pbtxt: not a valid Triton ModelConfig"):
        parse_config('name: "x"\nmax_batch_size: "many"\n', source="cfg.pbtxt")


@given(
    max_batch=st.integers(1, 256),
    count=st.integers(1, 8),
    delay=st.integers(0, 100_000),
    gpu=st.booleans(),
    data=st.data(),
)
def test_every_valid_option_set_renders_a_parseable_config(max_batch, count, delay, gpu, data):
    preferred = data.draw(st.lists(st.integers(1, max_batch), max_size=4, unique=True))
    options = ExportOptions(max_batch_size=max_batch, instance_count=count, max_queue_delay_us=delay,
                            preferred_batch_sizes=tuple(sorted(preferred)), target="gpu" if gpu else "cpu")
    config = parse_config(render_config(options, "embedding", 384, {}))
    assert config.max_batch_size == max_batch and config.instance_group[0].count == count
    assert list(config.dynamic_batching.preferred_batch_size) == sorted(preferred)
    assert list(config.output[0].dims) == [384]


@pytest.mark.parametrize("platform, runtime, field, value, filename", [
    (Platform.PYTORCH_LIBTORCH, "torchscript", "platform", "pytorch_libtorch", "model.pt"),
    (Platform.ONNXRUNTIME_ONNX, "onnx", "platform", "onnxruntime_onnx", "model.onnx"),
    (Platform.OPENVINO, "openvino", "backend", "openvino", "model.xml"),
])
def test_native_backends_name_triton_standard_backend(platform, runtime, field, value, filename):
    options = ExportOptions(platform=platform)
    assert options.runtime == runtime, "the platform implies the runtime"
    config = parse_config(render_config(options, "embedding", 384, {}))
    assert getattr(config, field) == value and config.default_model_filename == filename


def test_synthetic_model_config_is_a_model_config(tmp_path):
    from icd.export.config_pbtxt import read_config
    from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model

    folder = write_echo_delay_model(tmp_path, EchoDelaySpec(delay_ms=2.5, error_rate=0.1, instance_count=3))
    config = read_config(folder / "config.pbtxt")
    assert config.backend == "python" and config.instance_group[0].count == 3
    assert config.parameters["icd_delay_ms"].string_value == "2.5"
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000


def test_the_openvino_backend_gets_the_artefacts_compile_properties_and_the_served_threads():
    """An int8 recipe that leaves the unquantized part in bf16 (``*_bf16``) is served with that hint by Triton's
    openvino backend, as it was verified; the thread count is the serving budget's, not the export's."""
    from icd.export.repository import _parameters
    from icd.runtimes.base import ExportedArtefact, Precision, Variant
    from icd.runtimes.registry import get_runtime

    variant = Variant("openvino", Precision.INT8)
    artefact = ExportedArtefact(variant, ("model.xml", "model.bin"),
                                {"INFERENCE_NUM_THREADS": "2", "INFERENCE_PRECISION_HINT": "bf16",
                                 "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}, {})
    serving, params = _parameters(ExportOptions(platform=Platform.OPENVINO), {"layout_efficiency": 0.5}, variant,
                                  get_runtime("openvino", check_installed=False), artefact, threads=1)
    assert serving["backend"] == "openvino"
    assert params["INFERENCE_PRECISION_HINT"] == "bf16" and params["INFERENCE_NUM_THREADS"] == "1"
    assert params["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "0" and params["icd_precision"] == "int8"
