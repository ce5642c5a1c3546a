"""TLS contexts for SIP hops, and RFC 5922 identities of a peer certificate.

Why our own identity check instead of `check_hostname`: RFC 5922 §7.1 says a SIP peer is
identified first by `URI:sip:domain` subjectAltNames, then by `dNSName` SANs, and by the
subject CN only when the certificate has no SAN at all; OpenSSL's hostname check knows only
DNS/IP SANs. So contexts verify the chain (`CERT_REQUIRED`) and the transport layer compares
`peer_identities()` with the domain it meant to reach (`matches_domain`, RFC 5922 §7.2) right
after the handshake, refusing the connection on a mismatch.

Both TLS 1.2 and 1.3 are enabled (RFC 5630 asks for TLS; Kamailio 5.6 and many deployed
SBCs still negotiate 1.2). Session resumption: servers issue TLS 1.3 tickets (OpenSSL's
default, two per handshake) and keep a TLS 1.2 session cache; clients pass the `SSLSession`
of their last connection to the same peer (`ng911.net` keeps one per peer).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ng911.pki.errors import CertificateError, PkiError

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def _base(
    purpose: ssl.Purpose,
    cafiles: Iterable[Path],
    min_version: str,
    max_version: str,
    keylog: Path | None,
) -> ssl.SSLContext:
    proto = (
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx = ssl.SSLContext(proto)
    ctx.minimum_version = TLS_VERSIONS[min_version]
    ctx.maximum_version = TLS_VERSIONS[max_version]
    ctx.check_hostname = False  # RFC 5922 identity check done by ng911.net after the handshake
    for ca in cafiles:
        _require_file(ca, f"CA file {ca}")
        _load(ctx.load_verify_locations, f"CA file {ca}", cafile=str(ca))
    if keylog is not None:
        # NSS key log format (SSLKEYLOGFILE): Wireshark/tshark decrypt captures with it
        Path(keylog).parent.mkdir(parents=True, exist_ok=True)
        ctx.keylog_filename = str(keylog)
    return ctx


def server_context(
    cert: Path,
    key: Path,
    cafiles: Sequence[Path],
    *,
    require_client_cert: bool,
    keylog: Path | None = None,
    min_version: str = "1.2",
    max_version: str = "1.3",
) -> ssl.SSLContext:
    """A listening context: our certificate chain, the CAs whose clients we trust.

    `require_client_cert=True` for server-to-server hops (mutual TLS, RFC 5922 §7.3: a proxy
    authenticates the proxy that connects to it); False for user agents, whose certificate is
    then optional (asked for, verified if sent, not required).
    """
    ctx = _base(ssl.Purpose.CLIENT_AUTH, cafiles, min_version, max_version, keylog)
    load_cert_chain(ctx, cert, key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif cafiles:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    cafiles: Sequence[Path],
    *,
    cert: Path | None = None,
    key: Path | None = None,
    keylog: Path | None = None,
    min_version: str = "1.2",
    max_version: str = "1.3",
) -> ssl.SSLContext:
    """A connecting context: the CAs we trust for the peer, and our certificate if we have one.

    The server's chain is always verified (`CERT_REQUIRED`); a client without `cafiles` trusts
    nothing and every handshake fails, which is the safe default.
    """
    ctx = _base(ssl.Purpose.SERVER_AUTH, cafiles, min_version, max_version, keylog)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert is not None:
        load_cert_chain(ctx, cert, key)
    return ctx


def load_cert_chain(ctx: ssl.SSLContext, cert: Path, key: Path | None) -> None:
    """`ctx.load_cert_chain`, failing with a `PkiError` that names the files (a missing or
    garbled certificate or key is an operator's mistake, one line, never a traceback)."""
    what = f"certificate {cert}" + (f" with key {key}" if key is not None else "")
    for path in (cert, key):
        if path is not None:
            _require_file(path, what)
    _load(ctx.load_cert_chain, what, str(cert), str(key) if key is not None else None)


def _require_file(path: Path, what: str) -> None:
    if not Path(path).is_file():
        raise PkiError(f"cannot load {what}: {path}: no such file")


def _load(fn: Callable[..., None], what: str, *a: Any, **kw: Any) -> None:
    try:
        fn(*a, **kw)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise PkiError(f"cannot load {what}: {reason}") from None


def _identities_from_x509(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dnss = san.get_values_for_type(x509.DNSName)
        return _from_sans(uris, dnss)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {str(c.value).lower() for c in cns}


def _from_sans(uris: Iterable[str], dnss: Iterable[str]) -> set[str]:
    # RFC 5922 §7.1: URI SANs with scheme sip (no user part) name SIP domains; if there is at
    # least one, DNS SANs are NOT consulted
    sip_domains = set()
    for u in uris:
        scheme, _, rest = u.partition(":")
        if scheme.lower() == "sip" and rest and "@" not in rest:
            sip_domains.add(rest.split(";", 1)[0].lower())
    if sip_domains:
        return sip_domains
    return {d.lower().rstrip(".") for d in dnss}


def peer_identities(peercert: bytes | Mapping[str, Any] | x509.Certificate | None) -> set[str]:
    """SIP identities in a peer certificate (RFC 5922 §7.1).

    Accepts DER bytes (`getpeercert(binary_form=True)`), the dict of `getpeercert()`, or a
    `cryptography` certificate. URI SANs `sip:domain` if any; else DNS SANs; the subject CN only
    if the certificate has no subjectAltName at all. An empty set means "no identity".
    """
    if peercert is None:
        return set()
    if isinstance(peercert, bytes | bytearray):
        try:
            return _identities_from_x509(x509.load_der_x509_certificate(bytes(peercert)))
        except ValueError as exc:
            raise CertificateError(f"unreadable peer certificate: {exc}") from exc
    if isinstance(peercert, x509.Certificate):
        return _identities_from_x509(peercert)
    sans = peercert.get("subjectAltName")
    if sans:
        uris = [v for k, v in sans if k == "URI"]
        dnss = [v for k, v in sans if k == "DNS"]
        return _from_sans(uris, dnss)
    out: set[str] = set()
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                out.add(str(v).lower())
    return out


def matches_domain(identities: Iterable[str], domain: str, *, wildcards: bool = False) -> bool:
    """RFC 5922 §7.2: does any identity equal the SIP domain we meant to reach?

    Comparison is case-insensitive and exact. Wildcard DNS names (`*.example.net`) match one
    left-most label only when `wildcards=True`; RFC 5922 §7.2 discourages them, so off by default.
    """
    domain = domain.lower().rstrip(".")
    for ident in identities:
        ident = ident.lower().rstrip(".")
        if ident == domain:
            return True
        if wildcards and ident.startswith("*.") and domain.partition(".")[2] == ident[2:]:
            return True
    return False


def describe(sslobj: ssl.SSLObject | ssl.SSLSocket) -> tuple[str, str]:
    """(version, cipher) of an established TLS session, for events and logs."""
    cipher = sslobj.cipher()
    return (sslobj.version() or "?", cipher[0] if cipher else "?")
