"""Locating SIP servers (RFC 3263 §4): from a SIP or SIPS URI to an ordered list of Address.

Two sources of records behind one algorithm: `StaticResolver` (a table of hosts, SRV and
NAPTR records, filled from the topology; the default, so a test bed needs no DNS) and
`DnsResolver` (real NAPTR/SRV/A/AAAA queries with dnspython, when configured).

The algorithm, RFC 3263 §4.1-4.2:
1. target = `maddr` if present, else the host.
2. transport: the `transport` URI parameter if present (`sips` + tcp means TLS; `sips` + udp
   is refused, RFC 3261 §26.2.2); else, if the target is an IP address or the URI has a port,
   UDP for sip and TLS for sips; else NAPTR records of the target (`SIPS+D2T`, `SIP+D2T`,
   `SIP+D2U`, sorted by order then preference; only `SIPS+D2T` for sips); else SRV queries
   `_sips._tcp`, `_sip._tcp`, `_sip._udp` in the order of our preference.
3. port: the URI's port; else the SRV record's; else 5060 (5061 for TLS).
4. SRV targets are tried by priority, then weight (higher first, deterministic rather than
   RFC 2782's weighted random: a test bed wants repeatable routes), each expanded to its
   addresses.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ng911.net.address import DEFAULT_PORTS, Address, is_ip_literal
from ng911.net.errors import InsecureTransportError, TransportError
from ng911.sip.uri import SipURI


class ResolveError(TransportError):
    """No address found for a URI (RFC 3263 §4.3: the request fails with 503/408-like error)."""


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    order: int
    preference: int
    service: str  # "SIPS+D2T" | "SIP+D2T" | "SIP+D2U"
    replacement: str  # the SRV name to query next


NAPTR_SERVICES: dict[str, str] = {"SIPS+D2T": "tls", "SIP+D2T": "tcp", "SIP+D2U": "udp"}
SRV_PREFIX: dict[str, str] = {"tls": "_sips._tcp.", "tcp": "_sip._tcp.", "udp": "_sip._udp."}


class Lookups(Protocol):
    async def naptr(self, name: str) -> list[NaptrRecord]: ...
    async def srv(self, name: str) -> list[SrvRecord]: ...
    async def addresses(self, name: str) -> list[str]: ...


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


class Resolver:
    """RFC 3263 over some `Lookups`. `transports` is our preference when only SRV is known."""

    def __init__(self, lookups: Lookups, *, transports: Sequence[str] = ("udp", "tcp", "tls")):
        self.lookups = lookups
        self.transports = tuple(transports)

    async def resolve(self, uri: SipURI) -> list[Address]:
        target = uri.param("maddr") or uri.host
        target = target.strip("[]") if is_ip_literal(target) else _norm(target)
        secure = uri.secure
        transport = uri.transport
        if transport is not None:
            if transport not in ("udp", "tcp", "tls"):
                raise ResolveError(f"unsupported transport {transport!r} in {uri}")
            if secure and transport == "udp":
                raise InsecureTransportError(f"{uri}: sips over UDP is not allowed")
            if secure or transport == "tls":
                transport = "tls"
        # §4.2: a numeric target, or an explicit port, needs no NAPTR/SRV
        if is_ip_literal(target):
            t = transport or ("tls" if secure else "udp")
            return [Address(t, target, uri.port or DEFAULT_PORTS[t])]
        if uri.port is not None:
            t = transport or ("tls" if secure else "udp")
            return await self._expand(t, target, uri.port)
        # §4.1: NAPTR, unless the transport is already fixed
        srv_names: list[tuple[str, str]] = []
        if transport is None:
            naptrs = sorted(await self.lookups.naptr(target), key=lambda r: (r.order, r.preference))
            for r in naptrs:
                nt = NAPTR_SERVICES.get(r.service.upper())
                if nt is None or nt not in self.transports or (secure and nt != "tls"):
                    continue
                srv_names.append((nt, _norm(r.replacement)))
        if not srv_names:
            wanted = [transport] if transport else (["tls"] if secure else list(self.transports))
            srv_names = [(t, SRV_PREFIX[t] + target) for t in wanted if t in SRV_PREFIX]
        out: list[Address] = []
        for t, name in srv_names:
            srvs = await self.lookups.srv(name)
            for rec in sorted(srvs, key=lambda r: (r.priority, -r.weight)):
                out.extend(await self._expand(t, _norm(rec.target), rec.port))
        if out:
            return _dedupe(out)
        # §4.2: no SRV: A/AAAA of the target, default port
        t = transport or ("tls" if secure else "udp")
        found = await self._expand(t, target, DEFAULT_PORTS[t])
        if not found:
            raise ResolveError(f"no address for {uri}", peer=str(uri))
        return found

    async def _expand(self, transport: str, host: str, port: int) -> list[Address]:
        if is_ip_literal(host):
            return [Address(transport, host, port)]
        return [Address(transport, ip, port) for ip in await self.lookups.addresses(host)]


def _dedupe(addrs: Iterable[Address]) -> list[Address]:
    seen: set[Address] = set()
    out = []
    for a in addrs:
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out


class StaticLookups:
    """Records from tables (the topology). Names not in `hosts` fall back to the system
    resolver only when `system_fallback` (so `localhost` works in a test bed)."""

    def __init__(
        self,
        hosts: Mapping[str, Sequence[str]] | None = None,
        srv: Mapping[str, Sequence[SrvRecord | tuple[int, int, int, str]]] | None = None,
        naptr: Mapping[str, Sequence[NaptrRecord | tuple[int, int, str, str]]] | None = None,
        *,
        system_fallback: bool = False,
    ) -> None:
        self.hosts = {_norm(k): list(v) for k, v in (hosts or {}).items()}
        self.srv_table = {
            _norm(k): [r if isinstance(r, SrvRecord) else SrvRecord(*r) for r in v]
            for k, v in (srv or {}).items()
        }
        self.naptr_table = {
            _norm(k): [r if isinstance(r, NaptrRecord) else NaptrRecord(*r) for r in v]
            for k, v in (naptr or {}).items()
        }
        self.system_fallback = system_fallback

    async def naptr(self, name: str) -> list[NaptrRecord]:
        return list(self.naptr_table.get(_norm(name), ()))

    async def srv(self, name: str) -> list[SrvRecord]:
        return list(self.srv_table.get(_norm(name), ()))

    async def addresses(self, name: str) -> list[str]:
        found = self.hosts.get(_norm(name))
        if found is not None:
            return list(found)
        if not self.system_fallback:
            return []
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_DGRAM)
        except OSError:
            return []
        return _dedupe_str(str(i[4][0]) for i in infos)


def _dedupe_str(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class DnsLookups:
    """Real DNS with dnspython's asyncio resolver. `nameservers` (ip or (ip, port)) override
    /etc/resolv.conf; NXDOMAIN / no answer / timeout give an empty list (the algorithm then
    falls through to the next step, RFC 3263 §4.1)."""

    def __init__(
        self, nameservers: Sequence[str | tuple[str, int]] | None = None, *, timeout: float = 2.0
    ) -> None:
        import dns.asyncresolver

        configure = not nameservers
        self._resolver: Any = dns.asyncresolver.Resolver(configure=configure)
        if nameservers:
            ips, ports = [], set()
            for ns in nameservers:
                ip, port = (ns, 53) if isinstance(ns, str) else ns
                ips.append(ip)
                ports.add(port)
            self._resolver.nameservers = ips
            self._resolver.port = ports.pop() if len(ports) == 1 else 53
        self._resolver.lifetime = timeout

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        import dns.exception
        import dns.resolver

        try:
            answer = await self._resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.Timeout as exc:
            raise ResolveError(f"DNS timeout for {rdtype} {name}") from exc
        return list(answer)

    async def naptr(self, name: str) -> list[NaptrRecord]:
        out = []
        for r in await self._query(name, "NAPTR"):
            service = r.service.decode() if isinstance(r.service, bytes) else str(r.service)
            out.append(NaptrRecord(r.order, r.preference, service, str(r.replacement)))
        return out

    async def srv(self, name: str) -> list[SrvRecord]:
        return [
            SrvRecord(r.priority, r.weight, r.port, str(r.target))
            for r in await self._query(name, "SRV")
        ]

    async def addresses(self, name: str) -> list[str]:
        v4 = [r.address for r in await self._query(name, "A")]
        v6 = [r.address for r in await self._query(name, "AAAA")]
        return _dedupe_str([*v4, *v6])


def static_resolver(
    hosts: Mapping[str, Sequence[str]] | None = None,
    srv: Mapping[str, Sequence[SrvRecord | tuple[int, int, int, str]]] | None = None,
    naptr: Mapping[str, Sequence[NaptrRecord | tuple[int, int, str, str]]] | None = None,
    *,
    system_fallback: bool = True,
) -> Resolver:
    """The default: a static table (from the topology), falling back to the system resolver."""
    return Resolver(StaticLookups(hosts, srv, naptr, system_fallback=system_fallback))


def dns_resolver(nameservers: Sequence[str | tuple[str, int]] | None = None) -> Resolver:
    return Resolver(DnsLookups(nameservers))
