"""Which exports trim their batches' padding (``icd_trim_padding``), and why, in the export's own words."""

from __future__ import annotations

import pytest

from icd.export.options import DEFAULT_TRIM_PADDING, ExportOptions
from icd.export.repository import padding_trim
from icd.runtimes.base import Precision, Variant
from icd.runtimes.registry import get_runtime


@pytest.mark.parametrize(("runtime", "precision"), [("torchscript", "fp32"), ("onnx", "fp32"), ("openvino", "fp32"),
                                                    ("openvino", "bf16"), ("openvino", "int8")])
def test_variants_whose_tokens_do_not_see_the_padding_trim_by_default(runtime, precision):
    multiple, words = padding_trim(ExportOptions(), Variant(runtime, Precision(precision)), get_runtime(runtime))
    assert multiple == DEFAULT_TRIM_PADDING == 8
    assert words == "trailing padding trimmed to a multiple of 8 tokens (default)"


@pytest.mark.parametrize("runtime", ["torchscript", "onnx"])
def test_int8_with_activation_ranges_per_batch_keeps_its_padding_unless_told(runtime):
    variant = Variant(runtime, Precision.INT8)
    multiple, words = padding_trim(ExportOptions(), variant, get_runtime(runtime))
    assert multiple == 0 and "takes its int8 activation ranges from each batch" in words
    multiple, words = padding_trim(ExportOptions(trim_padding=16), variant, get_runtime(runtime))
    assert (multiple, words) == (16, "trailing padding trimmed to a multiple of 16 tokens (--trim-padding)")


def test_trim_padding_zero_keeps_padding_and_negative_is_refused():
    variant = Variant("openvino", Precision.BF16)
    assert padding_trim(ExportOptions(trim_padding=0), variant, get_runtime("openvino")) == (
        0, "padding kept (--trim-padding 0)")
    with pytest.raises(ValueError, match="trim_padding"):
        ExportOptions(trim_padding=-1)
