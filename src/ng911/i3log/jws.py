"""LogEvents as JWS (RFC 7515) in the flattened JSON serialisation, signed with x5c.

NENA-STA-010.3 §4.12 has every LogEvent signed by the element that logs it, as a JWS in the
flattened JSON serialisation (RFC 7515 §7.2.2: `{"protected", "payload", "signature"}`),
and the i3 `Jws` schema is exactly those three members. The signer's certificate chain rides
in the protected header as `x5c` (§4.1.6: base64 (not base64url) DER, leaf first), so a
Logging Service can check who signed without a key directory.

- `Signer`: the element's own TLS certificate and key (`ng911.pki` makes P-256 or RSA-2048):
  ES256 for P-256 keys (ES384 for P-384), RS256 for RSA (PKCS#1 v1.5, RFC 7518 §3.3: what
  every JOSE library verifies; PS256 is accepted on receipt).
- `Verifier`: the signature must verify with the x5c leaf's public key AND the leaf must
  chain to one of the configured CAs at the current time (`cryptography`'s RFC 5280 path
  validation, EKU clientAuth as our element certificates carry). A missing or unreadable
  x5c, an expired leaf, another CA, `alg` "none" or an algorithm not listed: each its own
  clear error (`ng911.i3log.errors`). Self-signed certificates inside x5c are never trust
  anchors: only the configured CAs are. A chain that validated is remembered per protected
  header (the same for every LogEvent of one signer) for `chain_ttl` seconds (within its
  certificates' validity): the path validation is ~3/4 of a verification's CPU, and a
  Logging Service sees thousands of LogEvents from a handful of signers.

The JOSE work is `joserfc`'s; the chain check is `cryptography`'s.
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from ng911.i3log.errors import AlgorithmError, CertificateChainError, SignatureError
from ng911.i3log.events import LogEvent
from ng911.pki.errors import PkiError
from ng911.pki.keys import PrivateKey, load_key

__all__ = ["ACCEPTED_ALGORITHMS", "Signer", "Verified", "Verifier", "alg_for_key"]

ACCEPTED_ALGORITHMS = frozenset({"ES256", "ES384", "RS256", "PS256"})
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
MAX_X5C = 8  # certificates in a chain: an element's is 2 or 3
MAX_X5C_BYTES = 16 * 1024  # one certificate, base64
MAX_PAYLOAD = 256 * 1024  # a LogEvent's JSON: a SIP message with a large body fits
MAX_CACHED_CHAINS = 256  # signers whose validated chains a Verifier remembers


def _registry() -> jws.JWSRegistry:
    """joserfc's registry with room for an x5c chain in the header (its default: 512 B)."""
    reg = jws.JWSRegistry(algorithms=sorted(ACCEPTED_ALGORITHMS))
    reg.max_header_length = MAX_X5C * MAX_X5C_BYTES + 1024
    reg.max_payload_length = MAX_PAYLOAD
    return reg


_REGISTRY = _registry()


def alg_for_key(key: PrivateKey) -> str:
    """The JWS `alg` for an element key: ES256/ES384 by curve, RS256 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = key.curve.key_size
        if size == 256:
            return "ES256"
        if size == 384:
            return "ES384"
        raise PkiError(f"no JWS algorithm for an EC key on {key.curve.name}")
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    raise PkiError(f"no JWS algorithm for a {type(key).__name__}")


def _jose_key(key: Any) -> ECKey | RSAKey:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return ECKey.import_key(key)
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return RSAKey.import_key(key)
    raise SignatureError(f"x5c leaf key is a {type(key).__name__}: not EC or RSA")


class Signer:
    """Signs LogEvents with an element's key; `chain` (leaf first) becomes `x5c`."""

    def __init__(self, key: PrivateKey, chain: Sequence[x509.Certificate]) -> None:
        if not chain:
            raise PkiError("a LogEvent signer needs its certificate (x5c)")
        leaf_key = chain[0].public_key()
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) or (
            leaf_key.public_numbers() != key.public_key().public_numbers()
        ):
            raise PkiError("the signing key does not belong to the first certificate")
        self.key = key
        self.chain = tuple(chain)
        self.alg = alg_for_key(key)
        self._jose = _jose_key(key)
        self._x5c = [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain]

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path) -> Signer:
        """From an element's TLS files: `cert` (leaf, or leaf + chain), `key` (PEM)."""
        try:
            chain = x509.load_pem_x509_certificates(Path(cert).read_bytes())
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot read certificate {cert}: {exc}") from None
        return cls(load_key(Path(key)), chain)

    def sign(self, event: LogEvent | Mapping[str, Any] | bytes) -> dict[str, str]:
        """The flattened JSON serialisation of `event` (a LogEvent, its JSON, or bytes)."""
        if isinstance(event, LogEvent):
            payload = event.to_bytes()
        elif isinstance(event, bytes):
            payload = event
        else:
            payload = json.dumps(dict(event), separators=(",", ":")).encode()
        header = {"alg": self.alg, "x5c": self._x5c}
        out = jws.serialize_json({"protected": header}, payload, self._jose, registry=_REGISTRY)
        return {k: str(v) for k, v in out.items()}


_Chain = tuple[dict[str, Any], tuple[x509.Certificate, ...], "ECKey | RSAKey"]


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified JWS: the payload bytes, the protected header, the validated chain."""

    payload: bytes
    header: dict[str, Any]
    chain: tuple[x509.Certificate, ...]

    @property
    def signer(self) -> str:
        """The leaf's subject, for logs."""
        return self.chain[0].subject.rfc4514_string() if self.chain else ""


def _b64url(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _B64URL.match(value):
        raise SignatureError(f"JWS {what} must be a base64url string (RFC 7515 §2)")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise SignatureError(f"JWS {what} is not base64url") from None


class Verifier:
    """Checks LogEvent JWS against the CAs a Logging Service trusts (module docstring)."""

    def __init__(
        self,
        cas: Iterable[x509.Certificate],
        *,
        algorithms: Iterable[str] = ACCEPTED_ALGORITHMS,
        chain_ttl: float = 60.0,
    ) -> None:
        self.cas = list(cas)
        if not self.cas:
            raise PkiError("a LogEvent verifier needs at least one CA certificate")
        self.store = Store(self.cas)
        self.algorithms = frozenset(algorithms)
        self.chain_ttl = chain_ttl
        # protected header text → (header, validated chain, the leaf's JOSE key, valid until)
        self._chains: collections.OrderedDict[str, _Chain] = collections.OrderedDict()
        self._checked: dict[str, tuple[dt.datetime, dt.datetime]] = {}  # (when, valid until)

    @classmethod
    def from_files(cls, paths: Sequence[str | Path]) -> Verifier:
        cas: list[x509.Certificate] = []
        for p in paths:
            try:
                cas.extend(x509.load_pem_x509_certificates(Path(p).read_bytes()))
            except (OSError, ValueError) as exc:
                raise PkiError(f"cannot read CA file {p}: {exc}") from None
        return cls(cas)

    def verify(
        self, value: bytes | str | Mapping[str, Any], now: dt.datetime | None = None
    ) -> Verified:
        """The payload of a flattened-JSON JWS, once its signature and x5c chain check out."""
        obj = _as_object(value)
        when = now or dt.datetime.now(dt.UTC)
        header, chain, key = self._chain(obj["protected"], when)
        alg = header["alg"]
        try:
            sig = jws.deserialize_json(
                cast(
                    jws.FlattenedJSONSerialization,
                    {k: obj[k] for k in ("protected", "payload", "signature")},
                ),
                key,
                algorithms=[str(alg)],
                registry=_REGISTRY,
            )
        except (JoseError, ValueError, TypeError) as exc:
            raise SignatureError(f"signature does not verify with the x5c key: {exc}") from None
        return Verified(sig.payload, dict(header), chain)

    def _chain(self, protected: str, when: dt.datetime) -> _Chain:
        """The protected header's (header, validated x5c chain, leaf key): from the cache
        when validated less than `chain_ttl` ago and `when` is within its validity."""
        hit = self._chains.get(protected)
        if hit is not None:
            checked, until = self._checked[protected]
            if checked <= when <= until and (when - checked).total_seconds() < self.chain_ttl:
                self._chains.move_to_end(protected)
                return hit
        header = _protected_header({"protected": protected})
        alg = header.get("alg")
        if alg == "none" or alg not in self.algorithms:
            accepted = ", ".join(sorted(self.algorithms))
            raise AlgorithmError(f"alg {str(alg)[:20]!r} not accepted (accepted: {accepted})")
        certs = _x5c(header)
        leaf, rest = certs[0], [c for c in certs[1:] if c.issuer != c.subject]
        builder = PolicyBuilder().store(self.store).time(when)
        try:
            verified = builder.build_client_verifier().verify(leaf, rest)
        except VerificationError as exc:
            who = leaf.subject.rfc4514_string()
            raise CertificateChainError(
                f"x5c certificate {who!r} does not chain to a configured CA: {exc}"
            ) from None
        chain = tuple(verified.chain)
        entry = (header, chain, _jose_key(leaf.public_key()))
        until = min(c.not_valid_after_utc for c in chain)
        self._chains[protected] = entry
        self._checked[protected] = (when, until)
        while len(self._chains) > MAX_CACHED_CHAINS:
            old, _ = self._chains.popitem(last=False)
            self._checked.pop(old, None)
        return entry


def _as_object(value: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise SignatureError("body is not JSON (a flattened JSON serialisation JWS)") from None
    if not isinstance(value, Mapping):
        raise SignatureError("body is not a JSON object (a JWS in flattened JSON serialisation)")
    if "signatures" in value:
        raise SignatureError("general JWS serialisation: send the flattened one (RFC 7515 §7.2.2)")
    for key in ("protected", "payload", "signature"):
        if not isinstance(value.get(key), str):
            raise SignatureError(f"JWS member {key!r} missing or not a string")
    return dict(value)


def _protected_header(obj: Mapping[str, Any]) -> dict[str, Any]:
    try:
        header = json.loads(_b64url(obj["protected"], "protected header"))
    except (ValueError, RecursionError):
        raise SignatureError("JWS protected header is not JSON") from None
    if not isinstance(header, dict):
        raise SignatureError("JWS protected header is not a JSON object")
    if "crit" in header:
        raise SignatureError("JWS crit header parameters are not supported (RFC 7515 §4.1.11)")
    return header


def _x5c(header: Mapping[str, Any]) -> list[x509.Certificate]:
    x5c = header.get("x5c")
    if x5c is None:
        raise CertificateChainError("protected header has no x5c (the signer's certificate)")
    if not isinstance(x5c, list) or not x5c or len(x5c) > MAX_X5C:
        raise CertificateChainError(f"x5c must be a list of 1 to {MAX_X5C} certificates")
    certs = []
    for i, item in enumerate(x5c):
        if not isinstance(item, str) or len(item) > MAX_X5C_BYTES:
            raise CertificateChainError(f"x5c[{i}] is not a base64 certificate")
        try:
            certs.append(x509.load_der_x509_certificate(base64.b64decode(item, validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise CertificateChainError(f"x5c[{i}] is not a DER certificate: {exc}") from None
    return certs
