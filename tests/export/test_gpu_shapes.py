"""A GPU export names the encoder's Linears whose widths fp16 tensor cores run slowly (docs/gpu.md)."""

from __future__ import annotations

from icd.export.gpu_shapes import gpu_shape_warning, unaligned_linears
from icd.transforms.compact_slice import keep_ffn_
from tests.model.tiny import tiny_encoder


def test_a_compacted_ffn_of_unaligned_width_is_named():
    model = tiny_encoder()
    assert gpu_shape_warning(model) is None  # 64 hidden, 128 FFN: aligned
    keep_ffn_(model, 1, list(range(90)))  # what compaction leaves with ffn_multiple=1
    assert unaligned_linears(model.base) == ["encoder.layer.1.intermediate.dense (90 x 64)",
                                             "encoder.layer.1.output.dense (64 x 90)"]
    warning = gpu_shape_warning(model)
    assert warning.startswith("2 Linear layer(s) of the encoder have a width that is not a multiple of 8")
    assert "encoder.layer.1.output.dense (64 x 90)" in warning and "ffn_multiple=64" in warning
    aligned = tiny_encoder()
    keep_ffn_(aligned, 1, list(range(96)))
    assert gpu_shape_warning(aligned) is None


def test_a_classifier_head_with_few_labels_is_not_a_gpu_cost():
    model = tiny_encoder(task="sequence_classification")
    assert any(m.out_features % 8 for m in model.modules() if hasattr(m, "out_features"))  # the 2-label head
    assert gpu_shape_warning(model) is None


def test_only_a_gpu_export_carries_the_warning():
    from types import SimpleNamespace

    from icd.export.options import ExportOptions, Target
    from icd.export.repository import _warnings

    model = tiny_encoder()
    keep_ffn_(model, 0, list(range(90)))
    source = SimpleNamespace(fp32=model)
    assert _warnings(ExportOptions(target=Target.CPU), source) == ()
    (warning,) = _warnings(ExportOptions(target=Target.GPU), source)
    assert "encoder.layer.0.intermediate.dense (90 x 64)" in warning
