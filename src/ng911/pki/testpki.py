"""A whole test PKI in one call, for tests, benchmarks and the demo.

Three CAs by default, one per administrative domain (RFC 5922 trust is per domain): the VSP's,
the ESInet's and the PSAP operator's; one certificate per element with its DNS name, its SIP
domain (`URI:sip:domain`) and 127.0.0.1. Keys are cached per process (`reuse_keys`): a test
session builds many PKIs, and RSA-2048 key generation costs ~50-200 ms each; ECDSA is fast
anyway. Reusing a key across certificates is harmless in a test PKI and never done by
`ng911 pki`.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ng911.pki.ca import CA, init_ca
from ng911.pki.certs import IssuedCert, issue
from ng911.pki.errors import PkiError
from ng911.pki.keys import PrivateKey, generate_key
from ng911.pki.profile import TlsProfile
from ng911.pki.tls import client_context, server_context

_KEYS: dict[tuple[str, str], PrivateKey] = {}


def cached_key(key_type: str, label: str) -> PrivateKey:
    """A key for `label`, generated once per process."""
    k = _KEYS.get((key_type, label))
    if k is None:
        k = _KEYS[(key_type, label)] = generate_key(key_type)
    return k


@dataclass(frozen=True, slots=True)
class ElementSpec:
    name: str
    ca: str
    dns: tuple[str, ...]
    sip_domains: tuple[str, ...] = ()
    ips: tuple[str, ...] = ("127.0.0.1",)


DEFAULT_ELEMENTS: tuple[ElementSpec, ...] = (
    ElementSpec("ua", "vsp", ("ua.vsp.example",), ("vsp.example",)),
    ElementSpec("vsp-proxy", "vsp", ("proxy.vsp.example",), ("vsp.example",)),
    ElementSpec("esrp", "esinet", ("esrp.esinet.example",), ("esinet.example",)),
    ElementSpec("lost", "esinet", ("lost.esinet.example",), ("esinet.example",)),
    ElementSpec("psap", "psap", ("psap.psap.example",), ("psap.example",)),
    ElementSpec("calltaker", "psap", ("ct.psap.example",), ("psap.example",)),
)


@dataclass
class TestPki:
    """CAs and certificates on disk under `root`, plus context helpers."""

    root: Path
    cas: dict[str, CA] = field(default_factory=dict)
    certs: dict[str, IssuedCert] = field(default_factory=dict)
    key_type: str = "ec"

    __test__ = False  # not a pytest test class

    def ca_files(self, trust: Sequence[str] | None = None) -> list[Path]:
        names = list(self.cas) if trust is None else list(trust)
        try:
            return [self.cas[n].cert_path for n in names]
        except KeyError as exc:
            raise PkiError(f"no CA named {exc.args[0]!r} in this test PKI") from exc

    def cert(self, name: str) -> IssuedCert:
        try:
            return self.certs[name]
        except KeyError as exc:
            raise PkiError(f"no certificate named {name!r} in this test PKI") from exc

    def server_context(
        self,
        name: str,
        *,
        trust: Sequence[str] | None = None,
        require_client_cert: bool = True,
        keylog: Path | None = None,
    ) -> ssl.SSLContext:
        c = self.cert(name)
        return server_context(
            c.chain_path,
            c.key_path,
            self.ca_files(trust),
            require_client_cert=require_client_cert,
            keylog=keylog,
        )

    def client_context(
        self, name: str | None, *, trust: Sequence[str] | None = None, keylog: Path | None = None
    ) -> ssl.SSLContext:
        c = self.cert(name) if name else None
        return client_context(
            self.ca_files(trust),
            cert=c.chain_path if c else None,
            key=c.key_path if c else None,
            keylog=keylog,
        )

    def profile(
        self, name: str | None, *, domain: str = "*", trust: Sequence[str] | None = None
    ) -> TlsProfile:
        c = self.cert(name) if name else None
        return TlsProfile(
            domain=domain,
            cafiles=tuple(self.ca_files(trust)),
            cert=c.chain_path if c else None,
            key=c.key_path if c else None,
        )

    def issue(
        self,
        name: str,
        *,
        ca: str,
        dns: Sequence[str] = (),
        sip_domains: Sequence[str] = (),
        ips: Sequence[str] = ("127.0.0.1",),
        days: int = 365,
        not_before: dt.datetime | None = None,
        key_type: str | None = None,
    ) -> IssuedCert:
        """Issue one more certificate (e.g. an expired one, or one with the wrong name)."""
        kt = key_type or self.key_type
        c = issue(
            self.cas[ca],
            name,
            dns=dns,
            sip_domains=sip_domains,
            ips=ips,
            out_dir=self.root / "certs",
            key_type=kt,
            days=days,
            not_before=not_before,
            key=cached_key(kt, f"leaf:{name}"),
        )
        self.certs[name] = c
        return c


def build_test_pki(
    root: Path,
    *,
    cas: Sequence[str] = ("vsp", "esinet", "psap"),
    elements: Sequence[ElementSpec] | None = None,
    key_type: str = "ec",
    extra: Mapping[str, ElementSpec] | None = None,
) -> TestPki:
    """Create CAs `cas` and a certificate per element under `root` (cached keys)."""
    root = Path(root)
    pki = TestPki(root=root, key_type=key_type)
    for ca in cas:
        pki.cas[ca] = init_ca(
            root / "ca" / ca,
            name=f"ng911 {ca} test CA",
            key_type=key_type,
            key=cached_key(key_type, f"ca:{ca}"),
        )
    specs = list(DEFAULT_ELEMENTS if elements is None else elements)
    specs += list((extra or {}).values())
    for spec in specs:
        if spec.ca not in pki.cas:
            continue
        pki.issue(spec.name, ca=spec.ca, dns=spec.dns, sip_domains=spec.sip_domains, ips=spec.ips)
    return pki
