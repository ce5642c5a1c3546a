"""Structured header values: Via and CSeq, and the generators of branches, tags and Call-IDs.

Parsed only when asked (see `message.Headers`): a proxy reads its top Via and leaves the
rest as text.
"""

from __future__ import annotations

import os
from typing import Final

from ng911.sip.errors import SipParseError
from ng911.sip.uri import (
    Parameterised,
    Params,
    Value,
    _format_params,
    _get_param,
    _parse_host,
    bounded_int,
    keep_parsed,
    parse_header_params,
    split_quoted,
)

# RFC 3261 §8.1.1.7: a branch starting with this cookie was made by an RFC 3261 element,
# and is unique across space and time, so it alone identifies the transaction.
MAGIC_COOKIE: Final = "z9hG4bK"


class Via(Parameterised):
    """One Via value (RFC 3261 §20.42): `SIP/2.0/UDP host:port;branch=z9hG4bK...`."""

    __slots__ = ("host", "params", "port", "transport")
    _FIELDS = ("transport", "host", "port", "params")

    def __init__(
        self, transport: str, host: str, port: int | None = None, params: Params = ()
    ) -> None:
        self.transport: Final = transport
        self.host: Final = host
        self.port: Final = port
        self.params: Final = params

    def _fields(self) -> tuple[object, ...]:
        return (self.transport, self.host, self.port, self.params)

    def _with_params(self, params: Params) -> Via:
        return Via(self.transport, self.host, self.port, params)

    @property
    def branch(self) -> str | None:
        return _get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _get_param(self.params, "received")

    @property
    def rport(self) -> str | None:
        """`""` when the flag is present without value (RFC 3581 §3), None when absent."""
        return _get_param(self.params, "rport")

    @property
    def maddr(self) -> str | None:
        return _get_param(self.params, "maddr")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_format_params(self.params)}"


_VIAS: Final[dict[str, Via]] = {}


def parse_via(value: str) -> Via:
    """One Via value; LWS around `/` and `;` is tolerated (RFC 3261 §7.3.1). Kept by its
    text as URIs are (`ng911.sip.uri.PARSE_CACHE_MAX` says why): a transaction's responses
    carry the Vias its request did."""
    via = _VIAS.get(value)
    if via is None:
        via = _parse_via(value)
        keep_parsed(_VIAS, value, via)
    return via


def _parse_via(value: str) -> Via:
    s = value.strip()
    # sent-protocol = protocol-name SLASH protocol-version SLASH transport
    if s.startswith("SIP/2.0/"):  # as every element writes it: no split, strip or upper
        rest = s[8:].lstrip()
    else:
        parts = s.split("/", 2)
        if len(parts) != 3 or parts[0].strip().upper() != "SIP":
            raise SipParseError(f"bad Via: {value[:80]!r}", 400)
        rest = parts[2].lstrip()
    i = 0
    n = len(rest)
    while i < n and rest[i] not in " \t":
        i += 1
    transport = rest[:i].upper()
    sent_by = rest[i:].strip()
    if not transport or not sent_by:
        raise SipParseError(f"bad Via: {value[:80]!r}", 400)
    semi = sent_by.find(";")
    if semi >= 0:
        params = parse_header_params(sent_by[semi + 1 :])
        sent_by = sent_by[:semi].strip()
    else:
        params = ()
    # LWS may appear around the ":" of sent-by too.
    if " " in sent_by or "\t" in sent_by:
        sent_by = "".join(sent_by.split())
    host, port = _parse_host(sent_by, value)
    return Via(transport, host, port, params)


def parse_via_list(value: str) -> list[Via]:
    """Every Via in a (possibly comma-separated) header value."""
    return [parse_via(v) for v in split_quoted(value, ",") if v.strip()]


class CSeq(Value):
    """RFC 3261 §20.16: a sequence number (< 2**31) and the method."""

    __slots__ = ("method", "seq")
    _FIELDS = ("seq", "method")

    def __init__(self, seq: int, method: str) -> None:
        self.seq: Final = seq
        self.method: Final = method

    def _fields(self) -> tuple[object, ...]:
        return (self.seq, self.method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    num, _, method = value.strip().partition(" ")
    method = method.strip()
    if not num.isascii() or not num.isdigit() or not method or " " in method:
        raise SipParseError(f"bad CSeq: {value[:80]!r}", 400)
    seq = bounded_int(num, 2**31 - 1)
    if seq is None:
        raise SipParseError(f"CSeq number too large: {value[:80]!r}", 400)
    return CSeq(seq, method)


# Random bits from os.urandom, as `secrets.token_hex` takes them (it is `os.urandom(n).hex()`
# through two interpreted frames; a call makes ~12 branches and tags).


def new_branch() -> str:
    """A fresh RFC 3261 branch (§8.1.1.7): magic cookie + 64 random bits."""
    return MAGIC_COOKIE + os.urandom(8).hex()


def new_tag() -> str:
    """A From/To tag (§19.3): 48 random bits, hex."""
    return os.urandom(6).hex()


def new_call_id(host: str) -> str:
    """A Call-ID (§8.1.1.4): 96 random bits @ host."""
    return f"{os.urandom(12).hex()}@{host}"


__all__ = [
    "MAGIC_COOKIE",
    "CSeq",
    "Via",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_cseq",
    "parse_via",
    "parse_via_list",
    "split_quoted",
]
