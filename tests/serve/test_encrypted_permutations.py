"""The served model reads its permutations from ``permutation.json.enc`` with the key from the environment;
a wrong key makes that model refuse to load (real Triton), and the key never reaches the log."""

from __future__ import annotations

import secrets
import shutil

import pytest

from icd.ops.crypto import encrypt_file
from icd.serve.backend import icd_runtime as rt
from icd.serve.triton_local import ModelControlMode

pytestmark = pytest.mark.slow  # builds the real MiniLM export


def _encrypted_repo(tmp_path, triton_repo_bert):
    repo = tmp_path / "repo"
    shutil.copytree(triton_repo_bert / "bert_icd", repo / "bert_icd")
    key = secrets.token_bytes(32)
    encrypt_file(repo / "bert_icd" / "1" / "permutation.json", key)
    return repo, key


def test_runtime_reads_encrypted_permutations(tmp_path, triton_repo_bert):
    repo, key = _encrypted_repo(tmp_path, triton_repo_bert)
    folder = repo / "bert_icd" / "1"
    assert not (folder / "permutation.json").exists()
    perms = rt.read_permutations(folder, {rt.KEY_ENV: key.hex()})
    assert perms and all(sorted(p) == list(range(len(p))) for p in perms.values())
    with pytest.raises(rt.DecryptionError, match="wrong key or tampered"):
        rt.read_permutations(folder, {rt.KEY_ENV: secrets.token_bytes(32).hex()})
    with pytest.raises(rt.DecryptionError, match="set \\$ICD_PERMUTATION_KEY"):
        rt.read_permutations(folder, {})


def _reason(server, name: str) -> str:
    return next((m.get("reason", "") for m in server.repository_index() if m["name"] == name), "")


@pytest.mark.e2e
def test_triton_serves_with_the_key_and_refuses_a_wrong_one(tmp_path, triton_repo_bert, triton_server):
    repo, key = _encrypted_repo(tmp_path, triton_repo_bert)
    explicit = {"model_control_mode": ModelControlMode.EXPLICIT, "load_models": ("bert_icd",), "timeout_s": 300}
    good = triton_server(repo, env={rt.KEY_ENV: key.hex()}, **explicit)
    assert good.model_ready("bert_icd")
    good.stop()
    wrong = secrets.token_bytes(32).hex()
    bad = triton_server(repo, env={rt.KEY_ENV: wrong}, **explicit)
    assert not bad.model_ready("bert_icd")
    assert "wrong key or tampered" in _reason(bad, "bert_icd")
    assert wrong not in bad.log_text() and key.hex() not in good.log_text()


@pytest.mark.parametrize(("text", "needle"), [
    ('{"dims": [', "permutation.json: not valid JSON ("),
    ('[1, 2]', "permutation.json: a JSON object is expected, got list"),
    ('{"dims": [{"perm": [1, 0]}]}', "permutation.json: dims must be a list of {name, perm} entries (KeyError"),
])
def test_a_malformed_permutation_file_is_named(tmp_path, text, needle):
    (tmp_path / rt.PERMUTATION_FILE).write_text(text)
    with pytest.raises(rt.LayoutError) as info:
        rt.read_permutations(tmp_path, {})
    assert needle in str(info.value)


def test_a_malformed_layout_record_is_named(tmp_path):
    (tmp_path / rt.LAYOUT_FILE).write_text('{"layout_efficiency": "high", "identity_layout": true}')
    with pytest.raises(rt.LayoutError, match="icd_layout.json: layout_efficiency must be a number, got 'high'"):
        rt.LayoutRecord.load(tmp_path, {})
