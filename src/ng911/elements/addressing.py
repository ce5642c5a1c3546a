"""Where an element is and where a request goes: naming, next hops, Via and branches.

Why a base class of `SipElement` rather than an object it holds: these are the element's
own public methods (`local`, `via`, `own_uri`, `is_own`, `locate`), called by every element
and its tests on the element itself; they read only what is here (the FQDN, the static host
table, the bound listeners, a worker's own Via port).

Next hops: a static host table (RFC 3263 without DNS, like Kamailio's `alias`/dispatcher
lists): URI → transport, address, and the name the TLS certificate must carry. The
asynchronous RFC 3263 resolver with NAPTR/SRV (`ng911.net.resolver`) serves the transport
tests and the tools; an element routes every request synchronously on its own table, so
the lookup stays here (cached per URI).
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
from dataclasses import dataclass

from ng911.elements.errors import ElementError
from ng911.elements.native import mypyc_attr, trait
from ng911.net.address import DEFAULT_PORTS, Address, is_ip_literal
from ng911.sip.headers import MAGIC_COOKIE, Via
from ng911.sip.message import Request
from ng911.sip.uri import URI, SipURI

__all__ = ["Addressing", "WorkerRole", "loop_hash", "new_branch_with", "via_matches"]


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This element is worker `index` of `count` processes sharing its listeners.

    Why a private UDP port per worker: the worker processes (`ng911.node`) share each
    listening port (SO_REUSEPORT; the kernel hashes every upstream source address/port to one
    worker, so an INVITE and its CANCEL and retransmissions meet the same server
    transaction), but a response from downstream comes from the next hop's address and would
    be hashed to any worker, not to the one holding the client transaction. So each worker sends its
    requests from a port of its own (`udp_ports[index]`) and names it in its Via sent-by
    (RFC 3261 §18.2.2, RFC 3581 §4). Record-Route keeps the shared address: in-dialog
    requests are new transactions any worker can proxy. `udp_ports` lists every worker's
    port, so that loop detection (§16.3 item 4) knows a Via of a sibling as ours.
    """

    index: int
    count: int
    udp_ports: tuple[int, ...] = ()

    @property
    def udp_port(self) -> int:
        return self.udp_ports[self.index] if self.index < len(self.udp_ports) else 0


class OwnNames:
    """What `Addressing.is_own` compares with, and what it was computed from (addresses grow
    in start(); the fqdn is set once). A proxy asks for every Route and Request-URI: building
    these sets each time was 3 % of a proxied call. (A class of its own: mypyc mis-compiles
    tuple attributes of a trait, and its incremental build an int one.)"""

    __slots__ = ("count", "fqdn", "hosts", "names", "ports")

    def __init__(self, fqdn: str, addresses: list[Address]) -> None:
        self.fqdn = fqdn
        self.count = len(addresses)
        self.hosts = frozenset(a.host for a in addresses)
        self.ports = frozenset(a.port for a in addresses)
        self.names = self.hosts | {fqdn.lower()}


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class Addressing:
    """The element's names and addresses, and the next hop of a URI."""

    def __init__(self, name: str, fqdn: str, hosts: dict[str, str]) -> None:
        self.name = name
        self.fqdn = fqdn
        self.hosts = hosts  # lower-case host name → IP address
        self.addresses: list[Address] = []  # bound listeners, filled by start()
        self.worker: WorkerRole | None = None  # set before start() in a worker process
        self.via_udp: Address | None = None  # a worker's own UDP port (its Via sent-by)
        self._located: dict[URI, tuple[Address, str | None]] = {}
        self._own: OwnNames | None = None  # is_own's sets, kept between calls (OwnNames)

    def local(self, transport: str) -> Address:
        """Our listener for `transport` (else the first one) — for Via, Contact, Record-Route."""
        for a in self.addresses:
            if a.transport == transport:
                return a
        if not self.addresses:
            raise ElementError(500, f"{self.name} has no listener")
        return self.addresses[0]

    def advertised_host(self, addr: Address) -> str:
        """Our name in Via/Contact/Record-Route: the FQDN when the host table knows it
        (so TLS peers can check our certificate by name, RFC 5922), else the address."""
        if self.fqdn.lower() in self.hosts:
            return self.fqdn
        return addr.host

    def via(self, transport: str, branch: str) -> str:
        return str(self.via_value(transport, branch))

    def via_value(self, transport: str, branch: str) -> Via:
        """Our Via (RFC 3261 §16.6 item 8, §18.1.1; `rport` asks for RFC 3581) as a value,
        so that a message we send can cache it instead of parsing it back."""
        addr = self.local(transport)
        if transport == "udp" and self.via_udp is not None:
            addr = self.via_udp  # a worker: answers come back to this process (WorkerRole)
        host = self.advertised_host(addr)
        return Via(transport.upper(), host, addr.port, (("branch", branch), ("rport", None)))

    def push_via(self, message: Request, transport: str, branch: str) -> None:
        """Put our Via on top of `message` (its top-Via cache seeded, not re-parsed)."""
        via = self.via_value(transport, branch)
        message.headers.prepend("Via", str(via))
        message.headers.remember("top_via", via)

    def own_uri(
        self, transport: str, *, user: str | None = None, lr: bool = True, sips: bool = True
    ) -> SipURI:
        """A URI that reaches us over `transport`: `sips:` on TLS (RFC 5630 §3), or with
        `sips=False` (a Contact or Record-Route in a dialog that is not sips: end to end)
        `sip:…;transport=tls`, so that in-dialog requests are not bound to TLS on hops that
        are not (RFC 3261 §26.2.2 would refuse them) and UAs that cannot send to a sips:
        route for a sip: dialog (baresip) still can."""
        addr = self.local(transport)
        params: list[tuple[str, str | None]] = []
        if transport == "tls" and sips:
            scheme = "sips"
        else:
            scheme = "sip"
            if transport in ("tcp", "tls"):
                params.append(("transport", transport))
        if lr:
            params.append(("lr", None))
        return SipURI(scheme, user, None, self.advertised_host(addr), addr.port, tuple(params))

    def is_own(self, uri: URI) -> bool:
        """Does `uri` (a Route or Request-URI) name this element?"""
        if not isinstance(uri, SipURI):
            return False
        own = self._own
        if own is None or own.count != len(self.addresses) or own.fqdn != self.fqdn:
            own = self._own = OwnNames(self.fqdn, self.addresses)
        host = uri.host.lower()
        if host not in own.names and self.hosts.get(host) not in own.hosts:
            return False
        return uri.port is None or uri.port in own.ports

    def locate(self, uri: URI) -> tuple[Address, str | None]:
        """Where to send a request for `uri` (RFC 3263 §4 on a static host table).

        Transport: the `transport` parameter, else TLS for sips:, else UDP; port: the URI's,
        else the transport's default. Returns the address and the host name the TLS peer's
        certificate must carry (None when the URI holds an IP address).
        """
        hit = self._located.get(uri)
        if hit is not None:
            return hit
        found = self._locate(uri)
        if len(self._located) >= 4096:
            self._located.clear()
        self._located[uri] = found
        return found

    def _locate(self, uri: URI) -> tuple[Address, str | None]:
        if not isinstance(uri, SipURI):
            raise ElementError(416, f"cannot route to a {uri!s:.40} URI")
        transport = uri.transport or ("tls" if uri.secure else "udp")
        if uri.secure:
            transport = "tls"  # RFC 3261 §26.2.2: sips only over TLS
        if transport not in DEFAULT_PORTS:
            raise ElementError(503, f"unsupported transport {transport}")
        maddr = uri.param("maddr")
        host = (maddr or uri.host).strip("[]")
        if is_ip_literal(host):
            ip, name = host, None
        else:
            ip_or_none = self.hosts.get(host.lower())
            if ip_or_none is None:
                if host.lower() == "localhost":
                    ip_or_none = "127.0.0.1"
                else:
                    raise ElementError(503, f"cannot resolve {host} (not in the host table)")
            ip, name = ip_or_none, host.lower()
        port = uri.port or DEFAULT_PORTS[transport]
        return Address(transport, ip, port), name


# Branches need to be unique, not secret (RFC 3261 §8.1.1.7; anyone on the path sees them):
# 64 bits from a generator seeded once from the OS, not a getrandom() system call per branch.
branch_rng = random.Random(secrets.randbits(128))
# a forked worker must not repeat its parent's sequence
os.register_at_fork(after_in_child=lambda: branch_rng.seed(secrets.randbits(128)))


def new_branch_with(prefix: str = "") -> str:
    """A branch (RFC 3261 §8.1.1.7), optionally carrying a loop-detection hash (§16.6)."""
    rand = f"{branch_rng.getrandbits(64):016x}"
    return f"{MAGIC_COOKIE}{prefix}.{rand}" if prefix else f"{MAGIC_COOKIE}{rand}"


def loop_hash(req: Request) -> str:
    """RFC 3261 §16.6 item 8: a hash of what makes a request "the same" at this proxy."""
    key = "|".join(
        (
            str(req.uri),
            req.from_addr.tag or "",
            req.to_addr.tag or "",
            req.call_id,
            str(req.cseq.seq),
            ",".join(req.headers.get_all("Proxy-Require")),
        )
    )
    return hashlib.blake2s(key.encode(), digest_size=5).hexdigest()


def via_matches(via: Via, element: Addressing) -> bool:
    """Is `via` one of ours (loop detection)?"""
    if (
        via.port is not None
        and not any(a.port == via.port for a in element.addresses)
        and not (element.worker is not None and via.port in element.worker.udp_ports)
    ):
        return False
    host = via.host.lower()
    return host == element.fqdn.lower() or any(a.host == host for a in element.addresses)
