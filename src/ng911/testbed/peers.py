"""Production proxies in the chain: Kamailio in the VSP's or the ESRP's place.

Why: the testbed measures what TLS costs on each hop of ng911's own elements; with a
production SIP proxy in one place, the same scenarios show what TLS costs on *its* hops,
beside ng911's (issue 14). A topology host says which implementation runs it
(`implementation = "kamailio"`, VSP or ESRP hosts only); a scenario can override that per
role (`Scenario.implementations`, what `ng911 testbed run --vsp kamailio` sets), so one run
can carry `plain` and `plain+kamailio-vsp` side by side.

What this module does, for each Kamailio host of a plan: writes its configuration from the
plan (the same address, ports, certificate and neighbours an ng911 element there would get:
`kamailio_specs`), starts it beside the in-process elements and stops it
(`start_kamailios`, always torn down), and labels which implementation ran each element
(`labels`). The configurations are `ng911.interop.kamailio.vsp_cfg` (emergency VSP: 911 →
`urn:service:sos`, `Resource-Priority: esnet.1`, record-route, relay to the ESRP) and
`esrp_cfg` (a plain routing proxy: the `lost` module asks the plan's LoST server with the
call's PIDF-LO and the call goes to the PSAP it names; what it does not do is in its
docstring).

Observation: Kamailio reports no events. `PeerEvent` tells the trace its address, so the
messages ng911's elements exchange with it still belong to the right hops, and the SRD
breakdown counts the transit through it (both of its hops and its own time) as one segment,
named by its role (`ng911.observe.calls.Trace.breakdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ng911 import __version__
from ng911.interop.kamailio import (
    Kamailio,
    LostTls,
    esrp_cfg,
    listen_lines,
    missing_reason,
    tls_cfg,
    version,
    vsp_cfg,
)
from ng911.observe.records import PeerEvent
from ng911.testbed.errors import TestbedError
from ng911.testbed.plan import SIP_PORTS, ChainPlan, default_psap
from ng911.testbed.scenarios import Scenario
from ng911.testbed.topology import IMPLEMENTATIONS, Host, Topology, psap_uri

#: the Kamailio modules each role's configuration loads
MODULES: dict[str, tuple[str, ...]] = {
    "vsp": ("tm", "sl", "rr", "maxfwd", "textops", "pv", "siputils", "xlog"),
    "esrp": (
        "tm",
        "sl",
        "rr",
        "maxfwd",
        "textops",
        "pv",
        "siputils",
        "xlog",
        "http_client",
        "lost",
    ),
}
CHOICES = (*IMPLEMENTATIONS, "both")  # what `--vsp` / `--esrp` take


@dataclass(frozen=True, slots=True)
class KamailioSpec:
    """One Kamailio host of a plan: its configuration text and where it runs."""

    host: Host
    address: str
    cfg: str
    workdir: Path
    probe: str  # the transport readiness is probed on ("tcp" covers TLS too: a connect)

    @property
    def port(self) -> int:
        return SIP_PORTS[self.probe]


def unavailable(topo: Topology) -> str | None:
    """Why the topology's Kamailio hosts cannot run here (None when they can, or there are
    none): for a skip or a clear error before anything starts."""
    modules: set[str] = set()
    for h in topo.hosts:
        if h.implementation == "kamailio":
            modules.update(MODULES[h.role])
            if "tls" in h.listen:
                modules.add("tls")
    return missing_reason(*sorted(modules)) if modules else None


def labels(topo: Topology) -> dict[str, str]:
    """Host → the implementation that ran it ("ng911 0.4.0", "kamailio 5.6.3"): the small
    field a report shows so nobody mistakes one proxy's figures for the other's."""
    mine = f"ng911 {__version__}"
    return {h.name: version() if h.implementation == "kamailio" else mine for h in topo.hosts}


def with_implementations(
    scenarios: Sequence[Scenario], choice: Mapping[str, str]
) -> list[Scenario]:
    """The scenarios to run for `choice` (role → "ng911" | "kamailio" | "both"): "kamailio"
    replaces each scenario by its Kamailio variant, "both" runs the two side by side."""
    out = list(scenarios)
    for role, impl in choice.items():
        if impl not in CHOICES:
            raise TestbedError(f"--{role} {impl!r}: one of {', '.join(CHOICES)}")
        if impl == "ng911":
            continue
        variants = [s.variant(role, "kamailio") for s in out]
        out = (
            variants
            if impl == "kamailio"
            else [x for p in zip(out, variants, strict=True) for x in p]
        )
    return out


def check_runnable(topologies: Iterable[Topology], *, processes: bool) -> None:
    """Refuse, before anything starts, a run whose Kamailio hosts cannot run: Kamailio or a
    module missing, or `--processes`/`--netns` (Kamailio runs beside the in-process chain
    only)."""
    for topo in topologies:
        if not any(h.implementation == "kamailio" for h in topo.hosts):
            continue
        if processes:
            raise TestbedError(
                "Kamailio in the chain runs beside the in-process chain only "
                "(not with --processes or --netns)"
            )
        reason = unavailable(topo)
        if reason is not None:
            raise TestbedError(f"Kamailio in the chain: {reason}")


def _uri(transport: str, address: str) -> str:
    return f"sip:{address}:{SIP_PORTS[transport]};transport={transport}"


def kamailio_specs(plan: ChainPlan) -> list[KamailioSpec]:
    """The plan's Kamailio hosts as configurations, written under `work/kamailio/HOST/`.

    Each gets what an ng911 element in its place would: the plan's address and well-known
    ports (its domain an alias); its certificate from the run's
    CA with mutual TLS (required of clients at the ESRP, optional at the VSP, as ng911's);
    its neighbours at the addresses its own host table gives (impairment relays included),
    over the scenario's transport of each hop."""
    topo = plan.topology
    tr = dict(zip(("hop1", "hop2", "hop3", "hop4"), topo.transports, strict=True))
    out: list[KamailioSpec] = []
    for h in topo.hosts:
        if h.implementation != "kamailio":
            continue
        work = plan.work / "kamailio" / h.name
        work.mkdir(parents=True, exist_ok=True)
        table = {e.name: e.address for e in plan.configs[h.name].hosts}
        cert, key = plan.pki.certs[h.name]
        tls_path: Path | None = None
        if "tls" in h.listen:
            tls_path = work / "tls.cfg"
            tls_path.write_text(
                tls_cfg(
                    cert=cert,
                    key=key,
                    ca=plan.pki.ca.cert_path,
                    require_client_cert=h.role == "esrp",
                )
            )
        listen = listen_lines(plan.addresses[h.name], h.listen, SIP_PORTS, alias=h.domain)
        esrp = topo.one("esrp")
        if h.role == "vsp":
            neighbours = {
                c.domain: _uri(tr["hop1"], table[c.domain]) for c in topo.by_role("caller")
            }
            neighbours[esrp.domain] = _uri(tr["hop2"], table[esrp.domain])
            cfg = vsp_cfg(
                listen=listen,
                esrp=neighbours[esrp.domain],
                tls_cfg_path=tls_path,
                hosts=neighbours,
            )
        elif h.role == "esrp":
            psaps = {p.domain: _uri(tr["hop3"], table[p.domain]) for p in topo.by_role("psap")}
            vsp = topo.one("vsp")
            lost = plan.lost
            lost_tls = None
            if lost.scheme == "https":
                lost_tls = LostTls(
                    ca=plan.pki.ca.cert_path,
                    cert=cert if lost.mutual else None,
                    key=key if lost.mutual else None,
                )
            cfg = esrp_cfg(
                listen=listen,
                fqdn=h.domain,
                lost_url=lost.url,
                psaps=psaps,
                default_route=psap_uri(default_psap(topo)),
                psap_transport=tr["hop3"],
                tls_cfg_path=tls_path,
                lost_tls=lost_tls,
                hosts={**psaps, vsp.domain: _uri(tr["hop2"], table[vsp.domain])},
            )
        else:  # topology validation keeps other roles ng911's
            raise TestbedError(f"host {h.name!r}: Kamailio runs the vsp or esrp role only")
        probe = "tcp" if {"tcp", "tls"} & set(h.listen) else "udp"
        if probe == "tcp" and "tcp" not in h.listen:
            probe = "tls"
        out.append(KamailioSpec(h, plan.addresses[h.name], cfg, work, probe))
    return out


@dataclass
class Peers:
    """The Kamailio processes of a running chain; `close()` stops every one."""

    procs: list[Kamailio]
    cpu: dict[str, float] = field(default_factory=dict)  # read just before the stop
    ready_cpu: dict[str, float] = field(default_factory=dict)  # start-up's, left out

    def cpu_seconds(self) -> dict[str, float]:
        """Host → CPU seconds its whole process tree spent since it was ready (start-up,
        config parsing and forking its workers, is not the calls'; the last reading once
        stopped). Its idle timer processes' share is in it, as for any process."""
        live = {p.dir.name: p.cpu_seconds() for p in self.procs if p.pids()}
        return {k: v - self.ready_cpu.get(k, 0.0) for k, v in (self.cpu | live).items()}

    async def close(self) -> None:
        for p in self.procs:
            if p.pids():
                self.cpu[p.dir.name] = p.cpu_seconds()
            await asyncio.to_thread(p.stop)


async def start_kamailios(
    plan: ChainPlan, observers: Iterable[Callable[[Any], None]] = ()
) -> Peers:
    """Start the plan's Kamailio hosts (ready once each accepts on its port) and tell the
    observers their addresses (`PeerEvent`); on a failure, stop what started and raise a
    `TestbedError` with Kamailio's log tail."""
    specs = kamailio_specs(plan)
    if not specs:
        return Peers([])
    reason = unavailable(plan.topology)
    if reason is not None:
        raise TestbedError(f"Kamailio in the chain: {reason}")
    procs: list[Kamailio] = []
    try:
        for s in specs:
            k = Kamailio(s.cfg, s.port, s.probe, shm_mb=64, workdir=s.workdir, host=s.address)
            procs.append(k)
            await asyncio.to_thread(k.start)
    except BaseException as exc:
        for k in procs:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(k.stop)
        if isinstance(exc, Exception):
            raise TestbedError(f"Kamailio did not start: {exc}") from exc
        raise
    events = [PeerEvent(s.host.name, s.address, version()) for s in specs]
    for obs in observers:
        for ev in events:
            obs(ev)
    return Peers(procs, ready_cpu={k.dir.name: k.cpu_seconds() for k in procs})


def as_kamailio(topo: Topology, role: str) -> Topology:
    """`topo` with its `role` host run by Kamailio."""
    hosts = tuple(
        replace(h, implementation="kamailio") if h.role == role else h for h in topo.hosts
    )
    return replace(topo, hosts=hosts)
