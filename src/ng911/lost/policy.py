"""Turning a LoST answer's `sip:` URI into the next hop the ESRP may use: the `sips:` policy.

LoST servers hand out what their data holds, and in practice that is `sip:` URIs even where
the ESInet runs TLS everywhere; the source paper names this gap as a pain point (the proxy
forwards to `sip:` and the TLS hop silently degrades). ng911 closes it explicitly in the ESRP,
with a policy per next-hop domain:

- `upgrade`: `sip:user@host:port;params` becomes `sips:user@host:port;params`, same user, host,
  port; a `transport=udp` or `transport=tcp` parameter is dropped (sips: implies TLS over a
  reliable transport, RFC 3261 §19.1 and §26.2.2; `transport=tls` is deprecated and dropped
  too). A URI that already is `sips:` stays as it is.
- `require`: a `sips:` URI passes; anything else raises `SipsPolicyError` (the ESRP then
  takes its alternate route, or the default route, and logs why).
- `keep`: the URI as LoST gave it.

`apply_sips_policy` is a pure function on strings so that the ESRP (and the VSP proxy) can
import it without depending on the SIP parser; it parses only what it must: scheme and the
parameters after the host part.
"""

from __future__ import annotations

from ng911.errors import Ng911Error

POLICIES = ("upgrade", "require", "keep")
_DROP_TRANSPORTS = frozenset({"udp", "tcp", "tls"})


class SipsPolicyError(Ng911Error):
    """The policy is `require` and LoST gave no `sips:` URI (or the URI is not SIP at all)."""


def _split_scheme(uri: str) -> tuple[str, str]:
    scheme, sep, rest = uri.partition(":")
    if not sep:
        raise SipsPolicyError(f"not a URI: {uri!r}")
    return scheme.lower(), rest


def apply_sips_policy(uri: str, policy: str) -> str:
    """The next-hop URI for `uri` under `policy` ("upgrade" | "require" | "keep")."""
    if policy not in POLICIES:
        raise ValueError(f"unknown sips policy {policy!r} (one of {', '.join(POLICIES)})")
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    scheme, rest = _split_scheme(uri)
    if policy == "keep":
        return uri
    if scheme not in ("sip", "sips"):
        raise SipsPolicyError(f"{uri!r} is not a SIP URI")
    if policy == "require":
        if scheme != "sips":
            raise SipsPolicyError(f"next hop {uri!r} is not sips: (policy require)")
        return uri
    if scheme == "sips":
        return uri
    # upgrade: keep everything but the scheme and a transport parameter that contradicts TLS.
    hdr_sep = rest.find("?")
    headers = rest[hdr_sep:] if hdr_sep >= 0 else ""
    main = rest[:hdr_sep] if hdr_sep >= 0 else rest
    at = main.rfind("@")
    semi = main.find(";", at + 1)
    if semi < 0:
        return f"sips:{main}{headers}"
    hostport, params = main[:semi], main[semi + 1 :].split(";")
    kept = []
    for p in params:
        name, _, value = p.partition("=")
        if name.strip().lower() == "transport" and value.strip().lower() in _DROP_TRANSPORTS:
            continue
        kept.append(p)
    tail = "".join(f";{p}" for p in kept)
    return f"sips:{hostport}{tail}{headers}"
