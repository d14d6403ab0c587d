"""AES-256-GCM encryption of permutation files (authenticated: a wrong key or one flipped bit is refused).

Key file: 32 random bytes as 64 hex characters and a newline, created with mode 0600 (``icd keygen``).
Encrypted file (``permutation.json.enc``), JSON::

    {"format": "icd-aes-256-gcm/1", "name": "permutation.json", "nonce": <b64 12 bytes>, "ciphertext": <b64>}

``name`` is bound as associated data, so renaming an encrypted file to stand in for another one fails too.
The key comes from ``--key-file``, else ``$ICD_PERMUTATION_KEY`` (hex), else ``$ICD_PERMUTATION_KEY_FILE``.
No function here logs, prints or puts the key into an error message.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from icd.errors import ArtefactError, UserError
from icd.io.atomic import write_text_atomic

FORMAT = "icd-aes-256-gcm/1"
ENC_SUFFIX = ".enc"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ENV = "ICD_PERMUTATION_KEY"
KEY_FILE_ENV = "ICD_PERMUTATION_KEY_FILE"
KEY_FILE_MODE = 0o600


class DecryptionError(UserError):
    """Wrong key, tampered or truncated ciphertext: nothing is returned."""


@dataclass(frozen=True)
class EncryptResult:
    source: Path
    output: Path
    plaintext_removed: bool
    manifest_updated: bool
    served_model: str | None = None
    """``<model> v<version>`` when the file belongs to an exported model version: it now needs the key to load."""

    def key_requirement(self, key_file: Path | None) -> str | None:
        """What serving the model needs from now on (None when the file is not part of a served model)."""
        if self.served_model is None:
            return None
        where = (f"{KEY_FILE_ENV}={Path(key_file).resolve()}" if key_file is not None
                 else f"{KEY_ENV}=<hex key> (or {KEY_FILE_ENV}=<key file>)")
        return (f"{self.served_model} now loads only with the key in Triton's environment: "
                f"`{where} icd stack restart triton` (icd serve: the same variable; compose: set {KEY_ENV} in "
                "deploy/triton/.env). Without it Triton reports the model UNAVAILABLE: "
                f"'{self.output.name} is encrypted: set ${KEY_ENV} or ${KEY_FILE_ENV}'")


def generate_key(path: Path, force: bool = False) -> Path:
    """Write a new random 256-bit key to ``path`` with mode 0600 (created that way, never world-readable).

    Raises:
        UserError: ``path`` exists and ``force`` is False.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give the key file's path")
    if path.exists() and not force:
        raise UserError(f"{path}: key file exists (use --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(KEY_BYTES) + "\n")
        os.chmod(tmp, KEY_FILE_MODE)
        os.replace(tmp, path)
    finally:  # a key left in a stray file would be a secret nobody deletes
        tmp.unlink(missing_ok=True)
    return path


def _parse_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise UserError(f"{where}: not a hex key (expected {KEY_BYTES * 2} hex characters)") from None
    if len(key) != KEY_BYTES:
        raise UserError(f"{where}: key has {len(key)} bytes, AES-256 needs {KEY_BYTES}")
    return key


def read_key(key_file: Path | None = None, env: Mapping[str, str] | None = None) -> bytes:
    """The key from ``key_file``, else ``$ICD_PERMUTATION_KEY``, else ``$ICD_PERMUTATION_KEY_FILE``.

    Raises:
        UserError: no key given, file unreadable, wrong length or not hex (the key itself is never shown).
    """
    env = os.environ if env is None else env
    if key_file is None and env.get(KEY_ENV):
        return _parse_key(env[KEY_ENV], f"${KEY_ENV}")
    if key_file is None and env.get(KEY_FILE_ENV):
        key_file = Path(env[KEY_FILE_ENV])
    if key_file is None:
        raise UserError(f"no key: pass --key-file or set ${KEY_ENV} / ${KEY_FILE_ENV} "
                        "(create a key with `icd keygen production.key`)")
    try:
        text = Path(key_file).read_text()
    except FileNotFoundError:
        raise UserError(f"{key_file}: key file not found; create one with `icd keygen {key_file}` "
                        "(keep it outside the repository, mode 0600)") from None
    except OSError as exc:
        raise UserError(f"{key_file}: cannot read key file ({exc.strerror})") from None
    return _parse_key(text, str(key_file))


def encrypt_bytes(data: bytes, key: bytes, name: str) -> dict[str, Any]:
    """The encrypted envelope of ``data`` (``name`` bound as associated data)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, data, name.encode())
    return {"format": FORMAT, "name": name, "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(ciphertext).decode()}


def decrypt_envelope(doc: Mapping[str, Any], key: bytes, where: str) -> bytes:
    """Plaintext of an envelope.

    Raises:
        DecryptionError: wrong key, tampered/truncated data, or not an envelope of this format.
    """
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise DecryptionError(f"{where}: not an {FORMAT} file")
    try:
        nonce = base64.b64decode(doc["nonce"], validate=True)
        ciphertext = base64.b64decode(doc["ciphertext"], validate=True)
        name = str(doc["name"])
    except (KeyError, ValueError):
        raise DecryptionError(f"{where}: envelope is malformed (nonce/ciphertext/name)") from None
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, name.encode())
    except (InvalidTag, ValueError):
        raise DecryptionError(
            f"{where}: refused — wrong key or tampered ciphertext (AES-GCM authentication failed)") from None


def _read_envelope(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ArtefactError(f"{path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DecryptionError(f"{path}: not an {FORMAT} file (invalid JSON)") from None


def decrypt_file(path: Path, key: bytes) -> bytes:
    """Plaintext bytes of an encrypted file (see :func:`decrypt_envelope`)."""
    return decrypt_envelope(_read_envelope(path), key, str(path))


def load_permutation(path: Path, key_file: Path | None = None, env: Mapping[str, str] | None = None) -> dict:
    """The permutation document at ``path``, decrypting ``*.enc`` (or a plain path whose ``.enc`` exists).

    The hook the serving model can call: plain JSON is read as is; an encrypted file needs a key (see
    :func:`read_key`).

    Raises:
        ArtefactError: neither the file nor its ``.enc`` exists, or the plaintext is not JSON.
        DecryptionError: wrong key / tampered.
    """
    path = Path(path)
    if path.suffix != ENC_SUFFIX and not path.is_file() and path.with_name(path.name + ENC_SUFFIX).is_file():
        path = path.with_name(path.name + ENC_SUFFIX)
    if not path.is_file():
        raise ArtefactError(f"{path}: permutation file not found")
    data = decrypt_file(path, read_key(key_file, env)) if path.suffix == ENC_SUFFIX else path.read_bytes()
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtefactError(f"{path}: decrypted content is not JSON") from None


def _refresh_manifest(folder: Path) -> bool:
    from icd.serve.backend.icd_runtime import MANIFEST_NAME, manifest_text

    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return False
    write_text_atomic(manifest, manifest_text(folder))
    return True


def encrypt_file(source: Path, key: bytes, output: Path | None = None, keep_plaintext: bool = False,
                 update_manifest: bool = True) -> EncryptResult:
    """Encrypt ``source`` to ``output`` (default ``<source>.enc``).

    The plaintext is removed unless ``keep_plaintext``; a ``checksums.sha256`` in the same folder is rewritten
    (``update_manifest``) so the version folder still verifies — only do that on a folder you trust.

    Raises:
        ArtefactError: ``source`` missing, or a ``.json`` source that is not JSON (encrypted, a broken
            permutation file would only fail later, at the model's load, and its plaintext would be gone).
    """
    source = Path(source)
    if not source.is_file():
        raise ArtefactError(f"{source}: file to encrypt not found")
    output = Path(output) if output else source.with_name(source.name + ENC_SUFFIX)
    plaintext = source.read_bytes()
    if source.suffix == ".json":
        try:
            json.loads(plaintext)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtefactError(f"{source}: not valid JSON ({getattr(exc, 'msg', 'not UTF-8 text')}); "
                                "nothing encrypted") from None
    doc = encrypt_bytes(plaintext, key, source.name)
    write_text_atomic(output, json.dumps(doc) + "\n")
    if not keep_plaintext:
        source.unlink()
    updated = update_manifest and output.parent == source.parent and _refresh_manifest(source.parent)
    return EncryptResult(source, output, not keep_plaintext, updated, _served_model(output))


def _served_model(path: Path) -> str | None:
    """``<model> v<version>`` when ``path`` is the permutation file of an exported model version folder."""
    from icd.serve.backend.icd_runtime import LAYOUT_FILE

    folder = path.parent
    if path.name != "permutation.json" + ENC_SUFFIX or not (folder / LAYOUT_FILE).is_file():
        return None
    return f"{folder.parent.name} v{folder.name}" if (folder.parent / "config.pbtxt").is_file() else None


def decrypt_to_file(source: Path, key: bytes, output: Path | None = None) -> Path:
    """Decrypt ``source`` (``*.enc``) to ``output`` (default: the name without ``.enc``)."""
    source = Path(source)
    if output is None:
        if source.suffix != ENC_SUFFIX:
            raise UserError(f"{source}: name does not end in {ENC_SUFFIX}; pass --output")
        output = source.with_suffix("")
    write_text_atomic(output, decrypt_file(source, key).decode())
    return Path(output)
