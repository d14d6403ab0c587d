"""Which exports trim their batches' padding (``icd_trim_padding``), and why, in the export's own words."""

from __future__ import annotations

import pytest

from icd.export.options import DEFAULT_TRIM_PADDING, ExportOptions
from icd.export.repository import padding_trim


def test_every_export_trims_to_a_multiple_of_8_by_default():
    """int8 with per-batch activation ranges (TorchScript, ONNX Runtime) included: trimming changes its outputs
    but not its fidelity to fp32 (bench/int8_padding.py)."""
    multiple, words = padding_trim(ExportOptions())
    assert multiple == DEFAULT_TRIM_PADDING == 8
    assert words == "trailing padding trimmed to a multiple of 8 tokens (default)"


def test_trim_padding_option_sets_the_multiple_zero_keeps_padding_negative_is_refused():
    assert padding_trim(ExportOptions(trim_padding=16)) == (
        16, "trailing padding trimmed to a multiple of 16 tokens (--trim-padding)")
    assert padding_trim(ExportOptions(trim_padding=0)) == (0, "padding kept (--trim-padding 0)")
    with pytest.raises(ValueError, match="trim_padding"):
        ExportOptions(trim_padding=-1)
