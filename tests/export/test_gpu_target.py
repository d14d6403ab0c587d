"""``--target gpu``: which variants serve on KIND_GPU instances, and what the export resolves and refuses."""

from __future__ import annotations

import json

import pytest

from icd.cli.main import main
from icd.export.gpu_target import gpu_problem
from icd.export.options import ExportOptions, Platform, Target
from icd.export.repository import resolve_variant
from icd.runtimes.base import Precision, Variant

FP32, BF16, INT8 = Precision.FP32, Precision.BF16, Precision.INT8


@pytest.mark.parametrize("variant, platform, runs_on_gpu", [
    (Variant("torchscript", FP32), Platform.PYTHON, True),
    (Variant("torchscript", FP32), Platform.PYTORCH_LIBTORCH, True),
    (Variant("torchscript", INT8), Platform.PYTHON, False),
    (Variant("onnx", FP32), Platform.ONNXRUNTIME_ONNX, True),
    (Variant("onnx", FP32), Platform.PYTHON, False),
    (Variant("openvino", BF16), Platform.PYTHON, False),
    (Variant("openvino", INT8), Platform.OPENVINO, False),
])
def test_which_variants_serve_on_gpu_instances(variant, platform, runs_on_gpu):
    problem = gpu_problem(variant, platform)
    assert (problem is None) == runs_on_gpu
    if problem is not None:
        assert "CPU" in problem


def test_a_cpu_profile_choice_is_left_aside_for_a_gpu_target():
    choice = (Variant("openvino", BF16), None)
    cpu = resolve_variant(choice, ExportOptions(), has_int8=True)
    assert cpu[0] == Variant("openvino", BF16) and cpu[1] == "icd profile choice (runtime_profile.json)"
    variant, where = resolve_variant(choice, ExportOptions(target=Target.GPU), has_int8=True)
    assert variant == Variant("torchscript", FP32), "the run's int8 TorchScript runs on the CPU only"
    assert "openvino:bf16 runs on the CPU" in where and "fp32" in where
    variant, _ = resolve_variant(choice, ExportOptions(target=Target.GPU), has_int8=False)
    assert variant == Variant("torchscript", FP32)
    torch_choice = (Variant("torchscript", FP32), None)
    assert resolve_variant(torch_choice, ExportOptions(target=Target.GPU), has_int8=True) == (
        Variant("torchscript", FP32), "icd profile choice (runtime_profile.json)")


@pytest.mark.parametrize("extra, message", [
    (["--runtime", "openvino", "--precision", "bf16"], "openvino:bf16 (--runtime, --precision) cannot serve on "
                                                       "KIND_GPU instances: openvino runs on the CPU"),
    (["--precision", "int8"], "torchscript:int8"),
])
def test_a_cpu_only_variant_named_for_a_gpu_target_is_refused_before_anything_is_written(identity_run_dir, tmp_path,
                                                                                          capsys, extra, message):
    out = tmp_path / "repo"
    argv = ["export-triton", "--input-dir", str(identity_run_dir), "--model-name", "bert_icd", "--output-dir",
            str(out), "--target", "gpu", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err and "--target cpu" in err, err
    assert not out.exists() or not any(out.rglob("*")), "nothing written"


def test_a_gpu_export_without_a_runtime_ignores_the_cpu_profile_choice(identity_run_dir, tmp_path):
    """A run profiled on the CPU (choice openvino:bf16) exported for the GPU: torchscript fp32 on KIND_GPU."""
    import shutil

    from icd.export.repository import export_model

    run = tmp_path / "run"
    shutil.copytree(identity_run_dir, run)
    profile = {"schema": "icd.runtime_profile/v1", "choice": {"variant": "openvino:bf16"}}
    (run / "runtime_profile.json").write_text(json.dumps(profile))
    result = export_model(run, tmp_path / "repo", ExportOptions(target=Target.GPU))
    assert result.variant == Variant("torchscript", FP32)
    assert "openvino:bf16 runs on the CPU" in result.variant_source
    assert "KIND_GPU" in result.config_path.read_text()
