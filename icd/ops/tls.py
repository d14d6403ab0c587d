"""Self-signed TLS certificates (for tests and a first secure setup; use a real CA in production)."""

from __future__ import annotations

import datetime as _dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from icd.io.atomic import write_bytes_atomic

CERT_DAYS = 30


def make_self_signed(cert_path: Path, key_path: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                     days: int = CERT_DAYS) -> tuple[Path, Path]:
    """Write a self-signed EC P-256 certificate for ``hosts`` (DNS names or IPs) and its key (mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    write_bytes_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    write_bytes_atomic(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()), file_mode=0o600)
    return Path(cert_path), Path(key_path)
