"""The permutable dimensions of a BERT encoder and the Linears each one indexes."""

from __future__ import annotations

import numpy as np
import pytest

from icd.model.layout import (
    BertShape,
    Dim,
    DimKind,
    bert_shape,
    dims_of_shape,
    input_readers,
    output_writers,
    parse_dim_name,
    permutable_dims,
    permutation_problem,
)
from tests.model.tiny import tiny_encoder

MINILM = BertShape(layers=6, hidden=384, intermediate=1536, heads=12)


def test_minilm_dims_names_sizes_blocks(minilm_encoder):
    assert bert_shape(minilm_encoder) == MINILM
    dims = permutable_dims(minilm_encoder)
    assert dims[0] == Dim("hidden", 384, DimKind.HIDDEN, None, None)
    assert len(dims) == 1 + 6 * 4
    by_name = {d.name: d for d in dims}
    assert by_name["layer5.ffn"] == Dim("layer5.ffn", 1536, DimKind.FFN, 5, None)
    assert by_name["layer0.heads"] == Dim("layer0.heads", 12, DimKind.HEADS, 0, None)
    assert by_name["layer3.qk"] == Dim("layer3.qk", 384, DimKind.QK, 3, 32)
    assert by_name["layer3.vo"] == Dim("layer3.vo", 384, DimKind.VO, 3, 32)


def test_kinds_filter_and_head_dim_family():
    assert [d.name for d in dims_of_shape(MINILM, kinds=("hidden",))] == ["hidden"]
    head_dims = dims_of_shape(MINILM, kinds=("head_dim",))
    assert {d.kind for d in head_dims} == {DimKind.QK, DimKind.VO} and len(head_dims) == 12
    assert len(dims_of_shape(MINILM, kinds=("ffn", "heads"))) == 12
    with pytest.raises(ValueError, match="unknown kind 'bogus'"):
        dims_of_shape(MINILM, kinds=("bogus",))


def test_parse_dim_name_rejects_unknown_names():
    assert parse_dim_name("layer2.vo", MINILM).block == 32
    for bad in ("layer6.ffn", "layer0.mlp", "hiden", "layer.ffn"):
        with pytest.raises(ValueError, match="unknown permutable dim"):
            parse_dim_name(bad, MINILM)


@pytest.mark.parametrize("task", ["embedding", "sequence_classification"])
def test_readers_and_writers_have_the_dim_on_the_right_axis(task):
    encoder = tiny_encoder(task)
    bert = encoder.bert
    shape = bert_shape(encoder)
    for dim in permutable_dims(encoder):
        channels = dim.size * (shape.head_dim if dim.kind == DimKind.HEADS else 1)
        readers = input_readers(encoder, dim.name)
        for name in readers:
            assert bert.get_submodule(name).weight.shape[1] == channels, (dim.name, name)
        for name in output_writers(encoder, dim.name):
            assert bert.get_submodule(name).weight.shape[0] == channels, (dim.name, name)
        if dim.kind == DimKind.QK:
            assert readers == []
        else:
            assert readers
    hidden_readers = input_readers(encoder, "hidden")
    assert ("pooler.dense" in hidden_readers) == (task == "sequence_classification")
    assert len(hidden_readers) == 4 * shape.layers + (task == "sequence_classification")


def test_permutation_problem_messages():
    assert permutation_problem(np.arange(8), 8, 4) is None
    assert "expected size 8" in permutation_problem(np.arange(7), 8, None)
    assert "value 8 at index 0" in permutation_problem(np.array([8, 1, 2, 3, 4, 5, 6, 7]), 8, None)
    assert "3 is missing" in permutation_problem(np.array([0, 1, 2, 2]), 4, None)
    assert "across blocks of 4" in permutation_problem(np.array([4, 1, 2, 3, 0, 5, 6, 7]), 8, 4)
