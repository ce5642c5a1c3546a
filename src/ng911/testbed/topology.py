"""The testbed topology: hosts, their roles and domains, certificates, listeners, hop transports.

Read from a TOML file (STYLE: what an operator tunes is configuration). The packaged default,
`ng911/data/topology-nyc.toml`, is New York City with one PSAP per borough. A scenario replaces
the `[transports]` table and nothing else, so the same hosts are measured under every scenario.

Validation happens once, here, with errors that name the file, the host and the key: an unknown
key is an error too (a misspelt `borugh` silently ignored would route every call by default).

Routing policy (the ESRP's PRF, `elements/prf.py`): a PSAP host's `[[hosts.<psap>.rules]]` are
its queue's rules (i3 NormalNextHopRoutePolicy, owner the PSAP's domain); the ESRP host's
`[[hosts.<esrp>.rules]]` apply to every queue ("*") and its `[[hosts.<esrp>.origination]]`
before LoST (OriginationRoutePolicy); `policy_timezone` on the ESRP host. A rule's
`recipient` is a PSAP host name or a URI. `Topology.policy()` is what the ESRP's config gets.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ng911.elements.config import PolicyRule, QueuePolicy
from ng911.elements.prf import ORIGINATION, PolicyError, compile_policy
from ng911.elements.routing import RoutingPolicy
from ng911.observe.hops import HOP_ROLES, HOPS, hop_of_roles
from ng911.testbed.errors import TopologyError
from ng911.testbed.scenarios import LOST_TRANSPORTS, SIP_TRANSPORTS, Scenario

ROLES: tuple[str, ...] = ("caller", "vsp", "esrp", "lost", "psap", "calltaker", "logger")
SINGLE_ROLES: tuple[str, ...] = ("vsp", "esrp", "lost", "logger")  # exactly one of each
HTTP_ROLES: tuple[str, ...] = ("lost", "logger")  # listen on http/https, not SIP
DEFAULT_TOPOLOGY = "topology-nyc.toml"
# who runs a host: ng911's element, or Kamailio (`testbed/peers.py`) in these roles only
IMPLEMENTATIONS: tuple[str, ...] = ("ng911", "kamailio")
THIRD_PARTY_ROLES: tuple[str, ...] = ("vsp", "esrp")

_TOP_KEYS = {"topology", "pki", "transports", "hosts", "locations"}
_TOPOLOGY_KEYS = {"name", "address", "boundaries"}
_PKI_KEYS = {"ca", "key_type"}
_TRANSPORT_KEYS = {*HOPS, "lost", "lost_mutual"}
_HOST_KEYS = {
    "role",
    "domain",
    "address",
    "listen",
    "cert",
    "key",
    "aor",
    "borough",
    "psap",
    "alternates",
    "default_route",
    "rules",
    "origination",
    "policy_timezone",
    "implementation",
}
_RULE_KEYS = {"name", "action", "recipient", "cause", "when"}
_LOCATION_KEYS = {"name", "lat", "lon", "borough"}


@dataclass(frozen=True, slots=True)
class Host:
    """One element of the call chain (or the LoST server, or the i3 Logging Service)."""

    name: str
    role: str
    domain: str
    address: str
    listen: tuple[str, ...]  # SIP transports it listens on (LoST, logger: "http"/"https")
    cert: Path | None = None  # None: issued at run time from the testbed CA
    key: Path | None = None
    aor: str | None = None  # caller's address of record
    borough: str | None = None  # a PSAP's service area (a boundary name in the LoST data)
    psap: str | None = None  # a call taker's PSAP host
    alternates: tuple[str, ...] = ()  # a PSAP's alternate PSAP hosts, tried in order (i3)
    default_route: bool = False  # the PSAP of the ESRP's default route (else the first PSAP)
    # PRF rules (recipients as written: a PSAP host name or a URI): a PSAP's are its queue's,
    # the ESRP's apply to every queue; `origination` (ESRP) before LoST
    rules: tuple[PolicyRule, ...] = ()
    origination: tuple[PolicyRule, ...] = ()
    policy_timezone: str = ""  # the ESRP's: IANA zone of the rules' time windows
    # "ng911", or "kamailio" in the VSP's or the ESRP's place (testbed/peers.py)
    implementation: str = "ng911"


def psap_uri(h: Host) -> str:
    """A PSAP's plain sip: URI, as a LoST data set holds it (no port, no transport: the ESRP
    applies its sips policy for hop 3). Alternates and the default route use the same form."""
    return f"sip:{h.name}@{h.domain}"


@dataclass(frozen=True, slots=True)
class CallLocation:
    """A place the caller dials from (a PIDF-LO point)."""

    name: str
    lat: float
    lon: float
    borough: str | None = None  # the borough it should route to, checked by tests


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    hosts: tuple[Host, ...]
    transports: tuple[str, str, str, str]
    lost: str = "http"
    lost_mutual: bool = False
    ca_name: str = "ng911 Test CA"
    key_type: str = "ec"
    boundaries: str = "nyc-boroughs.geojson"
    locations: tuple[CallLocation, ...] = ()
    source: str = "<memory>"

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise TopologyError(f"{self.source}: no host named {name!r}")

    def by_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.role == role]

    def one(self, role: str) -> Host:
        hosts = self.by_role(role)
        if len(hosts) != 1:
            raise TopologyError(f"{self.source}: expected one {role} host, found {len(hosts)}")
        return hosts[0]

    @property
    def roles(self) -> dict[str, str]:
        """Host name → role, what `ng911.observe.calls.Trace` needs to name hops."""
        return {h.name: h.role for h in self.hosts}

    def policy(self) -> tuple[QueuePolicy, ...]:
        """The ESRP's PRF rule sets: each PSAP's rules under its URI, owned by its domain;
        the ESRP's under "*" and "origination"; recipient host names made PSAP URIs."""
        names = {p.name: psap_uri(p) for p in self.by_role("psap")}

        def resolved(rules: tuple[PolicyRule, ...]) -> tuple[PolicyRule, ...]:
            return tuple(
                dataclasses.replace(r, recipient=names.get(r.recipient, r.recipient)) for r in rules
            )

        out = [
            QueuePolicy(psap_uri(p), owner=p.domain, rules=resolved(p.rules))
            for p in self.by_role("psap")
            if p.rules
        ]
        for h in self.by_role("esrp"):
            if h.rules:
                out.append(QueuePolicy("*", owner=h.domain, rules=resolved(h.rules)))
            if h.origination:
                out.append(QueuePolicy(ORIGINATION, owner=h.domain, rules=resolved(h.origination)))
        return tuple(out)

    def takers_of(self, psap: str) -> list[Host]:
        return [h for h in self.hosts if h.role == "calltaker" and h.psap == psap]

    def psap_for_borough(self, borough: str) -> Host | None:
        for h in self.by_role("psap"):
            if h.borough is not None and h.borough.lower() == borough.lower():
                return h
        return None

    def point(self, borough: str) -> tuple[float, float]:
        """(lat, lon) of the first caller location in `borough`: where a test or a bench
        calls from to reach that borough's PSAP."""
        for loc in self.locations:
            if loc.borough is not None and loc.borough.lower() == borough.lower():
                return loc.lat, loc.lon
        raise TopologyError(f"{self.source}: no location in borough {borough!r}")

    def transport(self, hop: str) -> str:
        if hop not in HOPS:
            raise TopologyError(f"unknown hop {hop!r}; hops are {', '.join(HOPS)}")
        return self.transports[HOPS.index(hop)]

    def hop_between(self, a: str, b: str) -> str | None:
        """The hop joining hosts `a` and `b` (by their roles), or None."""
        roles = self.roles
        if a not in roles or b not in roles:
            return None
        return hop_of_roles(roles[a], roles[b])

    def with_scenario(self, scenario: Scenario) -> Topology:
        """The same hosts with the scenario's transports and, when it names any, its
        implementation per role (`Scenario.implementations`)."""
        hosts = self.hosts
        for role, impl in scenario.implementations:
            hosts = tuple(
                dataclasses.replace(h, implementation=impl) if h.role == role else h for h in hosts
            )
        return dataclasses.replace(
            self,
            hosts=hosts,
            transports=scenario.hops,
            lost=scenario.lost,
            lost_mutual=scenario.lost_mutual,
        )

    def with_takers(self, n: int) -> Topology:
        """The same hosts with `n` call takers per PSAP (`taker-<psap>-<i>`) instead of the
        file's; 0 leaves every PSAP without one (psapd then answers 480 at once)."""
        hosts = [h for h in self.hosts if h.role != "calltaker"]
        for p in self.by_role("psap"):
            for i in range(1, n + 1):
                name = f"taker-{p.name.removeprefix('psap-')}-{i}"
                domain = f"taker{i}.{p.domain}"
                hosts.append(Host(name, "calltaker", domain, "auto", SIP_TRANSPORTS, psap=p.name))
        return dataclasses.replace(self, hosts=tuple(hosts))

    def boundaries_path(self) -> Path:
        """The boundary file: a path relative to the topology file, or packaged data."""
        p = Path(self.boundaries)
        if p.is_absolute() and p.exists():
            return p
        if self.source not in ("<memory>", "<packaged>") and not p.is_absolute():
            local = Path(self.source).parent / p
            if local.exists():
                return local
        packaged = resources.files("ng911") / "data" / self.boundaries
        if packaged.is_file():
            return Path(str(packaged))
        raise TopologyError(f"{self.source}: boundary file {self.boundaries!r} not found")


def _check_keys(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise TopologyError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _table(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TopologyError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _str(where: str, table: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise TopologyError(f"{where}: missing {key!r}")
    if not isinstance(value, str) or not value:
        raise TopologyError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _transport(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise TopologyError(f"{where}: transport {value!r} is not one of {', '.join(allowed)}")
    return value.lower()


def _rules(where: str, host: Mapping[str, Any], key: str) -> tuple[PolicyRule, ...]:
    """`[[hosts.<name>.<key>]]`: each rule's keys and types (the PRF checks the rest)."""
    raw = host.get(key, [])
    if not isinstance(raw, list):
        raise TopologyError(f"{where}: {key} must be an array of tables ([[...{key}]])")
    out: list[PolicyRule] = []
    for i, r in enumerate(raw):
        what = f"{where} {key} #{i + 1}"
        rule = _table(what, r)
        _check_keys(what, rule, _RULE_KEYS)
        name = _str(what, rule, "name")
        what = f"{where} rule {name!r}"
        texts = {k: rule.get(k, "") for k in ("action", "recipient", "cause")}
        for k, v in texts.items():
            if not isinstance(v, str):
                raise TopologyError(f"{what}: {k} must be a string, got {v!r}")
        when = _table(f"{what} when", rule.get("when", {}))
        out.append(
            PolicyRule(
                name,
                action=texts["action"] or "normal",
                recipient=texts["recipient"],
                cause=texts["cause"],
                when=dict(when),
            )
        )
    return tuple(out)


def parse_topology(data: Mapping[str, Any], source: str = "<memory>") -> Topology:
    """Build and validate a Topology from the parsed TOML tables."""
    _check_keys(source, data, _TOP_KEYS)
    top = _table(f"{source} [topology]", data.get("topology", {}))
    _check_keys(f"{source} [topology]", top, _TOPOLOGY_KEYS)
    pki = _table(f"{source} [pki]", data.get("pki", {}))
    _check_keys(f"{source} [pki]", pki, _PKI_KEYS)
    tr = _table(f"{source} [transports]", data.get("transports", {}))
    _check_keys(f"{source} [transports]", tr, _TRANSPORT_KEYS)

    name = _str(f"{source} [topology]", top, "name", "topology")
    default_address = _str(f"{source} [topology]", top, "address", "auto")
    key_type = _str(f"{source} [pki]", pki, "key_type", "ec")
    if key_type not in ("ec", "rsa"):
        raise TopologyError(f"{source} [pki]: key_type {key_type!r} is not 'ec' or 'rsa'")

    hops = tuple(
        _transport(f"{source} [transports] {h}", tr.get(h, "udp"), SIP_TRANSPORTS) for h in HOPS
    )
    lost = _transport(f"{source} [transports] lost", tr.get("lost", "http"), LOST_TRANSPORTS)
    lost_mutual = tr.get("lost_mutual", False)
    if not isinstance(lost_mutual, bool):
        raise TopologyError(f"{source} [transports]: lost_mutual must be true or false")

    raw_hosts = _table(f"{source} [hosts]", data.get("hosts", {}))
    hosts: list[Host] = []
    for hname, raw in raw_hosts.items():
        where = f"{source} [hosts.{hname}]"
        h = _table(where, raw)
        _check_keys(where, h, _HOST_KEYS)
        role = _str(where, h, "role")
        if role not in ROLES:
            raise TopologyError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        allowed = LOST_TRANSPORTS if role in HTTP_ROLES else SIP_TRANSPORTS
        listen_raw = h.get("listen", list(allowed))
        if not isinstance(listen_raw, list) or not listen_raw:
            raise TopologyError(f"{where}: listen must be a non-empty list of transports")
        listen = tuple(_transport(f"{where} listen", t, allowed) for t in listen_raw)
        cert = h.get("cert")
        key = h.get("key")
        if (cert is None) != (key is None):
            raise TopologyError(f"{where}: give both cert and key, or neither")
        for k in ("aor", "borough", "psap"):
            if k in h and not isinstance(h[k], str):
                raise TopologyError(f"{where}: {k!r} must be a string")
        alternates = h.get("alternates", [])
        if not isinstance(alternates, list) or not all(isinstance(a, str) for a in alternates):
            raise TopologyError(f"{where}: alternates must be a list of PSAP host names")
        if not isinstance(h.get("default_route", False), bool):
            raise TopologyError(f"{where}: default_route must be true or false")
        impl = h.get("implementation", "ng911")
        if impl not in IMPLEMENTATIONS:
            raise TopologyError(
                f"{where}: implementation {impl!r} is not one of {', '.join(IMPLEMENTATIONS)}"
            )
        tz = h.get("policy_timezone", "")
        if not isinstance(tz, str):
            raise TopologyError(f"{where}: policy_timezone must be a string (an IANA zone)")
        hosts.append(
            Host(
                name=hname,
                role=role,
                domain=_str(where, h, "domain"),
                address=_str(where, h, "address", default_address),
                listen=listen,
                cert=Path(cert) if cert is not None else None,
                key=Path(key) if key is not None else None,
                aor=h.get("aor"),
                borough=h.get("borough"),
                psap=h.get("psap"),
                alternates=tuple(alternates),
                default_route=h.get("default_route", False),
                rules=_rules(where, h, "rules"),
                origination=_rules(where, h, "origination"),
                policy_timezone=tz,
                implementation=impl,
            )
        )

    locations: list[CallLocation] = []
    raw_locs = data.get("locations", [])
    if not isinstance(raw_locs, list):
        raise TopologyError(f"{source}: [[locations]] must be an array of tables")
    for i, raw in enumerate(raw_locs):
        where = f"{source} [[locations]] #{i + 1}"
        loc = _table(where, raw)
        _check_keys(where, loc, _LOCATION_KEYS)
        lat, lon = loc.get("lat"), loc.get("lon")
        if not isinstance(lat, int | float) or not -90 <= lat <= 90:
            raise TopologyError(f"{where}: lat must be a number in [-90, 90], got {lat!r}")
        if not isinstance(lon, int | float) or not -180 <= lon <= 180:
            raise TopologyError(f"{where}: lon must be a number in [-180, 180], got {lon!r}")
        locations.append(
            CallLocation(
                name=_str(where, loc, "name", f"location {i + 1}"),
                lat=float(lat),
                lon=float(lon),
                borough=loc.get("borough"),
            )
        )

    if not any(h.role == "logger" for h in hosts):
        hosts.append(default_logger_host(hosts, default_address, source))
    topo = Topology(
        name=name,
        hosts=tuple(hosts),
        transports=(hops[0], hops[1], hops[2], hops[3]),
        lost=lost,
        lost_mutual=lost_mutual,
        ca_name=_str(f"{source} [pki]", pki, "ca", "ng911 Test CA"),
        key_type=key_type,
        boundaries=_str(f"{source} [topology]", top, "boundaries", "nyc-boroughs.geojson"),
        locations=tuple(locations),
        source=source,
    )
    validate(topo)
    return topo


def default_logger_host(hosts: list[Host], address: str, source: str) -> Host:
    """The i3 Logging Service of a topology that names none: every chain logs
    (NENA-STA-010.3 §4.12), so a topology written before the logger existed still gets one,
    host `logger` in the ESInet's domain (LoST's domain without its first label)."""
    if any(h.name == "logger" for h in hosts):
        raise TopologyError(
            f'{source}: host "logger" is not the logging service: name one with role = "logger"'
        )
    lost = next((h for h in hosts if h.role == "lost"), None)
    parent = lost.domain.split(".", 1)[-1] if lost is not None else "esinet.example"
    return Host("logger", "logger", f"logger.{parent}", address, LOST_TRANSPORTS)


def validate(topo: Topology) -> None:
    """Cross-host checks: every role present, takers under a real PSAP, transports listened on."""
    src = topo.source
    for role in ROLES:
        n = len(topo.by_role(role))
        if n == 0:
            raise TopologyError(f"{src}: missing host with role {role!r}")
        if role in SINGLE_ROLES and n > 1:
            raise TopologyError(f"{src}: {n} hosts with role {role!r}; exactly one is supported")
    domains: dict[str, str] = {}
    for h in topo.hosts:
        if h.domain in domains:
            raise TopologyError(
                f"{src}: hosts {domains[h.domain]!r} and {h.name!r} share domain {h.domain!r}"
            )
        domains[h.domain] = h.name
    # hosts listen on the well-known SIP ports, so explicit addresses must differ
    addresses: dict[str, str] = {}
    for h in topo.hosts:
        if h.address in ("auto", ""):
            continue
        if h.address in addresses:
            raise TopologyError(
                f"{src}: hosts {addresses[h.address]!r} and {h.name!r} share address "
                f"{h.address} (each host listens on 5060/5061: give distinct addresses, or auto)"
            )
        addresses[h.address] = h.name
    psaps = {h.name for h in topo.by_role("psap")}
    for h in topo.by_role("calltaker"):
        if h.psap is None:
            raise TopologyError(f'{src} [hosts.{h.name}]: a call taker needs psap = "<host>"')
        if h.psap not in psaps:
            raise TopologyError(
                f"{src} [hosts.{h.name}]: psap {h.psap!r} is not a psap host "
                f"(psaps: {', '.join(sorted(psaps))})"
            )
    for p in topo.by_role("psap"):
        if not topo.takers_of(p.name):
            raise TopologyError(f"{src} [hosts.{p.name}]: PSAP has no call taker")
    for h in topo.hosts:
        if (h.alternates or h.default_route) and h.role != "psap":
            raise TopologyError(f"{src} [hosts.{h.name}]: alternates/default_route are for PSAPs")
        for a in h.alternates:
            if a not in psaps or a == h.name:
                raise TopologyError(
                    f"{src} [hosts.{h.name}]: alternate {a!r} is not another psap host "
                    f"(psaps: {', '.join(sorted(psaps))})"
                )
    for h in topo.hosts:
        if h.implementation != "ng911" and h.role not in THIRD_PARTY_ROLES:
            raise TopologyError(
                f"{src} [hosts.{h.name}]: implementation {h.implementation!r} runs the "
                f"{' or '.join(THIRD_PARTY_ROLES)} role only (this host is a {h.role})"
            )
    _validate_policy(topo)
    defaults = [p.name for p in topo.by_role("psap") if p.default_route]
    if len(defaults) > 1:
        raise TopologyError(f"{src}: {len(defaults)} PSAPs marked default_route: {defaults}")
    boroughs = {(p.borough or "").lower() for p in topo.by_role("psap")}
    for loc in topo.locations:
        if loc.borough is not None and loc.borough.lower() not in boroughs:
            raise TopologyError(
                f"{src}: location {loc.name!r} names borough {loc.borough!r}, which no PSAP serves"
            )
    # Each SIP hop's transport must be listened on by the host at its downstream end.
    for hop, (_up, down) in HOP_ROLES.items():
        t = topo.transport(hop)
        for h in topo.by_role(down):
            if t not in h.listen:
                raise TopologyError(
                    f"{src}: {hop} uses {t} but host {h.name!r} does not listen on it "
                    f"(listen = {list(h.listen)})"
                )
    lost = topo.one("lost")
    if topo.lost not in lost.listen:
        raise TopologyError(f"{src}: LoST uses {topo.lost} but {lost.name!r} does not listen on it")
    logger = topo.one("logger")  # its scheme follows LoST's (ng911.testbed.plan.LoggerPlan)
    if topo.lost not in logger.listen:
        raise TopologyError(
            f"{src}: the logger speaks {topo.lost} (as LoST does) but {logger.name!r} "
            "does not listen on it"
        )


def _validate_policy(topo: Topology) -> None:
    """Rules where they belong, recipients that are PSAP hosts (or URIs), each host's rules
    as the ESRP's PRF will read them: an error names the host and the rule, on one line."""
    src = topo.source
    psaps = {p.name: psap_uri(p) for p in topo.by_role("psap")}
    esrp = topo.by_role("esrp")
    routing = RoutingPolicy(
        default_route="",
        alternates=tuple(
            (psap_uri(p), tuple(psaps[a] for a in p.alternates if a in psaps))
            for p in topo.by_role("psap")
        ),
        owner=esrp[0].domain if esrp else "",
    )
    for h in topo.hosts:
        where = f"{src} [hosts.{h.name}]"
        if h.role not in ("psap", "esrp") and h.rules:
            raise TopologyError(f"{where}: rules are for PSAP hosts (their queue) and the ESRP")
        if h.role != "esrp" and (h.origination or h.policy_timezone):
            raise TopologyError(f"{where}: origination/policy_timezone are for the ESRP host")
        for r in (*h.rules, *h.origination):
            if r.recipient and ":" not in r.recipient and r.recipient not in psaps:
                raise TopologyError(
                    f"{where} rule {r.name!r}: recipient {r.recipient!r} is neither a psap host"
                    f" ({', '.join(sorted(psaps))}) nor a URI"
                )
        try:  # the rule sets a host owns (host domains are unique); its zone at plan time
            compile_policy([q for q in topo.policy() if q.owner == h.domain], routing)
        except PolicyError as exc:
            raise TopologyError(f"{where}: {exc}") from None


def load_topology(path: Path | str | None = None, scenario: Scenario | None = None) -> Topology:
    """Read a topology file (the packaged NYC one when `path` is None), for a scenario."""
    if path is None:
        text = (resources.files("ng911") / "data" / DEFAULT_TOPOLOGY).read_bytes()
        source = "<packaged>"
    else:
        source = str(path)
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise TopologyError(f"cannot read topology {source}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{source}: not valid TOML: {exc}") from exc
    topo = parse_topology(data, source)
    if scenario is not None:
        topo = topo.with_scenario(scenario)
        validate(topo)
    return topo
