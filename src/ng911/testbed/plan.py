"""Topology → a chain plan: everything about a run decided before anything starts.

Why one plan: the in-process launcher, `--processes`, `--netns`, the exported per-host
bundles, the element tests and the benchmarks all need the same answers (each host's address,
its certificate, its host table, its element configuration, where LoST listens, which hops go
through impairment relays, which elements are left down on purpose). When each of them worked
these out itself they drifted apart; now they all consume a `ChainPlan`.

Addressing: every host gets its own address (127.B.C.N on loopback: B a block chosen per run,
C the host's role column, N its index; or the host's own address; or the one a network
namespace assigns) and listens on the well-known ports, 5060 for UDP and TCP and 5061 for TLS
(RFC 3261 §19.1.2), so URIs carry no port, as in a deployed ESInet. LoST listens on 8080
(http) or 8443 (https) of its own address, so its URL is known before it starts; the i3
Logging Service likewise on 8090 (http) or 8453 (https) of its own (distinct ports from LoST's,
so the two may share a machine). Names resolve through a static host table (every host's
domain → its address, RFC 3263 without DNS).

Logging (NENA-STA-010.3 §4.12): every element but the caller (a citizen's phone logs nowhere)
names the logger's URL and its agency (`agency_of`); the logger speaks https, mutual when
LoST's is, whenever the scenario's LoST does, and accepts LogEvents signed by certificates of
the run's CA. Its store is `<work>/logevents.sqlite`.

Certificates: one CA per run (`[pki]` of the topology), one certificate per host with its
domain as DNS and SIP-URI subjectAltName and its address as IP SAN; mutual TLS towards the
ESRP and PSAPs (RFC 5922 §7.3: their TLS listeners name the peers they serve), optional for
the VSP's callers.

Failure injection is part of the plan: a host in `down` is planned (it has an address, its
peers route to it) but never started, so its neighbours meet a closed port; `lost_down`
leaves the ECRF down, `logger_down` the Logging Service (the elements still name its URL).
"""

from __future__ import annotations

import dataclasses
import errno
import random
import shutil
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ng911.elements.config import (
    AlternateRoute,
    CallerConfig,
    CallTakerConfig,
    ConfigError,
    ElementConfig,
    EsrpConfig,
    HostEntry,
    ListenerConfig,
    PsapConfig,
    TlsProfile,
    VspConfig,
    metrics_spec,
)
from ng911.lost.store import slug
from ng911.observe.hops import HOP_ROLES, HOPS
from ng911.pki.ca import CA, init_ca
from ng911.pki.certs import issue
from ng911.pki.testpki import cached_key
from ng911.testbed.errors import TestbedError
from ng911.testbed.impair import Impairment
from ng911.testbed.topology import Host, Topology, psap_uri

SIP_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
LOST_PORTS = {"http": 8080, "https": 8443}
LOGGER_PORTS = {"http": 8090, "https": 8453}
LOGGER_STORE = "logevents.sqlite"  # in the run's directory (a bundle's own, in processes)
COLUMN = {"caller": 1, "vsp": 2, "esrp": 3, "lost": 4, "psap": 5, "calltaker": 6, "logger": 8}
RELAY_COLUMN = 7  # impairment relays: 127.B.7.N
T = TypeVar("T")
# the element configuration class of each SIP role
CONFIG_CLASSES: dict[str, type[ElementConfig]] = {
    "psap": PsapConfig,
    "calltaker": CallTakerConfig,
    "esrp": EsrpConfig,
    "vsp": VspConfig,
    "caller": CallerConfig,
}


@dataclass
class ChainOptions:
    """Knobs of a run that are not topology: timers, holding time, faults, logs, isolation."""

    t1: float = 0.5  # RFC 3261 T1 (retransmissions on UDP)
    hangup_after: float = 0.05  # caller hangs up this long after the 200 (0: never by itself)
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
    # failure injection: hosts planned but never started (their peers meet a closed port)
    down: tuple[str, ...] = ()
    lost_down: bool = False
    # the i3 Logging Service (ng911.i3log): every element but the caller sends it signed
    # LogEvents (off: no element names a logger and none is started); `logger_down`: planned,
    # named in every config, never started (a logger outage must cost no call)
    logger: bool = True
    logger_down: bool = False
    # the LogSenders queue during the run and map, sign and send once the calls are over
    # (in one process at `RunningChain.close`; element processes when stopped, `ng911 run
    # --logger-defer`), so logging never takes CPU from a measured call (~0.8 ms per LogEvent
    # for the element and the logger together, ~60 LogEvents per call: bench/logger.py).
    # False: sent as they happen, as deployed (the cost then shows in the set-up delays).
    logger_defer: bool = True
    # the VSP asks LoST itself and routes straight to the PSAP (RFC 6881 §8), ESRP as fallback
    vsp_lost: bool = False
    # role → {config field: value}, applied to every element of that role (offer_timeout,
    # answer_delay, queue_size, failover_timeout...); an unknown field is a ConfigError
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    log_keep: int = 0  # in-process: each element keeps its last N log records (tests read them)
    keep_events: bool = False  # in-process: `RunningChain.events` keeps every network event
    # element processes write every network event to a file (what a run's measurements and
    # the console read); False: they record nothing, as `ng911 run` without --events (a
    # capacity bench: recording is about a third of a process chain's CPU per call)
    record_events: bool = True
    # every SIP element's config sets `metrics` = its address:9100 (ng911.node.metrics): what
    # `ng911 run` serves, so --processes/--netns/bundles can be read by `ng911 stats DIR`
    metrics: bool = False


@dataclass(frozen=True, slots=True)
class RelaySpec:
    """An impairment relay fronting one element (`target_ip`) for the far end of a hop."""

    name: str
    imp: Impairment
    front_ip: str
    target_ip: str
    ports: dict[str, int]

    def kwargs(self) -> dict[str, Any]:
        """What `ng911.testbed.impair.HopRelay` takes, but its observers."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class LostPlan:
    """The ECRF (`ng911 run lost`): where it listens, its TLS, its boundaries and mappings."""

    host: Host
    address: str
    port: int
    scheme: str  # "http" | "https"
    mutual: bool
    boundaries: Path
    uris: dict[str, tuple[str, ...]]  # boundary slug → the URIs it maps to
    tls: TlsProfile

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}:{self.port}/lost"

    def to_dict(self) -> dict[str, Any]:
        """The `[NAME]` table `ng911 run lost --config` reads."""
        return _service_table(
            self,
            boundaries=str(self.boundaries),
            domain=self.host.domain,
            uris={k: list(v) for k, v in self.uris.items()},
        )


@dataclass(frozen=True, slots=True)
class LoggerPlan:
    """The i3 Logging Service (`ng911 run logger`): where it listens, its TLS, whose
    signatures it accepts (`signer_ca`: the run's CA) and its store."""

    host: Host
    address: str
    port: int
    scheme: str  # "http" | "https": LoST's
    mutual: bool  # https with client certificates: when LoST's is mutual
    tls: TlsProfile
    signer_ca: tuple[str, ...]
    store: Path

    @property
    def url(self) -> str:
        """The base URL the elements name (`ElementConfig.logger`); POSTs go to LogEvents."""
        return f"{self.scheme}://{self.address}:{self.port}/"

    def to_dict(self) -> dict[str, Any]:
        """The `[NAME]` table `ng911 run logger --config` reads."""
        return _service_table(self, signer_ca=list(self.signer_ca), store=str(self.store))


def _service_table(plan: LostPlan | LoggerPlan, **fields: Any) -> dict[str, Any]:
    """An HTTP service's table: name, address, port, `fields`, and its TLS when https."""
    out: dict[str, Any] = {
        "name": plan.host.name,
        "host": plan.address,
        "port": plan.port,
        **fields,
    }
    if plan.scheme == "https":
        out |= {
            "cert": plan.tls.cert,
            "key": plan.tls.key,
            "ca": list(plan.tls.ca),
            "require_client_cert": plan.mutual,
            "keylog": plan.tls.keylog,
        }
    return out


class RunPki:
    """The run's CA and one certificate per host (keys cached per process: fast reruns)."""

    def __init__(self, topo: Topology, root: Path, addresses: Mapping[str, str]) -> None:
        self.root = root
        self.ca: CA = init_ca(
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
            c = issue(
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


# The order a chain stops in, by role, wave after wave: the caller first (no new call while
# the others stop), then those that send on their own (call takers' keep-alives, the ESRP's
# OPTIONS pings and SUBSCRIBE refreshes), then the servers they send to, the logger last
# (the others' LogSenders drain into it): no message is left sent and never received by a
# peer that stopped first. In-process chains and element processes both stop this way.
STOP_WAVES: tuple[tuple[str, ...], ...] = (
    ("caller",),
    ("calltaker", "esrp"),
    ("psap", "vsp", "lost"),
    ("logger",),
)


@dataclass
class ChainPlan:
    """A whole run, decided: consumed by the launcher, `--processes`, `--netns` and export."""

    topology: Topology
    options: ChainOptions
    block: int
    addresses: dict[str, str]
    pki: RunPki
    configs: dict[str, ElementConfig]  # host name → config, in start order (down ones too)
    lost: LostPlan
    relays: list[RelaySpec]
    work: Path  # the run's directory (PKI, key log; bundles, events, stderr of processes)
    logger: LoggerPlan | None = None  # None: `options.logger` off

    @property
    def keylog(self) -> Path:
        """The run's NSS key log (every TLS context appends to it, or the children's merge)."""
        return self.work / "keys.log"

    def role(self, name: str) -> str:
        return self.topology.host(name).role

    @property
    def logger_runs(self) -> bool:
        """Whether the Logging Service is started (planned and not `logger_down`)."""
        return self.logger is not None and not self.options.logger_down

    def is_up(self, name: str) -> bool:
        """Whether the host is started: not in `options.down`, nor a call taker of a PSAP
        that is (it could never register)."""
        if name in self.options.down:
            return False
        host = self.topology.host(name)
        return host.role != "calltaker" or (host.psap or "") not in self.options.down

    def started(self) -> list[str]:
        """The ng911 SIP hosts to start, in start order (a Kamailio host is started by
        `testbed.peers`, from the same plan)."""
        return [
            n
            for n in self.configs
            if self.is_up(n) and self.topology.host(n).implementation == "ng911"
        ]


# -------------------------------------------------------------------------- addressing


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


class AddressInUse(Exception):
    """A chain could not bind its planned addresses (an element or a child process said so):
    `on_a_free_block` tries the next block."""


async def on_a_free_block(
    topo: Topology,
    work: Path,
    opts: ChainOptions,
    start: Callable[[ChainPlan, socket.socket | None], Awaitable[T]],
    *,
    attempts: int,
    block: int | None = None,
    addresses: Mapping[str, str] | None = None,
) -> T:
    """Plan `topo` on a loopback block (claimed while the chain lives) and `start` it; on
    EADDRINUSE/EADDRNOTAVAIL or `AddressInUse`, again on another block, up to `attempts`.
    With `addresses` (a namespace lab's) there is one attempt and no claim. The claim is
    released here when `start` fails; the started chain keeps it otherwise."""
    rng = random.Random()
    last: BaseException | None = None
    for i in range(attempts if addresses is None else 1):
        b = block if block is not None and i == 0 else rng.randint(16, 254)
        if i:  # a fresh CA for the new addresses (IP SANs)
            shutil.rmtree(work / "pki", ignore_errors=True)
        claim: socket.socket | None = None
        try:
            claim = claim_block(b) if addresses is None and needs_claim(topo) else None
            plan = build_plan(topo, work, opts, block=b, addresses=addresses)
            return await start(plan, claim)
        except BaseException as exc:
            if claim is not None:
                claim.close()
            if not _in_use(exc):
                raise
            last = exc
    raise TestbedError(f"could not bind the chain's addresses after {attempts} tries: {last}")


def _in_use(exc: BaseException) -> bool:
    if isinstance(exc, AddressInUse):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


def needs_claim(topo: Topology) -> bool:
    """Whether any host takes an automatic loopback address (then the block is claimed)."""
    return any(h.address in ("auto", "") for h in topo.hosts)


def lost_mapping(topo: Topology) -> dict[str, tuple[str, ...]]:
    """Each borough's boundary → its PSAP's sip: URI."""
    return {slug(p.borough): (psap_uri(p),) for p in topo.by_role("psap") if p.borough is not None}


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


def agency_of(topo: Topology, h: Host) -> str:
    """The i3 Agency Identifier (NENA-STA-010.3 §2.1.1, a domain) of `h`'s LogEvents: a
    PSAP is its own agency and its call takers are of it; the VSP is its own; the ESInet's
    functions (ESRP) are the agency of their domain's parent."""
    if h.role == "calltaker" and h.psap:
        return topo.host(h.psap).domain
    if h.role in ("psap", "vsp", "caller"):
        return h.domain
    return h.domain.split(".", 1)[-1]


def hosts_table(
    topo: Topology, h: Host, addresses: Mapping[str, str], overrides: Mapping[tuple[str, str], str]
) -> tuple[HostEntry, ...]:
    """h's host table: every domain → its address, or the relay on an impaired hop."""
    return tuple(
        HostEntry(x.domain, overrides.get((h.name, x.name), addresses[x.name])) for x in topo.hosts
    )


def _neighbours(topo: Topology, hop: str) -> list[tuple[Host, Host]]:
    """The (upstream, downstream) host pairs joined by `hop`."""
    up_role, down_role = HOP_ROLES[hop]
    if hop == "hop4":
        return [(topo.host(t.psap or ""), t) for t in topo.by_role("calltaker")]
    return [(u, d) for u in topo.by_role(up_role) for d in topo.by_role(down_role)]


def plan_relays(
    topo: Topology, addresses: Mapping[str, str], block: int, impairments: tuple[Impairment, ...]
) -> tuple[list[RelaySpec], dict[tuple[str, str], str]]:
    """A relay fronting each end of each impaired hop, and the host-table overrides
    ((element, peer) → the relay's address) that send the hop's traffic through them."""
    relays: list[RelaySpec] = []
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
                        RelaySpec(
                            name=f"relay-{imp.hop}-{host.name}",
                            imp=imp,
                            front_ip=fronts[host.name],
                            target_ip=addresses[host.name],
                            ports={t: SIP_PORTS[t] for t in host.listen},
                        )
                    )
            overrides[(up.name, down.name)] = fronts[down.name]
            overrides[(down.name, up.name)] = fronts[up.name]
    return relays, overrides


# ----------------------------------------------------------------------- element configs


def _listeners(
    host: Host, address: str, allowed: tuple[str, ...] = ()
) -> tuple[ListenerConfig, ...]:
    """`allowed` goes on the TLS listener (RFC 5922 §7.3: whom a mutual-TLS hop serves)."""
    return tuple(
        ListenerConfig(t, address, SIP_PORTS[t], allowed_peers=allowed if t == "tls" else ())
        for t in host.listen
    )


def default_psap(topo: Topology) -> Host:
    """The PSAP of the ESRP's default route: the one marked `default_route`, else the first."""
    psaps = topo.by_role("psap")
    return next((p for p in psaps if p.default_route), psaps[0])


def element_configs(
    topo: Topology,
    addresses: Mapping[str, str],
    pki: RunPki,
    opts: ChainOptions,
    *,
    lost_url: str,
    keylog: Path,
    overrides: Mapping[tuple[str, str], str] | None = None,
    logger_url: str | None = None,
) -> dict[str, ElementConfig]:
    """Host name → its element's configuration, in start order (PSAPs, call takers, ESRP,
    VSP, caller). `logger_url`: every element but the caller logs there."""
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
            "tls": pki.profile(h, require_client_cert=mutual, keylog=keylog),
            "hosts": hosts_table(topo, h, addresses, ov),
            "t1": opts.t1,
            "log_file": log_file,
            "logger": logger_url if h.role != "caller" else None,
            "agency_id": agency_of(topo, h),
        }

    out: dict[str, ElementConfig] = {}
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
    mutual_lost = topo.lost == "https" and topo.lost_mutual
    esrp_cert, esrp_key = pki.certs[esrp_host.name]
    out[esrp_host.name] = EsrpConfig(
        **common(esrp_host, mutual=True),
        lost_url=lost_url,
        lost_timeout=opts.lost_timeout,
        lost_ca=(str(pki.ca.cert_path),),
        lost_cert=str(esrp_cert) if mutual_lost else "",
        lost_key=str(esrp_key) if mutual_lost else "",
        default_route=psap_uri(default_psap(topo)),
        alternates=tuple(
            AlternateRoute(psap_uri(p), tuple(psap_uri(topo.host(a)) for a in p.alternates))
            for p in topo.by_role("psap")
            if p.alternates
        ),
        sips_policy="hop",
        psap_transport=tr["hop3"],
        policy=topo.policy(),  # the topology's PRF rules (topology.py)
        policy_timezone=esrp_host.policy_timezone,
    )
    # VSP proxy: its callers' certificates are optional
    vsp = topo.one("vsp")
    out[vsp.name] = VspConfig(
        **common(vsp, mutual=False),
        domain=vsp.domain,
        esrp=hop_uri(tr["hop2"], esrp_host.domain),
        lost_url=lost_url if opts.vsp_lost else "",
    )
    # the caller, last: it registers with the VSP when it starts
    for ch in topo.by_role("caller"):
        out[ch.name] = CallerConfig(
            **common(ch, mutual=False),
            aor=ch.aor or f"sip:{ch.name}@{vsp.domain}",
            proxy=hop_uri(tr["hop1"], vsp.domain),
            register=vsp.implementation == "ng911",  # Kamailio's VSP is no registrar
            hangup_after=opts.hangup_after,
            answer_timeout=opts.answer_timeout,
            rtp_host=addresses[ch.name],
        )
    if opts.metrics:  # each on its own address, so one well-known port (as 5060 for SIP)
        out = {
            n: dataclasses.replace(c, metrics=metrics_spec(addresses[n], 9100))
            for n, c in out.items()
        }
    return {name: _tuned(cfg, topo.host(name).role, opts) for name, cfg in out.items()}


def _tuned(cfg: ElementConfig, role: str, opts: ChainOptions) -> ElementConfig:
    """`opts.settings[role]` applied; a field the role's config does not have is an error."""
    settings = opts.settings.get(role)
    if not settings:
        return cfg
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"settings for {role}: unknown field(s) {', '.join(unknown)}")
    return dataclasses.replace(cfg, **settings)


# ------------------------------------------------------------------------------ the plan


def _check_options(topo: Topology, opts: ChainOptions) -> None:
    names = {h.name for h in topo.hosts}
    for name in opts.down:
        if name not in names:
            raise ConfigError(f"down: no host named {name!r} (hosts: {', '.join(sorted(names))})")
    for role in opts.settings:
        if role not in CONFIG_CLASSES:
            raise ConfigError(f"settings: {role!r} is not one of {', '.join(CONFIG_CLASSES)}")


def build_plan(
    topo: Topology,
    work: Path,
    opts: ChainOptions | None = None,
    *,
    block: int = 0,
    addresses: Mapping[str, str] | None = None,
) -> ChainPlan:
    """Plan a run of `topo` (its scenario transports already applied) under `work`.

    `addresses`: given by a network namespace lab; else 127.`block`.C.N on loopback.
    """
    opts = opts or ChainOptions()
    _check_options(topo, opts)
    addr = dict(addresses) if addresses is not None else plan_addresses(topo, block)
    work.mkdir(parents=True, exist_ok=True)
    keylog = work / "keys.log"

    pki = RunPki(topo, work / "pki", addr)
    relays, overrides = plan_relays(topo, addr, block, opts.impairments)
    lost_host = topo.one("lost")
    lost = LostPlan(
        host=lost_host,
        address=addr[lost_host.name],
        port=LOST_PORTS[topo.lost],
        scheme=topo.lost,
        mutual=topo.lost_mutual,
        boundaries=topo.boundaries_path().resolve(),
        uris=lost_mapping(topo),
        tls=pki.profile(lost_host, require_client_cert=topo.lost_mutual, keylog=keylog),
    )
    logger = plan_logger(topo, addr, pki, work, keylog) if opts.logger else None
    configs = element_configs(
        topo,
        addr,
        pki,
        opts,
        lost_url=lost.url,
        keylog=keylog,
        overrides=overrides,
        logger_url=logger.url if logger is not None else None,
    )
    return ChainPlan(topo, opts, block, addr, pki, configs, lost, relays, work, logger)


def plan_logger(
    topo: Topology, addr: Mapping[str, str], pki: RunPki, work: Path, keylog: Path
) -> LoggerPlan:
    """The Logging Service on its own address: LoST's scheme (https, mutual when LoST's is,
    on the TLS scenarios), the run's CA as the signers' anchor, a SQLite store in `work`."""
    host = topo.one("logger")
    mutual = topo.lost == "https" and topo.lost_mutual
    return LoggerPlan(
        host=host,
        address=addr[host.name],
        port=LOGGER_PORTS[topo.lost],
        scheme=topo.lost,
        mutual=mutual,
        tls=pki.profile(host, require_client_cert=mutual, keylog=keylog),
        signer_ca=(str(pki.ca.cert_path),),
        store=(work / LOGGER_STORE).resolve(),
    )
