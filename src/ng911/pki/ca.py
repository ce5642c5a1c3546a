"""A test certificate authority kept in a directory (`ca.pem`, `ca.key`, `ca.toml`-free).

One CA per administrative domain is the realistic set-up (a VSP, the ESInet, each PSAP
operator); trust between them is configured per peer domain (`ng911.pki.profile`). The CA is
a self-signed root with `basicConstraints CA:TRUE, pathlen:0`: it signs element
certificates only, never a subordinate CA.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ng911.pki.errors import PkiError
from ng911.pki.keys import PrivateKey, generate_key, load_key, write_key

CA_CERT = "ca.pem"
CA_KEY = "ca.key"


@dataclass(frozen=True, slots=True)
class CA:
    """A CA on disk: its directory, certificate and key files, and its name."""

    dir: Path
    name: str
    cert_path: Path
    key_path: Path

    def certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot read CA certificate {self.cert_path}: {exc}") from exc

    def private_key(self) -> PrivateKey:
        return load_key(self.key_path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def init_ca(
    dir: Path,
    *,
    name: str = "ng911 Test CA",
    key_type: str = "ec",
    days: int = 3650,
    key: PrivateKey | None = None,
) -> CA:
    """Create a self-signed CA in `dir` (created if needed) and return it.

    `key` lets tests reuse a key made earlier (key generation is the slow part for RSA).
    Refuses to overwrite an existing CA: re-issuing a root silently would invalidate every
    certificate it signed.
    """
    dir = Path(dir)
    cert_path, key_path = dir / CA_CERT, dir / CA_KEY
    if cert_path.exists() or key_path.exists():
        raise PkiError(f"{dir} already holds a CA ({CA_CERT}/{CA_KEY}); use another directory")
    key = key or generate_key(key_type)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ng911 test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    dir.mkdir(parents=True, exist_ok=True)
    write_key(key, key_path)
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    return CA(dir=dir, name=name, cert_path=cert_path, key_path=key_path)


def load_ca(dir: Path) -> CA:
    """Open the CA kept in `dir` by `init_ca`."""
    dir = Path(dir)
    cert_path, key_path = dir / CA_CERT, dir / CA_KEY
    if not cert_path.is_file() or not key_path.is_file():
        raise PkiError(f"{dir} holds no CA (expected {CA_CERT} and {CA_KEY}; run `ng911 pki init`)")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"cannot read CA certificate {cert_path}: {exc}") from exc
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cns[0].value) if cns else dir.name
    return CA(dir=dir, name=name, cert_path=cert_path, key_path=key_path)
