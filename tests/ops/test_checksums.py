from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from icd.errors import ArtefactError
from icd.ops.checksums import Problem, verify_path
from icd.serve.backend.icd_runtime import MANIFEST_NAME, manifest_text
from tests.ops.helpers import run_icd


def _version(tmp_path: Path) -> Path:
    folder = tmp_path / "repo" / "bert_icd" / "1"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights" * 100)
    (folder / "permutation.json").write_text('{"hidden": [1, 0]}')
    (folder / "model.py").write_text("print('x')\n")
    (folder / MANIFEST_NAME).write_text(manifest_text(folder))
    (folder.parent / "config.pbtxt").write_text('name: "bert_icd"\nbackend: "python"\nmax_batch_size: 8\n')
    return folder


@pytest.mark.binary
def test_clean_folder_verifies_and_sha256sum_accepts_manifest(tmp_path):
    folder = _version(tmp_path)
    report = verify_path(tmp_path / "repo")
    assert report.ok and report.files_checked == 3 and report.folders == [folder]
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "-c", MANIFEST_NAME], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    folder = _version(tmp_path)
    (folder / "model.pt").write_bytes(b"tampered")
    (folder / "permutation.json").write_text('{"hidden": [0, 1]}')
    (folder / "model.py").unlink()
    (folder / "extra.bin").write_bytes(b"x")
    report = verify_path(folder)
    kinds = sorted((f.name, f.problem) for f in report.findings)
    assert kinds == [("extra.bin", Problem.UNLISTED), ("model.pt", Problem.MISMATCH),
                     ("model.py", Problem.MISSING), ("permutation.json", Problem.MISMATCH)]


def test_cli_exit_codes(tmp_path, capsys):
    folder = _version(tmp_path)
    ok = run_icd(capsys, "verify", str(tmp_path / "repo"))
    assert ok.returncode == 0 and "OK: 3 files" in ok.stdout
    (folder / "model.pt").write_bytes(b"tampered")
    bad = run_icd(capsys, "verify", str(tmp_path / "repo"))
    assert bad.returncode == 1 and "model.pt: sha256 mismatch" in bad.stdout
    missing = run_icd(capsys, "verify", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "nope" in missing.stderr


def test_no_manifest_is_an_artefact_error(tmp_path):
    with pytest.raises(ArtefactError, match="no checksums.sha256"):
        verify_path(tmp_path)


@pytest.mark.parametrize(("content", "detail"), [
    (b"this is { not a config", "not a valid Triton ModelConfig"),
    (b"\xd5\x00\xff binary", "not a text protobuf (byte 0 is not UTF-8)"),
])
def test_a_config_triton_cannot_read_fails_verify_though_the_checksums_match(tmp_path, capsys, content, detail):
    folder = _version(tmp_path)
    (folder.parent / "config.pbtxt").write_bytes(content)
    done = run_icd(capsys, "verify", str(folder.parent))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"FAIL {folder.parent}/config.pbtxt: not a valid Triton config ({detail}" in done.stdout
