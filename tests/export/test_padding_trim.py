"""What python-backend exports write for the backend to read per batch: the padding trim (``icd_trim_padding``, and
why, in the export's own words) and the per-request input limits (``icd_max_tokens``, ``icd_vocab_size``)."""

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


@pytest.mark.parametrize(("model_type", "max_tokens"), [("bert", 512), ("distilbert", 512), ("roberta", 128),
                                                         ("mpnet", 128)])
def test_input_limits_are_the_models_positions_and_vocabulary(model_type, max_tokens):
    """RoBERTa and MPNet positions start after the padding index: 130 positions read 128 tokens."""
    from icd.export.repository import input_limits
    from icd.runtimes.source import ModelSource
    from tests.model.tiny import VOCAB, tiny_encoder

    limits = input_limits(ModelSource(tiny_encoder(model_type=model_type)))
    assert limits == {"icd_max_tokens": str(max_tokens), "icd_vocab_size": str(VOCAB)}
