"""Element certificates carrying RFC 5922 SIP identities.

RFC 5922 §7.1: a SIP domain's identity is a `uniformResourceIdentifier` subjectAltName of the
form `sip:domain` (no user part); DNS names go in `dNSName` SANs; the subject CN is only a
fallback when no SAN is present (we always add SANs, and set CN to the element name for
people reading certificates). Every element certificate carries EKU serverAuth AND clientAuth,
because a SIP proxy is a TLS server for the hop before it and a TLS client for the hop after.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ng911.pki.ca import CA
from ng911.pki.errors import PkiError
from ng911.pki.keys import PrivateKey, generate_key, write_key


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """Files of one issued certificate: leaf, its key, and leaf + CA (what a server sends)."""

    name: str
    cert_path: Path
    key_path: Path
    chain_path: Path
    ca_path: Path


def _sip_uri_san(domain: str) -> x509.UniformResourceIdentifier:
    domain = domain.strip().lower()
    if domain.startswith(("sip:", "sips:")):
        domain = domain.split(":", 1)[1]
    if not domain or "@" in domain or "/" in domain:
        raise PkiError(f"invalid SIP domain for a certificate: {domain!r} (RFC 5922 §7.1: no user)")
    return x509.UniformResourceIdentifier(f"sip:{domain}")


def issue(
    ca: CA,
    name: str,
    *,
    dns: Sequence[str],
    sip_domains: Sequence[str] = (),
    ips: Sequence[str] = (),
    out_dir: Path,
    key_type: str = "ec",
    days: int = 365,
    not_before: dt.datetime | None = None,
    key: PrivateKey | None = None,
) -> IssuedCert:
    """Issue a certificate for element `name`, signed by `ca`, into `out_dir`.

    Writes `NAME.pem` (leaf), `NAME.key`, `NAME-chain.pem` (leaf then CA). `not_before` lets
    tests make an already-expired certificate (`not_before` in the past, small `days`);
    `key` lets them reuse a cached key.
    """
    if not name or "/" in name or name.startswith("."):
        raise PkiError(f"invalid certificate name {name!r}")
    sans: list[x509.GeneralName] = []
    for d in sip_domains:
        sans.append(_sip_uri_san(d))
    for h in dns:
        h = h.strip().lower().rstrip(".")
        if not h:
            raise PkiError("empty DNS name")
        sans.append(x509.DNSName(h))
    for a in ips:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError as exc:
            raise PkiError(f"invalid IP address {a!r}") from exc
    if not sans:
        raise PkiError("a certificate needs at least one DNS name, SIP domain or IP address")
    key = key or generate_key(key_type)
    ca_cert = ca.certificate()
    ca_key = ca.private_key()
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ng911 test PKI"),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key exchange (TLS 1.2 non-ECDHE suites) needs keyEncipherment
                key_encipherment=key_type == "rsa",
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path = out_dir / f"{name}.pem"
    key_path = out_dir / f"{name}.key"
    chain_path = out_dir / f"{name}-chain.pem"
    leaf_pem = cert.public_bytes(Encoding.PEM)
    write_key(key, key_path)
    cert_path.write_bytes(leaf_pem)
    chain_path.write_bytes(leaf_pem + ca_cert.public_bytes(Encoding.PEM))
    return IssuedCert(
        name=name,
        cert_path=cert_path,
        key_path=key_path,
        chain_path=chain_path,
        ca_path=ca.cert_path,
    )
