"""Bad runtime input: one line, exit 2, no half-written version folder."""

from __future__ import annotations

import shutil

import pytest

from icd.cli.main import main
from icd.runtimes.base import Session
from icd.runtimes.onnxruntime import OnnxRuntime
from icd.runtimes.registry import register_runtime, unregister_runtime


class _Drifting(OnnxRuntime):
    """A runtime whose artefact computes something else than the model (outputs scaled by 1.1)."""

    name = "onnx_drifting"

    def load(self, folder, threads):
        inner = super().load(folder, threads)
        return Session(inner.variant, lambda ids, mask: inner.numpy(ids, mask) * 1.1, "drifting")


class _Missing(OnnxRuntime):
    name = "onnx_missing"
    package = "icd_no_such_runtime_package"


@pytest.fixture
def extra_runtimes():
    for runtime in (_Drifting(), _Missing()):
        register_runtime(runtime)
    yield
    for name in ("onnx_drifting", "onnx_missing"):
        unregister_runtime(name)


@pytest.mark.parametrize("args, needle", [
    (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'; known: torchscript, onnx, openvino"),
    (["--runtime", "torchscript", "--precision", "bf16"], "runtime 'torchscript' has no precision 'bf16'"),
    (["--precision", "fp8"], "precision 'fp8' must be one of"),
    (["--runtime", "onnx", "--platform", "openvino"], "platform openvino serves runtime openvino, not onnx"),
    (["--runtime", "onnx_missing"], "needs the Python package 'icd_no_such_runtime_package'"),
    (["--runtime", "onnx_drifting"], "onnx_drifting:fp32: verification failed: exported artefact differs"),
    (["--runtime", "openvino", "--precision", "int8", "--int8-recipe", "icd_fast"],
     "int8_recipe: int8 recipe 'icd_fast' is not one of ["),
    (["--runtime", "onnx", "--int8-recipe", "icd_outliers_fused"],
     "int8_recipe icd_outliers_fused is for runtime openvino, precision int8; got runtime onnx"),
    (["--int8-recipe", "icd_outliers_fused"],  # the identity run has no profile: torchscript fp32
     "--int8-recipe icd_outliers_fused is for openvino int8; this export is torchscript:fp32"),
])
def test_export_refuses_with_one_line_and_writes_nothing(args, needle, identity_run_dir, tmp_path, capsys,
                                                          extra_runtimes):
    out = tmp_path / "models"
    rc = main(["export-triton", "--input-dir", str(identity_run_dir), "--model-name", "m", "--output-dir", str(out),
               *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not out.exists(), "the --output-dir this export created is left behind"


def test_profile_refuses_an_unknown_runtime_and_a_missing_run(tmp_path, capsys):
    assert main(["profile", str(tmp_path / "nope"), "--runtime", "nope"]) == 2
    assert "unknown runtime 'nope'" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_profile_refuses_unknown_inputs_naming_the_flag_and_writes_nothing(identity_run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(identity_run_dir, run)
    assert main(["profile", str(run), "--inputs", "zipf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--inputs 'zipf' is not one of ['text', 'random']" in err and len(err.splitlines()) == 1, err
    assert not (run / "runtime_profile.json").exists()
