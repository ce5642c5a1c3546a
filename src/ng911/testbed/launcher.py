"""Start the whole call chain of a topology in this process, for one scenario.

Addressing, and why: every host gets its own loopback address (127.B.C.N: B a block chosen
per run, C the host's role column, N its index) and listens on the well-known SIP ports,
5060 for UDP and TCP and 5061 for TLS (RFC 3261 §19.1.2). So URIs carry no port, exactly as in
a deployed ESInet: a LoST answer `sip:psap@manhattan.psap.nyc.example` reaches the PSAP on
5060, and when the ESRP upgrades it to `sips:` by policy (the paper's pain point, see
`ng911.lost.policy`) it reaches the same PSAP on 5061. Names resolve through a static host
table (every host's domain → its address, RFC 3263 without DNS). A block whose ports are
taken (another run) is skipped for the next one.

Certificates: one test CA per run (`[pki]` of the topology), one certificate per host with
its domain as DNS and SIP-URI subjectAltName and its address as IP SAN; mutual TLS between
proxies (the ESRP and PSAPs require client certificates, RFC 5922 §7.3), optional for the
VSP's callers. Every TLS context writes the run's key log (NSS format), for the captures.

Start order follows the routing: PSAPs, their call takers (who REGISTER), the LoST server
(whose mappings name the PSAPs), the ESRP, the VSP, the caller (who REGISTERs).
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import (
    CallerConfig,
    CallTakerConfig,
    EsrpConfig,
    HostEntry,
    ListenerConfig,
    PsapConfig,
    TlsProfile,
    VspConfig,
)
from ng911.elements.runtime import SipElement
from ng911.elements.ua import Caller, CallRecord
from ng911.lost.client import LostClient
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.server import RunningServer, make_app, serve
from ng911.lost.store import MappingConfig, slug
from ng911.node import build
from ng911.observe.hops import HOP_ROLES, HOPS
from ng911.pki.ca import init_ca
from ng911.pki.certs import IssuedCert, issue
from ng911.pki.testpki import cached_key
from ng911.pki.tls import server_context
from ng911.testbed.errors import TestbedError
from ng911.testbed.impair import HopRelay, Impairment
from ng911.testbed.topology import Host, Topology

SIP_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
COLUMN = {"caller": 1, "vsp": 2, "esrp": 3, "lost": 4, "psap": 5, "calltaker": 6}
RELAY_COLUMN = 7  # impairment relays: 127.B.7.N
Observer = Callable[[Any], None]


def hop_uri(transport: str, domain: str, user: str | None = None) -> str:
    """The URI that reaches `domain` over `transport`: sips: for TLS (RFC 5630 §3),
    `;transport=tcp` for TCP, plain sip: for UDP. No port: the well-known ones."""
    who = f"{user}@" if user else ""
    if transport == "tls":
        return f"sips:{who}{domain}"
    if transport == "tcp":
        return f"sip:{who}{domain};transport=tcp"
    return f"sip:{who}{domain}"


def plan_addresses(topo: Topology, block: int) -> dict[str, str]:
    """Host name → loopback address 127.block.column.index (or the host's own address)."""
    out: dict[str, str] = {}
    counts: dict[int, int] = {}
    for h in topo.hosts:
        if h.address not in ("auto", ""):
            out[h.name] = h.address
            continue
        col = COLUMN[h.role]
        counts[col] = counts.get(col, 0) + 1
        out[h.name] = f"127.{block}.{col}.{counts[col]}"
    return out


@dataclass
class ChainOptions:
    """Knobs of a run that are not topology: timers, holding time, LoST caching, logs."""

    t1: float = 0.5  # RFC 3261 T1 (retransmissions on UDP)
    hangup_after: float = 0.05  # caller hangs up this long after the 200
    lost_cache: bool = False  # False: every call asks LoST (each call pays the query)
    lost_timeout: float = 2.0
    element_logs: Path | None = None  # a JSON-lines log per element in this directory
    answer_timeout: float = 10.0
    impairments: tuple[Impairment, ...] = ()  # user-space delay/jitter/loss on hops
    # the caller closes its connection to the VSP when idle this long (s), so later calls
    # reconnect and resume the TLS session (hop 1); None: keep it open. It must exceed any
    # silence within a call (a slow set-up, the hold time), or a call loses its connection
    # while a response is due (ng911.net's idle timer counts from the last byte). The caller:
    # ng911.net's idle timeout applies to every connection of an element, and a proxy
    # closing the server side of a hop as its peer writes a request would lose that request.
    reconnect_after: float | None = None
    # --processes: each element its own OS process (ng911.testbed.processes); --netns: each
    # also in its own network namespace (ng911.testbed.netns, implies processes)
    processes: bool = False
    netns: bool = False
    ready_timeout: float = 30.0  # a child process prints its ready line within this (s)
    real_captures: bool = True  # --netns: dumpcap/tcpdump per hop on the hub's bridge
    stop_timeout: float = 10.0  # SIGTERM → exit (events written) within this, else SIGKILL


@dataclass
class RunningChain:
    topology: Topology
    addresses: dict[str, str]
    caller: Caller
    elements: dict[str, SipElement]
    lost_server: RunningServer
    lost_client: LostClient
    keylog: Path
    ca_path: Path
    opts: ChainOptions
    relays: list[HopRelay] = field(default_factory=list)
    claim: socket.socket | None = None
    errors: list[str] = field(default_factory=list)

    async def place_call(self, lat: float, lon: float) -> CallRecord:
        return await self.caller.place_call(
            lat,
            lon,
            hangup_after=self.opts.hangup_after,
            timeout=self.opts.answer_timeout + 5.0,
        )

    def cpu_seconds(self) -> dict[str, float]:
        return {name: el.cpu_seconds for name, el in self.elements.items()}

    async def close(self) -> None:
        order = [self.caller.name] + [n for n in self.elements if n != self.caller.name]
        for name in order:
            try:
                await self.elements[name].close()
            except Exception as exc:  # keep closing the others
                self.errors.append(f"closing {name}: {type(exc).__name__}: {exc}")
        try:
            await self.lost_server.close()
        except Exception as exc:
            self.errors.append(f"closing LoST: {type(exc).__name__}: {exc}")
        for relay in self.relays:
            try:
                await relay.close()
            except Exception as exc:
                self.errors.append(f"closing relay {relay.name}: {type(exc).__name__}: {exc}")
        if self.claim is not None:
            self.claim.close()


class _Pki:
    """The run's CA and one certificate per host (keys cached per process: fast reruns)."""

    def __init__(self, topo: Topology, root: Path, addresses: dict[str, str]) -> None:
        self.topo = topo
        self.root = root
        self.ca = init_ca(
            root / "ca",
            name=topo.ca_name,
            key_type=topo.key_type,
            key=cached_key(topo.key_type, "testbed-ca"),
        )
        self.certs: dict[str, tuple[Path, Path]] = {}
        for h in topo.hosts:
            if h.cert is not None and h.key is not None:
                self.certs[h.name] = (h.cert, h.key)
                continue
            c: IssuedCert = issue(
                self.ca,
                h.name,
                dns=(h.domain,),
                sip_domains=(h.domain,),
                ips=(addresses[h.name],),
                out_dir=root / "certs",
                key_type=topo.key_type,
                key=cached_key(topo.key_type, f"testbed:{h.name}"),
            )
            self.certs[h.name] = (c.chain_path, c.key_path)

    def profile(self, host: Host, *, require_client_cert: bool, keylog: Path) -> TlsProfile:
        cert, key = self.certs[host.name]
        return TlsProfile(
            cert=str(cert),
            key=str(key),
            ca=(str(self.ca.cert_path),),
            require_client_cert=require_client_cert,
            keylog=str(keylog),
        )


def _listeners(
    host: Host, address: str, allowed_peers: tuple[str, ...] = ()
) -> tuple[ListenerConfig, ...]:
    """`allowed_peers` goes on the TLS listener (RFC 5922 §7.3: whom a mutual-TLS hop serves)."""
    return tuple(
        ListenerConfig(t, address, SIP_PORTS[t], allowed_peers=allowed_peers if t == "tls" else ())
        for t in host.listen
    )


def allowed_peers(topo: Topology, h: Host) -> tuple[str, ...]:
    """The domains whose certificates `h`'s mutual-TLS listener accepts: the hosts that open
    connections to it. The ESRP: the VSP (hop 2) and the PSAPs (in-dialog requests back
    through its Record-Route); a psapd: the ESRP (hop 3) and its own call takers (hop 4,
    REGISTER). Any other certificate from the run's CA is refused at the handshake."""
    if h.role == "esrp":
        peers = [*topo.by_role("vsp"), *topo.by_role("psap")]
    elif h.role == "psap":
        peers = [*topo.by_role("esrp"), *topo.takers_of(h.name)]
    else:
        return ()
    return tuple(dict.fromkeys(p.domain for p in peers))


async def start_chain(
    topo: Topology,
    work: Path,
    *,
    observers: Sequence[Observer] = (),
    opts: ChainOptions | None = None,
    block: int | None = None,
    attempts: int = 8,
) -> RunningChain:
    """Start every host of `topo` (with its scenario transports applied) under `work`.

    Tries up to `attempts` loopback blocks when the well-known ports of one are taken.
    """
    opts = opts or ChainOptions()
    rng = random.Random()
    last: Exception | None = None
    for i in range(attempts):
        b = block if block is not None and i == 0 else rng.randint(16, 254)
        try:
            return await _start(topo, work, observers, opts, b)
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                raise
            last = exc
    raise TestbedError(
        f"could not bind the chain's loopback addresses after {attempts} tries: {last}"
    )


def claim_block(block: int) -> socket.socket:
    """Hold 127.B.0.1:5060 (no SO_REUSEADDR) while a chain uses block B, so that another
    testbed run in another process picks another block instead of sharing addresses."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((f"127.{block}.0.1", SIP_PORTS["tcp"]))
        s.listen(1)
    except OSError:
        s.close()
        raise
    return s


async def _start(
    topo: Topology, work: Path, observers: Sequence[Observer], opts: ChainOptions, block: int
) -> RunningChain:
    claim = claim_block(block) if any(h.address in ("auto", "") for h in topo.hosts) else None
    try:
        return await _start_claimed(topo, work, observers, opts, block, claim)
    except BaseException:
        if claim is not None:
            claim.close()
        raise


def hosts_table(
    topo: Topology, h: Host, addresses: dict[str, str], overrides: dict[tuple[str, str], str]
) -> tuple[HostEntry, ...]:
    """h's host table: every domain → its address, or the relay on an impaired hop."""
    return tuple(
        HostEntry(x.domain, overrides.get((h.name, x.name), addresses[x.name])) for x in topo.hosts
    )


def element_configs(
    topo: Topology,
    addresses: dict[str, str],
    pki: _Pki,
    opts: ChainOptions,
    *,
    lost_url: str,
    keylog_of: Callable[[Host], Path],
    overrides: dict[tuple[str, str], str] | None = None,
) -> dict[str, Any]:
    """Host name → its element's configuration, in start order (PSAPs, call takers, ESRP,
    VSP, caller). The one place a topology becomes element configs: the in-process chain
    starts these objects, `--processes` writes them to TOML files for `ng911 run`."""
    ov = overrides or {}
    tr = dict(zip(HOPS, topo.transports, strict=True))

    def common(h: Host, *, mutual: bool) -> dict[str, Any]:
        log_file = ""
        if opts.element_logs is not None:
            opts.element_logs.mkdir(parents=True, exist_ok=True)
            log_file = str(opts.element_logs / f"{h.name}.jsonl")
        peers = allowed_peers(topo, h) if mutual else ()
        return {
            "name": h.name,
            "fqdn": h.domain,
            "listeners": _listeners(h, addresses[h.name], peers),
            "tls": pki.profile(h, require_client_cert=mutual, keylog=keylog_of(h)),
            "hosts": hosts_table(topo, h, addresses, ov),
            "t1": opts.t1,
            "log_file": log_file,
        }

    out: dict[str, Any] = {}
    # PSAPs (mutual TLS: the ESRP and the call takers present certificates)
    for h in topo.by_role("psap"):
        out[h.name] = PsapConfig(**common(h, mutual=True), domain=h.domain)
    for h in topo.by_role("calltaker"):
        psap = topo.host(h.psap or "")
        out[h.name] = CallTakerConfig(
            **common(h, mutual=False),
            aor=f"sip:{h.name}@{psap.domain}",
            psap=hop_uri(tr["hop4"], psap.domain),
            rtp_host=addresses[h.name],
        )
    esrp_host = topo.one("esrp")
    first_psap = topo.by_role("psap")[0]
    mutual_lost = topo.lost == "https" and topo.lost_mutual
    esrp_cert, esrp_key = pki.certs[esrp_host.name]
    out[esrp_host.name] = EsrpConfig(
        **common(esrp_host, mutual=True),
        lost_url=lost_url,
        lost_timeout=opts.lost_timeout,
        lost_ca=(str(pki.ca.cert_path),),
        lost_cert=str(esrp_cert) if mutual_lost else "",
        lost_key=str(esrp_key) if mutual_lost else "",
        default_route=f"sip:{first_psap.name}@{first_psap.domain}",
        sips_policy="hop",
        psap_transport=tr["hop3"],
    )
    # VSP proxy: its callers' certificates are optional
    vsp = topo.one("vsp")
    out[vsp.name] = VspConfig(
        **common(vsp, mutual=False),
        domain=vsp.domain,
        esrp=hop_uri(tr["hop2"], esrp_host.domain),
    )
    # the caller, last: it registers with the VSP when it starts
    ch = topo.by_role("caller")[0]
    out[ch.name] = CallerConfig(
        **common(ch, mutual=False),
        aor=ch.aor or f"sip:caller@{vsp.domain}",
        proxy=hop_uri(tr["hop1"], vsp.domain),
        hangup_after=opts.hangup_after,
        answer_timeout=opts.answer_timeout,
        rtp_host=addresses[ch.name],
    )
    return out


def lost_mapping(topo: Topology) -> dict[str, tuple[str, ...]]:
    """Each borough's boundary → its PSAP's sip: URI (no port, no transport: what a LoST data
    set holds; the ESRP applies its sips policy for hop 3)."""
    return {
        slug(p.borough): (f"sip:{p.name}@{p.domain}",)
        for p in topo.by_role("psap")
        if p.borough is not None
    }


async def _start_claimed(
    topo: Topology,
    work: Path,
    observers: Sequence[Observer],
    opts: ChainOptions,
    block: int,
    claim: socket.socket | None,
) -> RunningChain:
    addresses = plan_addresses(topo, block)
    work.mkdir(parents=True, exist_ok=True)
    keylog = work / "keys.log"
    pki = _Pki(topo, work / "pki", addresses)
    obs = list(observers)
    relays, overrides = _plan_relays(topo, addresses, block, opts.impairments, obs)
    started: list[SipElement] = []

    async def start(el: SipElement) -> SipElement:
        started.append(el)
        if opts.reconnect_after is not None and el.role == "caller":
            el.transport.idle_timeout = opts.reconnect_after  # before start(): the sweeper
        await el.start()
        return el

    lost_server: RunningServer | None = None
    try:
        for relay in relays:
            await relay.start()
        elements: dict[str, SipElement] = {}
        lost = topo.one("lost")
        store = EmbeddedStore.from_geojson(
            topo.boundaries_path(), MappingConfig(domain=lost.domain, uris=lost_mapping(topo))
        )
        lost_ssl: ssl.SSLContext | None = None
        if topo.lost == "https":
            cert, key = pki.certs[lost.name]
            lost_ssl = server_context(
                cert,
                key,
                [pki.ca.cert_path],
                require_client_cert=topo.lost_mutual,
                keylog=keylog,
            )
        lost_server = await serve(make_app(store), addresses[lost.name], 0, ssl_context=lost_ssl)
        configs = element_configs(
            topo,
            addresses,
            pki,
            opts,
            lost_url=lost_server.url,
            keylog_of=lambda h: keylog,
            overrides=overrides,
        )
        lost_client = build.lost_client(
            configs[topo.one("esrp").name],
            observers=obs,
            use_cache=opts.lost_cache,
            server=lost.name,
        )
        for name, cfg in configs.items():
            role = topo.host(name).role
            el = build.build_element(role, cfg, observers=obs, lost=lost_client)
            elements[name] = await start(el)
        caller = elements[topo.by_role("caller")[0].name]
        assert isinstance(caller, Caller)
    except BaseException:
        for started_el in reversed(started):
            try:
                await started_el.close()
            except Exception:
                pass
        if lost_server is not None:
            await lost_server.close()
        for relay in relays:
            try:
                await relay.close()
            except Exception:
                pass
        raise
    return RunningChain(
        topology=topo,
        addresses=addresses,
        caller=caller,
        elements=elements,
        lost_server=lost_server,
        lost_client=lost_client,
        keylog=keylog,
        ca_path=pki.ca.cert_path,
        opts=opts,
        relays=relays,
        claim=claim,
    )


def _neighbours(topo: Topology, hop: str) -> list[tuple[Host, Host]]:
    """The (upstream, downstream) host pairs joined by `hop`."""
    up_role, down_role = HOP_ROLES[hop]
    if hop == "hop4":
        return [(topo.host(t.psap or ""), t) for t in topo.by_role("calltaker")]
    return [(u, d) for u in topo.by_role(up_role) for d in topo.by_role(down_role)]


def _plan_relays(
    topo: Topology,
    addresses: dict[str, str],
    block: int,
    impairments: Sequence[Impairment],
    observers: Sequence[Observer],
) -> tuple[list[HopRelay], dict[tuple[str, str], str]]:
    """A relay fronting each end of each impaired hop, and the host-table overrides
    ((element, peer) → the relay's address) that send the hop's traffic through them."""
    relays: list[HopRelay] = []
    overrides: dict[tuple[str, str], str] = {}
    n = 0
    for imp in impairments:
        fronts: dict[str, str] = {}
        for up, down in _neighbours(topo, imp.hop):
            for host in (up, down):
                if host.name not in fronts:
                    n += 1
                    fronts[host.name] = f"127.{block}.{RELAY_COLUMN}.{n}"
                    relays.append(
                        HopRelay(
                            name=f"relay-{imp.hop}-{host.name}",
                            imp=imp,
                            front_ip=fronts[host.name],
                            target_ip=addresses[host.name],
                            ports={t: SIP_PORTS[t] for t in host.listen},
                            observers=observers,
                        )
                    )
            overrides[(up.name, down.name)] = fronts[down.name]
            overrides[(down.name, up.name)] = fronts[up.name]
    return relays, overrides


def hop_endpoints() -> dict[str, tuple[str, str]]:
    return dict(HOP_ROLES)


async def wait_registered(chain: RunningChain, timeout: float = 5.0) -> None:
    """Every call taker registered (the PSAP can offer calls)."""
    takers = [el for el in chain.elements.values() if isinstance(el, CallTaker)]
    await asyncio.wait_for(asyncio.gather(*(t.registered.wait() for t in takers)), timeout)
