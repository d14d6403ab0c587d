"""The choice rule on small tables: the fastest variant meeting the floor; else the most faithful."""

from __future__ import annotations

import pytest

from icd.runtimes.choice import ProfileRow, choose, meets


def _row(name, cos, nn, ms, error=None):
    return ProfileRow(name, cos, cos, nn, ms, error)


TABLE = [
    _row("torchscript:fp32", 1.0, 1.0, 130.0),
    _row("torchscript:int8", 0.9991, 0.980, 44.0),
    _row("onnx:fp32", 1.0, 1.0, 75.0),
    _row("openvino:bf16", 0.99999, 1.0, 40.0),
    _row("openvino:int8", 0.998, 0.961, 24.0),
]


def test_fastest_variant_meeting_the_floor_wins():
    choice = choose(TABLE, min_cos=0.999, min_nn=0.98)
    assert choice.variant == "openvino:bf16" and choice.meets_floor
    assert "fastest of 4" in choice.reason


def test_a_lower_floor_admits_the_faster_int8():
    assert choose(TABLE, min_cos=0.99, min_nn=0.95).variant == "openvino:int8"


def test_nn_floor_alone_excludes_a_variant():
    assert choose(TABLE, min_cos=0.9, min_nn=0.97).variant == "openvino:bf16"


def test_no_variant_meets_the_floor_then_the_most_faithful_is_named_as_such():
    rows = [_row("a", 0.99, 0.9, 10.0), _row("b", 0.995, 0.9, 20.0)]
    choice = choose(rows, min_cos=0.999, min_nn=0.98)
    assert choice.variant == "b" and not choice.meets_floor and "no variant meets" in choice.reason


def test_failed_variants_are_never_chosen():
    rows = [_row("broken", None, None, None, error="not installed"), _row("ok", 1.0, 1.0, 50.0)]
    assert choose(rows, 0.999, 0.98).variant == "ok"
    assert not meets(rows[0], 0.0, 0.0)


def test_ties_in_latency_break_by_name():
    rows = [_row("b", 1.0, 1.0, 10.0), _row("a", 1.0, 1.0, 10.0)]
    assert choose(rows, 0.999, 0.98).variant == "a"


def test_nothing_measured_is_an_error():
    with pytest.raises(ValueError, match="no variant was measured"):
        choose([_row("x", None, None, None, error="failed")], 0.9, 0.9)


def test_the_reason_names_the_agreement_of_the_task():
    """Classifiers are judged on argmax agreement (their few logits make NN agreement noise); the reason says so."""
    assert "argmax >= 0.98" in choose(TABLE, 0.999, 0.98, agreement="argmax").reason
    assert "NN >= 0.98" in choose(TABLE, 0.999, 0.98).reason


def test_recipe_rows_add_openvino_int8_once_per_named_recipe():
    """A named recipe adds a row once; the default recipe (``icd_outliers_fused_fp32``) is the plain row's."""
    from icd.errors import ConfigError
    from icd.runtimes.base import Precision, Variant
    from icd.runtimes.profile import recipe_rows

    wanted = [Variant("onnx", Precision.FP32), Variant("openvino", Precision.INT8)]
    rows = recipe_rows(wanted, ["icd_outliers_fused", "icd_outliers_fused_fp32", "icd_outliers_fused"])
    assert [(name, recipe) for name, _, recipe in rows] == [
        ("onnx:fp32", None), ("openvino:int8", None), ("openvino:int8+icd_outliers_fused", "icd_outliers_fused")]
    assert rows[2][1] == Variant("openvino", Precision.INT8)
    with pytest.raises(ConfigError, match="--int8-recipe: int8 recipe 'fast' is not one of"):
        recipe_rows(wanted, ["fast"])
    with pytest.raises(ConfigError, match="needs openvino:int8 among the profiled variants"):
        recipe_rows(wanted[:1], ["icd_outliers_fused"])


@pytest.mark.parametrize("chosen, expected", [
    ("openvino:int8+icd_outliers_fused", ("openvino:int8", "icd_outliers_fused")),
    ("openvino:int8", ("openvino:int8", None)),
    ("onnx:fp32", ("onnx:fp32", None)),
])
def test_read_choice_reads_the_recipe_of_a_chosen_row(chosen, expected, tmp_path):
    import json

    from icd.runtimes.profile import PROFILE_FILE, read_choice

    (tmp_path / PROFILE_FILE).write_text(json.dumps({"choice": {"variant": chosen}}))
    variant, recipe = read_choice(tmp_path)
    assert (variant.name, recipe) == expected


def test_read_choice_refuses_a_recipe_on_another_variant(tmp_path):
    import json

    from icd.errors import ArtefactError
    from icd.runtimes.profile import PROFILE_FILE, read_choice

    (tmp_path / PROFILE_FILE).write_text(json.dumps({"choice": {"variant": "onnx:fp32+icd_outliers_fused"}}))
    with pytest.raises(ArtefactError, match="only openvino:int8 takes a recipe"):
        read_choice(tmp_path)


def test_read_choice_refuses_a_recipe_it_does_not_know(tmp_path):
    import json

    from icd.errors import ArtefactError
    from icd.runtimes.profile import PROFILE_FILE, read_choice

    (tmp_path / PROFILE_FILE).write_text(json.dumps({"choice": {"variant": "openvino:int8+icd_fastest"}}))
    with pytest.raises(ArtefactError, match=r"runtime_profile.json: choice.variant 'openvino:int8\+icd_fastest': int8 "
                                            r"recipe "
                                            r"'icd_fastest' is not one of \["):
        read_choice(tmp_path)


@pytest.mark.parametrize("doc, needle", [
    ([], "field choice.variant is missing or not a string (got None)"),
    ({"chosen": "onnx:fp32"}, "field choice.variant is missing or not a string (got None)"),
    ({"choice": {"variant": 3}}, "field choice.variant is missing or not a string (got 3)"),
    ({"choice": {"variant": "tensorrt:fp8"}}, "choice.variant 'tensorrt:fp8': "),
])
def test_read_choice_names_the_field_and_value_of_a_malformed_profile(doc, needle, tmp_path):
    import json

    from icd.errors import ArtefactError
    from icd.runtimes.profile import PROFILE_FILE, read_choice

    (tmp_path / PROFILE_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtefactError) as refused:
        read_choice(tmp_path)
    assert str(refused.value).startswith(str(tmp_path / PROFILE_FILE)) and needle in str(refused.value)


def test_export_takes_the_profiles_recipe_only_for_the_variant_it_chose(tmp_path):
    import json

    from icd.export.options import ExportOptions
    from icd.export.repository import chosen_recipe, profile_choice
    from icd.runtimes.base import Precision, Variant
    from icd.runtimes.profile import PROFILE_FILE

    (tmp_path / PROFILE_FILE).write_text(json.dumps({"choice": {"variant": "openvino:int8+icd_outliers_fused"}}))
    int8, bf16 = Variant("openvino", Precision.INT8), Variant("openvino", Precision.BF16)
    choice = profile_choice(tmp_path, ExportOptions())
    assert choice == (int8, "icd_outliers_fused")
    assert chosen_recipe(choice, ExportOptions(), int8) == "icd_outliers_fused"
    assert chosen_recipe(choice, ExportOptions(), bf16) is None
    assert chosen_recipe(choice, ExportOptions(int8_recipe="nncf_default"), int8) == "nncf_default"
    assert profile_choice(tmp_path, ExportOptions(baseline=True)) is None
    assert chosen_recipe(choice, ExportOptions(baseline=True), int8) is None
