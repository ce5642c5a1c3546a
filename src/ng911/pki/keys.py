"""Private keys for CAs and elements: ECDSA P-256 by default, RSA-2048 on request.

P-256 is the default because NENA's ESInet PKI and most SIP stacks accept it and an ECDSA
handshake costs a fraction of an RSA one (ANCHORS.md: sign 28 µs vs 0.99 ms). RSA-2048 is
kept for comparison runs and for peers that still want it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ng911.pki.errors import PkiError

KEY_TYPES: tuple[str, ...] = ("ec", "rsa")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key(key_type: str = "ec") -> PrivateKey:
    """A fresh private key of `key_type` ("ec" = P-256, "rsa" = 2048 bits)."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise PkiError(f"unknown key type {key_type!r} (choose one of {', '.join(KEY_TYPES)})")


def write_key(key: PrivateKey, path: Path) -> None:
    """Write `key` as unencrypted PKCS#8 PEM, readable by its owner only (it is a secret)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    path.chmod(0o600)


def load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot read private key {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{path}: unsupported key algorithm {type(key).__name__}")
    return key
