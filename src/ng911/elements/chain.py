"""The whole call chain in one process: for tests, benchmarks and the testbed.

caller ─hop1→ VSP ─hop2→ ESRP ─hop3→ psapd (one per NYC borough, plus a default PSAP)
─hop4→ call taker(s), with a LoST server (ECRF) over http or https on the embedded NYC
boundaries. Each hop's transport is chosen separately (udp | tcp | tls); every element
listens on 127.0.0.1 with an ephemeral port; a test PKI (`ng911.pki.testpki`) gives every
element a certificate naming its FQDN (and 127.0.0.1), and every TLS listener requires a
client certificate, so proxy-to-proxy hops are mutually authenticated. Names resolve through
one static host table shared by all elements (RFC 3263 without DNS).

Start order is bottom-up, because upstream configuration needs downstream ports: psapds,
call takers (they REGISTER), LoST (its data holds the psapds' URIs), ESRP, VSP, caller.
Every element's transport layer feeds `Chain.events` (and any extra observers).
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import (
    AlternateRoute,
    CallerConfig,
    CallTakerConfig,
    EsrpConfig,
    HostEntry,
    ListenerConfig,
    PsapConfig,
    VspConfig,
)
from ng911.elements.esrp import Esrp
from ng911.elements.psap import Psapd
from ng911.elements.runtime import SipElement
from ng911.elements.ua import Caller, CallRecord
from ng911.elements.vsp import VspProxy
from ng911.lost.client import LostClient
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.server import RunningServer, make_app, serve
from ng911.lost.store import MappingConfig
from ng911.pki.testpki import TestPki, build_test_pki

__all__ = ["BOROUGHS", "SCENARIOS", "Chain", "ChainOptions", "build_chain"]

# (hop1, hop2, hop3, hop4, lost) per DESIGN.md scenario
SCENARIOS: dict[str, tuple[str, str, str, str, str]] = {
    "plain": ("udp", "udp", "udp", "udp", "http"),
    "tcp": ("tcp", "tcp", "tcp", "tcp", "http"),
    "tls-e2e": ("tls", "tls", "tls", "udp", "http"),
    "tls-vsp-psap": ("udp", "tls", "tls", "udp", "http"),
    "tls-all": ("tls", "tls", "tls", "tls", "https"),
}

# slug -> (borough, a point inside it)
BOROUGHS: dict[str, tuple[str, float, float]] = {
    "manhattan": ("Manhattan", 40.7580, -73.9855),
    "brooklyn": ("Brooklyn", 40.6782, -73.9442),
    "queens": ("Queens", 40.7282, -73.7949),
    "bronx": ("Bronx", 40.8448, -73.8648),
    "staten-island": ("Staten Island", 40.5795, -74.1502),
}
# the alternate PSAP of each borough's PSAP (NENA i3 alternate routing)
ALTERNATES: dict[str, str] = {
    "manhattan": "bronx",
    "bronx": "manhattan",
    "brooklyn": "queens",
    "queens": "brooklyn",
    "staten-island": "brooklyn",
}
DEFAULT_PSAP = "default"
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ChainOptions:
    """Knobs of the in-process chain (the defaults make a fast, deterministic test run)."""

    scenario: str = "plain"
    hops: tuple[str, str, str, str] | None = None  # overrides the scenario's SIP hops
    lost: str | None = None  # "http" | "https"; overrides the scenario's
    takers_per_psap: int = 1
    t1: float = 0.5
    failover_timeout: float = 2.0
    offer_timeout: float = 10.0
    answer_delay: float = 0.0
    ring_delay: float = 0.0
    caller_hangup: float = 0.0  # 0: the test hangs up itself (or never)
    queue_size: int = 10
    lost_down: bool = False  # point the ESRP at a closed port
    down: tuple[str, ...] = ()  # psapd slugs that never start (their port stays closed)
    log_keep: int = 2000
    keylog: str = ""
    observe: bool = True  # feed Chain.events (the benchmark turns it off)
    vsp_lost: bool = False  # the VSP asks LoST itself and routes straight to the PSAP


def _free_port() -> int:
    """A TCP/UDP port nothing listens on (bound then closed): a PSAP or ECRF that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        port = int(s.getsockname()[1])
    return port


def _uri(fqdn: str, port: int, transport: str, user: str | None = None) -> str:
    """The URI of a listener; sips: for TLS (RFC 5630), ;transport=tcp for TCP."""
    u = f"{user}@" if user else ""
    if transport == "tls":
        return f"sips:{u}{fqdn}:{port}"
    if transport == "tcp":
        return f"sip:{u}{fqdn}:{port};transport=tcp"
    return f"sip:{u}{fqdn}:{port}"


@dataclass(eq=False)
class Chain:
    """The running chain: elements by role, the LoST server, the observed network events."""

    options: ChainOptions
    hops: tuple[str, str, str, str]
    lost_scheme: str
    caller: Caller
    vsp: VspProxy
    esrp: Esrp
    psaps: dict[str, Psapd]
    takers: dict[str, list[CallTaker]]
    lost_server: RunningServer | None
    pki: TestPki | None
    events: list[Any] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def elements(self) -> list[SipElement]:
        out: list[SipElement] = [self.caller, self.vsp, self.esrp]
        out.extend(self.psaps.values())
        for ts in self.takers.values():
            out.extend(ts)
        return out

    async def place_call(self, lat: float, lon: float, **kw: Any) -> CallRecord:
        """One call from the caller at (lat, lon); returns its record when it is over
        (or answered, with `wait=False`; see `Caller.place_call`)."""
        return await self.caller.place_call(lat, lon, **kw)

    def taker_of(self, record: CallRecord) -> CallTaker | None:
        """The call taker that answered a call (by the 200's Contact)."""
        for ts in self.takers.values():
            for t in ts:
                if record.answered_by and t.fqdn in record.answered_by:
                    return t
        return None

    def psap_of(self, record: CallRecord) -> str | None:
        t = self.taker_of(record)
        if t is None:
            return None
        for slug, ts in self.takers.items():
            if t in ts:
                return slug
        return None

    def cpu(self) -> dict[str, float]:
        return {e.name: e.cpu_seconds for e in self.elements}

    async def close(self) -> None:
        for e in reversed(self.elements):
            try:
                await e.close()
            except Exception:  # closing must go on: one element's failure is logged only
                e.log("close_failed")
        if self.lost_server is not None:
            await self.lost_server.close()
        if self._tmp is not None:
            self._tmp.cleanup()


async def build_chain(
    options: ChainOptions | None = None,
    *,
    workdir: Path | None = None,
    observers: Iterable[Callable[[Any], None]] = (),
) -> Chain:
    """Start the whole chain (see the module docstring); `await chain.close()` at the end."""
    opt = options or ChainOptions()
    base = SCENARIOS[opt.scenario]
    hops = opt.hops or (base[0], base[1], base[2], base[3])
    lost_scheme = opt.lost or base[4]
    h1, h2, h3, h4 = hops
    events: list[Any] = []
    obs: list[Callable[[Any], None]] = [*observers]
    if opt.observe:
        obs.insert(0, events.append)

    tmp: tempfile.TemporaryDirectory[str] | None = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ng911-chain-")
        workdir = Path(tmp.name)
    needs_pki = "tls" in hops or lost_scheme == "https"
    pki = build_test_pki(workdir / "pki", elements=()) if needs_pki else None

    # names
    slugs = [*BOROUGHS, DEFAULT_PSAP]
    fq = {
        "caller": "caller.vsp.example",
        "vsp": "proxy.vsp.example",
        "esrp": "esrp.esinet.example",
        "lost": "lost.esinet.example",
    }
    for s in slugs:
        fq[f"psap-{s}"] = f"{s}.psap.example"
        for i in range(1, opt.takers_per_psap + 1):
            fq[f"taker-{s}-{i}"] = f"taker{i}.{s}.psap.example"
    hosts = tuple(HostEntry(name, LOCALHOST) for name in fq.values())
    cas = {"caller": "vsp", "vsp": "vsp", "esrp": "esinet", "lost": "esinet"}

    def tls_kw(name: str) -> dict[str, Any]:
        if pki is None:
            return {}
        ca = cas.get(name, "psap")
        if name not in pki.certs:
            pki.issue(name, ca=ca, dns=(fq[name],), sip_domains=(fq[name],), ips=(LOCALHOST,))
        keylog = Path(opt.keylog) if opt.keylog else None
        return {
            "server_tls": pki.server_context(name, require_client_cert=True, keylog=keylog),
            "client_tls": pki.client_context(name, keylog=keylog),
        }

    def listeners(*transports: str) -> tuple[ListenerConfig, ...]:
        return tuple(ListenerConfig(t, LOCALHOST, 0) for t in dict.fromkeys(transports))

    started: list[SipElement] = []
    lost_server: RunningServer | None = None
    try:
        # psapds and their call takers
        psaps: dict[str, Psapd] = {}
        psap_uri: dict[str, str] = {}
        takers: dict[str, list[CallTaker]] = {}
        for s in slugs:
            name = f"psap-{s}"
            if s in opt.down:
                psap_uri[s] = f"sip:{fq[name]}:{_free_port()}"
                continue
            p = Psapd(
                PsapConfig(
                    name=name,
                    fqdn=fq[name],
                    domain=fq[name],
                    listeners=listeners(h3, h4),
                    hosts=hosts,
                    t1=opt.t1,
                    queue_size=opt.queue_size,
                    offer_timeout=opt.offer_timeout,
                ),
                log_keep=opt.log_keep,
                observers=obs,
                **tls_kw(name),
            )
            await p.start()
            started.append(p)
            psaps[s] = p
            # plain sip: as LoST data holds it; the ESRP's hop policy adapts it (sips:, tcp)
            psap_uri[s] = f"sip:{fq[name]}:{p.local(h3).port}"
            takers[s] = []
            for i in range(1, opt.takers_per_psap + 1):
                tname = f"taker-{s}-{i}"
                t = CallTaker(
                    CallTakerConfig(
                        name=tname,
                        fqdn=fq[tname],
                        listeners=listeners(h4),
                        hosts=hosts,
                        t1=opt.t1,
                        aor=f"sip:taker{i}@{fq[name]}",
                        psap=_uri(fq[name], p.local(h4).port, h4),
                        ring_delay=opt.ring_delay,
                        answer_delay=opt.answer_delay,
                    ),
                    log_keep=opt.log_keep,
                    observers=obs,
                    **tls_kw(tname),
                )
                await t.start()
                started.append(t)
                takers[s].append(t)

        # LoST (ECRF): each borough's boundary maps to its psapd's plain sip: URI; the ESRP's
        # sips policy upgrades it on a TLS hop, as with real LoST data (ng911.lost.policy)
        store = EmbeddedStore.from_geojson(
            None,
            MappingConfig(
                domain="psap.example",
                uris={s: (psap_uri[s], f"xmpp:psap@{s}.psap.example") for s in BOROUGHS},
            ),
        )
        if opt.lost_down:
            lost_url = f"{lost_scheme}://{LOCALHOST}:{_free_port()}/lost"
        else:
            ssl_ctx = None
            if lost_scheme == "https" and pki is not None:
                tls_kw("lost")
                ssl_ctx = pki.server_context("lost", require_client_cert=True)
            lost_server = await serve(make_app(store), LOCALHOST, 0, ssl_context=ssl_ctx)
            lost_url = lost_server.url
        lost_tls = None
        if lost_scheme == "https" and pki is not None:
            tls_kw("esrp")
            lost_tls = pki.client_context("esrp")

        # ESRP
        psap3 = h3
        esrp_cfg = EsrpConfig(
            name="esrp",
            fqdn=fq["esrp"],
            listeners=listeners(h2, h3),
            hosts=hosts,
            t1=opt.t1,
            lost_url=lost_url,
            default_route=psap_uri[DEFAULT_PSAP],
            alternates=tuple(
                AlternateRoute(psap_uri[s], (psap_uri[a],)) for s, a in ALTERNATES.items()
            ),
            psap_transport=psap3,
            failover_timeout=opt.failover_timeout,
        )
        esrp = Esrp(
            esrp_cfg,
            lost=LostClient(lost_url, ssl=lost_tls, timeout=1.0),
            log_keep=opt.log_keep,
            observers=obs,
            **tls_kw("esrp"),
        )
        await esrp.start()
        started.append(esrp)

        # VSP
        vsp = VspProxy(
            VspConfig(
                name="vsp",
                fqdn=fq["vsp"],
                domain="vsp.example",
                listeners=listeners(h1, h2),
                hosts=hosts,
                t1=opt.t1,
                esrp=_uri(fq["esrp"], esrp.local(h2).port, h2),
                lost_url=lost_url if opt.vsp_lost and lost_scheme == "http" else "",
            ),
            log_keep=opt.log_keep,
            observers=obs,
            **tls_kw("vsp"),
        )
        await vsp.start()
        started.append(vsp)

        # caller
        caller = Caller(
            CallerConfig(
                name="caller",
                fqdn=fq["caller"],
                listeners=listeners(h1),
                hosts=hosts,
                t1=opt.t1,
                aor="sip:+12125550123@vsp.example",
                proxy=_uri(fq["vsp"], vsp.local(h1).port, h1),
                hangup_after=opt.caller_hangup,
            ),
            log_keep=opt.log_keep,
            observers=obs,
            **tls_kw("caller"),
        )
        await caller.start()
        started.append(caller)
    except BaseException:
        for e in reversed(started):
            await e.close()
        if lost_server is not None:
            await lost_server.close()
        if tmp is not None:
            tmp.cleanup()
        raise
    chain = Chain(
        opt, hops, lost_scheme, caller, vsp, esrp, psaps, takers, lost_server, pki, events, tmp
    )
    return chain
