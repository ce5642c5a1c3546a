"""Registrar bindings (RFC 3261 §10): address-of-record → contacts, with expiry.

The VSP proxy registers its callers, psapd its call takers. Pure data plus the REGISTER
rules; the caller passes the clock (`now`), so expiry is tested without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass

from ng911.elements.runtime import ElementError
from ng911.net.address import Source
from ng911.sip.message import Request
from ng911.sip.uri import URI, SipURI, TelURI, bounded_int

__all__ = ["Binding", "Registrar", "aor_key"]


def aor_key(uri: URI) -> str:
    """The canonical address-of-record (§10.3 item 5): scheme:user@host, no port/params."""
    if isinstance(uri, SipURI):
        user = f"{uri.user}@" if uri.user else ""
        return f"sip:{user}{uri.host.lower()}"
    if isinstance(uri, TelURI):
        return f"tel:{uri.digits}"
    return str(uri)


@dataclass(frozen=True, slots=True)
class Binding:
    aor: str
    contact: URI
    expires_at: float
    source: Source | None  # where the REGISTER came from (outbound-style reuse, RFC 5626)
    call_id: str
    cseq: int


class Registrar:
    """Bindings of one domain (or several)."""

    def __init__(self, domains: tuple[str, ...], *, max_expires: int = 7200, min_expires: int = 1):
        self.domains = tuple(d.lower() for d in domains)
        self.max_expires = max_expires
        self.min_expires = min_expires
        self._bindings: dict[str, dict[str, Binding]] = {}

    def serves(self, uri: URI) -> bool:
        return isinstance(uri, SipURI) and (not self.domains or uri.host.lower() in self.domains)

    def register(self, req: Request, source: Source, now: float) -> list[Binding]:
        """Apply a REGISTER (§10.3); returns the AOR's bindings after it. Raises ElementError."""
        aor = aor_key(req.to_addr.uri)
        if not isinstance(req.to_addr.uri, SipURI):
            raise ElementError(404, "address-of-record must be a SIP URI")
        header_exp = req.headers.get("Expires")
        # RFC 3261 §20.19: delta-seconds; an absurdly long number means "as long as allowed"
        default = _delta_seconds(header_exp.strip(), 3600) if header_exp else 3600
        raw = req.headers.get_all("Contact")
        current = self._bindings.setdefault(aor, {})
        if any(c.strip() == "*" for c in raw):
            if len(raw) != 1 or default != 0:
                raise ElementError(400, "Contact: * needs Expires: 0 and no other contact")
            current.clear()
            return []
        for na in req.contacts:
            exp_param = na.param("expires")
            exp = _delta_seconds(exp_param, default) if exp_param else default
            exp = min(exp, self.max_expires)
            key = str(na.uri)
            old = current.get(key)
            if old is not None and old.call_id == req.call_id and old.cseq >= req.cseq.seq:
                raise ElementError(500, "out-of-order REGISTER")  # §10.3 item 7
            if exp == 0:
                current.pop(key, None)
                continue
            if exp < self.min_expires:
                raise ElementError(423, "Interval Too Brief")
            current[key] = Binding(aor, na.uri, now + exp, source, req.call_id, req.cseq.seq)
        return self.lookup_aor(aor, now)

    def restore(self, binding: Binding) -> None:
        """Put back a binding kept across a restart (psapd's `binding_store`)."""
        self._bindings.setdefault(binding.aor, {})[str(binding.contact)] = binding

    def lookup_aor(self, aor: str, now: float) -> list[Binding]:
        current = self._bindings.get(aor, {})
        for k in [k for k, b in current.items() if b.expires_at <= now]:
            del current[k]
        return list(current.values())

    def lookup(self, uri: URI, now: float) -> list[Binding]:
        return self.lookup_aor(aor_key(uri), now)

    def all(self, now: float) -> list[Binding]:
        out: list[Binding] = []
        for aor in list(self._bindings):
            out.extend(self.lookup_aor(aor, now))
        return out


def _delta_seconds(text: str, default: int) -> int:
    """RFC 3261 §25.1 delta-seconds (values past 2**32 - 1 mean that many, §20.19); not a
    number: `default`. Never `int()` on thousands of digits (a ValueError, not a 400)."""
    if not text.isascii() or not text.isdigit():
        return default
    value = bounded_int(text, 2**32 - 1)
    return 2**32 - 1 if value is None else value
