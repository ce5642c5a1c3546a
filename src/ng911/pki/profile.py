"""TLS profiles per peer domain, the way Kamailio's tls.cfg has `[client:domain]` sections.

An ESInet element talks to several administrative domains (the VSPs before it, the PSAPs
after it), each with its own CA. A profile says, for one peer SIP domain: which CA files to
trust, which identity the peer must prove (RFC 5922 §7.2; defaults to the domain itself),
and which of our certificates to present. `TlsProfiles.for_domain` falls back to a default
profile (Kamailio's `[client:default]`) when no domain-specific one exists.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ng911.pki.errors import PkiError
from ng911.pki.tls import client_context, server_context


@dataclass(frozen=True, slots=True)
class TlsProfile:
    """Trust and identity settings for TLS with one peer domain ("*" = default)."""

    domain: str = "*"
    cafiles: tuple[Path, ...] = ()
    cert: Path | None = None
    key: Path | None = None
    expected_identity: str | None = None  # None: the domain we dialled
    require_client_cert: bool = True  # server side: mutual TLS (proxy-to-proxy hops)
    wildcards: bool = False  # RFC 5922 §7.2 discourages wildcard certificates
    keylog: Path | None = None
    min_version: str = "1.2"
    max_version: str = "1.3"

    def identity_for(self, domain: str) -> str:
        return (self.expected_identity or domain).lower()

    def client_context(self) -> ssl.SSLContext:
        return client_context(
            self.cafiles,
            cert=self.cert,
            key=self.key,
            keylog=self.keylog,
            min_version=self.min_version,
            max_version=self.max_version,
        )

    def server_context(self) -> ssl.SSLContext:
        if self.cert is None or self.key is None:
            raise PkiError(f"TLS profile {self.domain!r} has no certificate to serve with")
        return server_context(
            self.cert,
            self.key,
            self.cafiles,
            require_client_cert=self.require_client_cert,
            keylog=self.keylog,
            min_version=self.min_version,
            max_version=self.max_version,
        )


@dataclass
class TlsProfiles:
    """Profiles by peer domain, with a default; client contexts are built once and cached
    (a context holds the loaded CA store: rebuilding it per connection would cost ms)."""

    profiles: dict[str, TlsProfile] = field(default_factory=dict)
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, profiles: Iterable[TlsProfile]) -> TlsProfiles:
        return cls({p.domain.lower(): p for p in profiles})

    def for_domain(self, domain: str | None) -> TlsProfile:
        if domain is not None:
            p = self.profiles.get(domain.lower())
            if p is not None:
                return p
        p = self.profiles.get("*")
        if p is None:
            raise PkiError(f"no TLS profile for peer domain {domain!r} and no default profile")
        return p

    def client_context_for(self, domain: str | None) -> tuple[ssl.SSLContext, TlsProfile]:
        profile = self.for_domain(domain)
        ctx = self._contexts.get(profile.domain)
        if ctx is None:
            ctx = self._contexts[profile.domain] = profile.client_context()
        return ctx, profile
