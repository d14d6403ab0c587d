"""Bad input to `icd export-triton` / `icd serve`: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from icd.cli.main import main
from icd.config.loader import load_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bert.json"


def _run_dir(tmp_path: Path) -> Path:
    """A run dir that passes every check before the model is loaded (the model folder is empty)."""
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.lock.json").write_text(json.dumps(load_config(CONFIG).model_dump(mode="json")))
    (run / "permutation.json").write_text(json.dumps({"schema": "icd.permutation/v1", "model": {}, "dims": []}))
    np.savez(run / "correlation_matrix.npz", hidden=np.eye(4))
    return run


def _fails(capsys, argv: list[str], message: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    return err


def _export(run: Path, out: Path, *extra: str) -> list[str]:
    return ["export-triton", "--input-dir", str(run), "--model-name", "bert_icd", "--output-dir", str(out), *extra]


def test_missing_run_dir(tmp_path, capsys):
    _fails(capsys, _export(tmp_path / "nope", tmp_path / "out"), "run directory not found")


@pytest.mark.parametrize("artefact", ["config.lock.json", "permutation.json", "correlation_matrix.npz", "model"])
def test_missing_artefact(tmp_path, capsys, artefact):
    run = _run_dir(tmp_path)
    target = run / artefact
    if target.is_dir():
        target.rmdir()
    else:
        target.unlink()
    _fails(capsys, _export(run, tmp_path / "out"), f"{artefact}")
    assert not (tmp_path / "out" / "bert_icd" / "1").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"schema": "icd.permutation/v1", "model": {}, "dims": [
            {"name": "hidden", "kind": "hidden", "size": 3, "block": None, "perm": [0, 0, 1], "sha256": "x"}]}),
         "not a permutation"),
        (json.dumps({"schema": "other"}), "schema"),
    ],
)
def test_invalid_permutation_json(tmp_path, capsys, content, message):
    run = _run_dir(tmp_path)
    (run / "permutation.json").write_text(content)
    _fails(capsys, _export(run, tmp_path / "out"), message)


def test_invalid_config_lock(tmp_path, capsys):
    run = _run_dir(tmp_path)
    (run / "config.lock.json").write_text(json.dumps({"model": {"max_length": -1}}))
    _fails(capsys, _export(run, tmp_path / "out"), "model.max_length")


def test_unfinished_run(tmp_path, capsys):
    run = _run_dir(tmp_path)
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    _fails(capsys, _export(run, tmp_path / "out"), "not 'complete'")


def test_corrupt_correlation_file(tmp_path, capsys):
    run = _run_dir(tmp_path)
    (run / "correlation_matrix.npz").write_bytes(b"not a zip")
    _fails(capsys, _export(run, tmp_path / "out"), "not a readable .npz")


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--preferred-batch-sizes", "4,x"], "--preferred-batch-sizes"), (["--target", "tpu"], "target"),
     (["--max-batch-size", "8", "--preferred-batch-sizes", "16"], "preferred_batch_sizes"),
     (["--trim-padding", "-8"], "trim_padding: Input should be greater than or equal to 0")],
)
def test_invalid_flags(tmp_path, capsys, extra, message):
    _fails(capsys, _export(_run_dir(tmp_path), tmp_path / "out", *extra), message)
    assert not (tmp_path / "out").exists(), "nothing written"


def test_invalid_model_name(tmp_path, capsys):
    argv = _export(_run_dir(tmp_path), tmp_path / "out")
    argv[argv.index("bert_icd")] = "../escape"
    _fails(capsys, argv, "model_name")


def test_serve_unknown_model_name(triton_repo_small, capsys):
    _fails(capsys, ["serve", "--model-repository", str(triton_repo_small), "--model", "bert_nope"],
           "unknown model name 'bert_nope'")


def test_serve_missing_repository(tmp_path, capsys):
    _fails(capsys, ["serve", "--model-repository", str(tmp_path / "none")], "model repository not found")


def test_serve_port_in_use(triton_repo_small, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["serve", "--model-repository", str(triton_repo_small), "--http-port", str(_free()),
                "--grpc-port", str(_free()), "--metrics-port", str(port)]
        _fails(capsys, argv,
               f"metrics port {port} is already in use")


def test_serve_binary_missing(triton_repo_small, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ICD_TRITONSERVER_BIN", str(tmp_path / "missing" / "tritonserver"))
    _fails(capsys, ["serve", "--model-repository", str(triton_repo_small), "--http-port", str(_free()),
                    "--grpc-port", str(_free()), "--metrics-port", str(_free())], "tritonserver binary not found")


def _free() -> int:
    from tests.conftest import _free_port

    return _free_port()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("opts.json", "{broken", "not valid JSON"), ("opts.yaml", "max_batch_size: -3\n", "max_batch_size"),
     ("opts.json", "[1, 2]", "must be a mapping")],
)
def test_invalid_export_config_file(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    _fails(capsys, _export(_run_dir(tmp_path), tmp_path / "out", "--export-config", str(path)), message)


@pytest.mark.e2e
def test_serve_names_the_file_a_runtime_cannot_load_though_its_checksum_matches(triton_repo_bert, tmp_path, capsys):
    """A version folder whose manifest was rewritten over a truncated model.pt / a broken permutation.json (the
    checksums match: the files are what the exporter — or someone with write access — left)."""
    import shutil

    from icd.serve.backend.icd_runtime import MANIFEST_NAME, manifest_text

    repo = tmp_path / "models"
    repo.mkdir()
    for name in ("mt", "mp"):
        shutil.copytree(triton_repo_bert / "bert_icd", repo / name)
        config = repo / name / "config.pbtxt"
        config.write_text(config.read_text().replace('name: "bert_icd"', f'name: "{name}"'))
    (repo / "mt" / "1" / "model.pt").write_bytes((repo / "mt" / "1" / "model.pt").read_bytes()[:1000])
    (repo / "mp" / "1" / "permutation.json").write_text('{"dims": [\n')
    for name in ("mt", "mp"):
        (repo / name / "1" / MANIFEST_NAME).write_text(manifest_text(repo / name / "1"))
    err = _fails(capsys, ["serve", "--model-repository", str(repo), "--http-port", str(_free()), "--grpc-port",
                          str(_free()), "--metrics-port", str(_free())], "no model is READY")
    assert f"{repo / 'mt' / '1'}/model.pt: torch cannot load it (PytorchStreamReader" in err, err
    assert "permutation.json: not valid JSON (" in err, err
