from __future__ import annotations

import json
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.errors import UserError
from icd.ops.checksums import verify_path
from icd.ops.crypto import (KEY_ENV, DecryptionError, decrypt_envelope, encrypt_bytes, encrypt_file, generate_key,
                            load_permutation, read_key)
from icd.serve.backend.icd_runtime import MANIFEST_NAME, manifest_text
from tests.ops.helpers import run_icd, run_script

KEY = bytes(range(32))


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=2048))
def test_roundtrip_any_bytes(data):
    assert decrypt_envelope(encrypt_bytes(data, KEY, "p.json"), KEY, "x") == data


def test_keygen_mode_0600_and_refuses_overwrite(tmp_path):
    path = generate_key(tmp_path / "production.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(read_key(path)) == 32
    with pytest.raises(UserError, match="exists"):
        generate_key(path)


def test_wrong_key_and_tampering_are_refused(tmp_path):
    doc = encrypt_bytes(b'{"hidden": [1, 0]}', KEY, "permutation.json")
    with pytest.raises(DecryptionError, match="wrong key or tampered"):
        decrypt_envelope(doc, bytes(32), "f")
    raw = bytearray(__import__("base64").b64decode(doc["ciphertext"]))
    raw[0] ^= 1
    tampered = {**doc, "ciphertext": __import__("base64").b64encode(bytes(raw)).decode()}
    with pytest.raises(DecryptionError, match="wrong key or tampered"):
        decrypt_envelope(tampered, KEY, "f")
    with pytest.raises(DecryptionError):  # renamed to stand in for another file: the bound name differs
        decrypt_envelope({**doc, "name": "other.json"}, KEY, "f")


def test_key_from_env_never_in_messages(tmp_path):
    hex_key = KEY.hex()
    assert read_key(None, {KEY_ENV: hex_key}) == KEY
    with pytest.raises(UserError) as err:
        read_key(None, {KEY_ENV: hex_key[:-2]})
    assert hex_key[:10] not in str(err.value)
    with pytest.raises(UserError, match="no key"):
        read_key(None, {})


def test_encrypt_in_version_folder_keeps_manifest_valid(tmp_path):
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    (folder / "permutation.json").write_text(json.dumps({"hidden": [2, 0, 1]}))
    (folder / MANIFEST_NAME).write_text(manifest_text(folder))
    key_file = generate_key(tmp_path / "k.key")
    result = encrypt_file(folder / "permutation.json", read_key(key_file))
    assert result.manifest_updated and not (folder / "permutation.json").exists()
    assert verify_path(folder).ok
    assert load_permutation(folder / "permutation.json", key_file) == {"hidden": [2, 0, 1]}
    other = generate_key(tmp_path / "other.key")
    with pytest.raises(DecryptionError):
        load_permutation(folder / "permutation.json.enc", other)


def test_guide_command_and_cli_refusal(tmp_path, capsys):
    perm = tmp_path / "permutation.json"
    perm.write_text('{"hidden": [0]}')
    assert run_icd(capsys, "keygen", str(tmp_path / "production.key")).returncode == 0
    done = run_script("encrypt_permutation.py", "--input", str(perm), "--key-file", "production.key", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "permutation.json.enc").is_file() and not perm.exists()
    assert run_icd(capsys, "keygen", str(tmp_path / "wrong.key")).returncode == 0
    refused = run_icd(capsys, "decrypt", "--input", str(tmp_path / "permutation.json.enc"), "--key-file",
                      str(tmp_path / "wrong.key"))
    assert refused.returncode == 2 and "refused" in refused.stderr and "Traceback" not in refused.stderr
    ok = run_icd(capsys, "decrypt", "--input", str(tmp_path / "permutation.json.enc"), "--key-file",
                 str(tmp_path / "production.key"))
    assert ok.returncode == 0 and json.loads(perm.read_text()) == {"hidden": [0]}


def test_missing_key_file_names_icd_keygen(tmp_path, capsys):
    perm = tmp_path / "permutation.json"
    perm.write_text('{"hidden": [0]}')
    done = run_icd(capsys, "encrypt", "--input", str(perm), "--key-file", str(tmp_path / "production.key"))
    assert done.returncode == 2 and perm.is_file()
    assert f"key file not found; create one with `icd keygen {tmp_path / 'production.key'}`" in done.stderr


def test_encrypting_a_served_model_states_its_key_requirement(tmp_path, capsys):
    folder = tmp_path / "models" / "bert_icd" / "1"
    folder.mkdir(parents=True)
    (folder.parent / "config.pbtxt").write_text('backend: "python"\n')
    (folder / "icd_layout.json").write_text("{}")
    (folder / "permutation.json").write_text('{"dims": []}')
    key_file = generate_key(tmp_path / "production.key")
    done = run_icd(capsys, "encrypt", "--input", str(folder / "permutation.json"), "--key-file", str(key_file))
    assert done.returncode == 0
    assert ("key required: bert_icd v1 now loads only with the key in Triton's environment: "
            f"`ICD_PERMUTATION_KEY_FILE={key_file.resolve()} icd stack restart triton`") in done.stdout
    assert read_key(key_file).hex() not in done.stdout
    plain = tmp_path / "p.json"
    plain.write_text("{}")
    assert "key required" not in run_icd(capsys, "encrypt", "--input", str(plain), "--key-file",
                                         str(key_file)).stdout
